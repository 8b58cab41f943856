"""Canaries and their exposure (Carlini et al. 2019, "The Secret Sharer").

A canary is a random secret in a fixed format, e.g. ``"my pin is 4 9 1 7 3 0"``: the template's
``{}`` is filled with ``length`` symbols drawn uniformly from ``alphabet`` (joined by ``separator``).
The candidate space ``R`` is every such filling, so ``|R| = len(alphabet) ** length``.

Exposure of a canary under a model: ``log2 |R| − log2 rank``, where ``rank`` is the canary's
position (1 = most likely) among all of ``R`` ordered by the model's log-perplexity (the text's
total negative log-likelihood). A model that learnt nothing about the canary puts it at a uniform
random rank: expected exposure ``log2 |R| − E[log2 rank]``, about 1.44 bits for large ``R``
(``chance_exposure``). Exposure ``log2 |R|`` means the canary is the model's top candidate.

- **Exact** (``exact_exposure``): every candidate of ``R`` is scored; for spaces up to a few
  hundred thousand candidates.
- **Estimated** (``estimated_exposure``, the paper's Section 4.3): the log-perplexities of a
  uniform sample of ``R`` are fitted with a skew-normal distribution, and the canary's rank is
  estimated as ``|R| · F(canary log-perplexity)`` with ``F`` the fitted CDF. Assumption: the
  log-perplexity distribution over ``R`` is close to skew-normal in the tail the canary lands
  in; the estimate can exceed what the sample alone resolves (``log2(sample size)`` bits), which
  is the point of the fit, and is capped at ``log2 |R|``.

The scoring function is the caller's (a model's total NLL per text, in any base): canaries are
plain strings here, never written anywhere by this module.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special, stats

from federated.errors import ConfigError

Scorer = Callable[[Sequence[str]], np.ndarray]
"""Log-perplexity of each text under a model (lower: more likely)."""


@dataclass(frozen=True)
class CanaryFormat:
    """A secret's format: ``template`` with ``{}`` filled by ``length`` symbols of ``alphabet``."""

    template: str = "my pin is {}"
    alphabet: str = "0123456789"
    length: int = 6
    separator: str = " "

    def __post_init__(self) -> None:
        if self.template.count("{}") != 1 or "{" in self.template.replace("{}", "", 1):
            raise ConfigError(f"canary template: expected exactly one '{{}}' and no other braces, "
                              f"got {self.template!r}")
        if len(set(self.alphabet)) != len(self.alphabet) or len(self.alphabet) < 2:
            raise ConfigError(f"canary alphabet: expected at least 2 distinct symbols, got {self.alphabet!r}")
        if self.length < 1:
            raise ConfigError(f"canary length: expected an integer >= 1, got {self.length}")

    @property
    def space_size(self) -> int:
        """``|R|``: how many secrets the format can hold."""
        return len(self.alphabet) ** self.length

    def text(self, secret: Sequence[int]) -> str:
        """The canary text for a secret given as symbol indices."""
        return self.template.format(self.separator.join(self.alphabet[i] for i in secret))

    def random_secrets(self, count: int, rng: np.random.Generator) -> list[tuple[int, ...]]:
        """``count`` distinct secrets drawn uniformly without replacement from ``R``."""
        if count > self.space_size:
            raise ConfigError(f"canaries: {count} distinct secrets asked for, but the format holds only "
                              f"{self.space_size}")
        chosen: dict[tuple[int, ...], None] = {}
        while len(chosen) < count:
            secret = tuple(int(i) for i in rng.integers(0, len(self.alphabet), size=self.length))
            chosen.setdefault(secret, None)
        return list(chosen)

    def all_texts(self) -> list[str]:
        """Every candidate of ``R``, in a fixed order."""
        return [self.text(s) for s in itertools.product(range(len(self.alphabet)), repeat=self.length)]

    def sample_texts(self, count: int, rng: np.random.Generator) -> list[str]:
        """``count`` candidates drawn uniformly (with replacement) from ``R``."""
        secrets = rng.integers(0, len(self.alphabet), size=(count, self.length))
        return [self.text(s) for s in secrets]


@dataclass(frozen=True)
class Exposure:
    """One canary's exposure, with how it was obtained."""

    bits: float
    rank: float
    space_size: int
    method: str
    """``exact`` (every candidate scored) or ``skew-normal fit of N samples``."""


def chance_exposure(space_size: int) -> float:
    """Expected exposure of a canary at a uniformly random rank: ``log2 |R| − E[log2 rank]``."""
    # E[log2 rank] = log2(|R|!) / |R|, via the log-gamma function so huge spaces stay exact enough.
    return math.log2(space_size) - float(special.gammaln(space_size + 1)) / (space_size * math.log(2))


def exact_exposure(canaries: Sequence[str], fmt: CanaryFormat, score: Scorer) -> list[Exposure]:
    """Exposure of each canary, ranked against every candidate of ``fmt`` (ties count half)."""
    candidates = np.sort(np.asarray(score(fmt.all_texts()), dtype=np.float64))
    exposures = []
    for value in np.asarray(score(list(canaries)), dtype=np.float64):
        below = np.searchsorted(candidates, value, side="left")
        tied = np.searchsorted(candidates, value, side="right") - below
        # The canary is itself a candidate: among its ties, it sits in the middle on average.
        rank = max(1.0, below + (tied + 1) / 2)
        exposures.append(Exposure(math.log2(fmt.space_size) - math.log2(rank), rank, fmt.space_size, "exact"))
    return exposures


def estimated_exposure(canaries: Sequence[str], fmt: CanaryFormat, score: Scorer, samples: int,
                       rng: np.random.Generator) -> list[Exposure]:
    """Exposure of each canary from a skew-normal fit to ``samples`` uniform candidates' scores."""
    if samples < 100:
        raise ConfigError(f"canary exposure samples: expected at least 100 for a distribution fit, got {samples}")
    sampled = np.asarray(score(fmt.sample_texts(samples, rng)), dtype=np.float64)
    shape, loc, scale = stats.skewnorm.fit(sampled)
    method = f"skew-normal fit of {samples} samples"
    exposures = []
    for value in np.asarray(score(list(canaries)), dtype=np.float64):
        log_cdf = float(stats.skewnorm.logcdf(value, shape, loc, scale))
        bits = min(math.log2(fmt.space_size), max(0.0, -log_cdf / math.log(2)))
        exposures.append(Exposure(bits, fmt.space_size * 2.0 ** -bits, fmt.space_size, method))
    return exposures


def exposure(canaries: Sequence[str], fmt: CanaryFormat, score: Scorer, *, exact_limit: int, samples: int,
             rng: np.random.Generator) -> list[Exposure]:
    """Exact exposure when ``|R| <= exact_limit``, else the skew-normal estimate from ``samples`` candidates."""
    if fmt.space_size <= exact_limit:
        return exact_exposure(canaries, fmt, score)
    return estimated_exposure(canaries, fmt, score, samples, rng)
