"""Privacy accounting for Gaussian-mechanism releases, delegated to Opacus' accountants.

Guarantee: for a history of Gaussian-mechanism steps ``(noise_multiplier z,
sample_rate q, steps T)`` the reported ε is what the chosen Opacus accountant
gives at the given δ for their adaptive composition:

- ``rdp``: Rényi DP of the Poisson-subsampled Gaussian mechanism (Mironov et al. 2019), converted
  to (ε, δ) with Opacus' conversion; an upper bound.
- ``prv``: numerical composition of privacy loss random variables (Gopi et al. 2021); Opacus
  returns the upper end of its error interval (``eps_error`` = 0.01), so also an upper bound,
  and usually a tighter one than RDP.

A history with a step of ``z = 0`` (no noise) has ε = ∞: such a release is not differentially private.

Assumptions the number depends on: every step bounded each unit's contribution to L2 norm ``C``
and added Gaussian noise of std ``z * C``; with ``q < 1`` each step's batch was drawn by Poisson
sampling with rate ``q`` (amplification by sampling); ``q = 1`` means every unit took part, so no
amplification is claimed. Neighbouring datasets differ by adding or removing one unit (one
message under the message privacy unit, one member under the member unit, one workspace's update
for central DP).
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Iterable, Sequence

import numpy as np
from opacus.accountants import PRVAccountant, RDPAccountant
from opacus.accountants.accountant import IAccountant
from opacus.accountants.analysis import rdp as rdp_analysis

from federated.errors import PrivacyError

Step = tuple[float, float, int]
"""One run of identical steps: (noise_multiplier, sample_rate, steps)."""

ACCOUNTANTS: dict[str, type[IAccountant]] = {"rdp": RDPAccountant, "prv": PRVAccountant}


def make_accountant(name: str = "rdp", history: Iterable[Step] = ()) -> IAccountant:
    """An Opacus accountant of kind ``name`` that has already seen ``history``."""
    if name not in ACCOUNTANTS:
        raise PrivacyError(f"accountant: unknown accountant {name!r}; expected one of {sorted(ACCOUNTANTS)}")
    accountant = ACCOUNTANTS[name]()
    accountant.history = [(float(z), float(q), int(t)) for z, q, t in history]
    return accountant


def epsilon(history: Sequence[Step], delta: float, accountant: str = "rdp") -> float:
    """ε spent by ``history`` at ``delta`` (0.0 when nothing was released, ∞ if a step had no noise)."""
    check_delta(delta)
    if not history:
        return 0.0
    for z, q, t in history:
        if not (z >= 0 and 0 < q <= 1 and t > 0):
            raise PrivacyError(f"history: expected noise >= 0, 0 < sample rate <= 1 and steps > 0, got "
                               f"{(z, q, t)}")
    if any(z == 0 for z, _, _ in history):
        return math.inf
    if accountant == "rdp":
        return _rdp_epsilon(history, delta)
    with np.errstate(divide="ignore"):  # PRV takes log(1 - q), which is -inf (and handled) at q = 1
        return float(make_accountant(accountant, history).get_epsilon(delta=delta))


def check_delta(delta: float) -> None:
    """``PrivacyError`` unless ``0 < delta < 1``."""
    if not 0.0 < delta < 1.0:
        raise PrivacyError(f"delta: expected a value in (0, 1), got {delta}")


def _rdp_epsilon(history: Sequence[Step], delta: float) -> float:
    """Exactly ``RDPAccountant.get_epsilon``: the same orders, terms, sum order and conversion, with each
    step's RDP curve computed once per (noise multiplier, sampling rate) instead of at every call."""
    rdp = sum(_rdp_per_step(float(z), float(q)) * int(t) for z, q, t in history)
    with warnings.catch_warnings():  # "optimal order is the largest alpha": a looser bound, still an upper bound
        warnings.simplefilter("ignore", UserWarning)
        eps, _ = rdp_analysis.get_privacy_spent(orders=RDPAccountant.DEFAULT_ALPHAS, rdp=rdp, delta=delta)
    return float(eps)


@functools.lru_cache(maxsize=4096)
def _rdp_per_step(noise_multiplier: float, sample_rate: float) -> np.ndarray:
    curve = rdp_analysis.compute_rdp(q=sample_rate, noise_multiplier=noise_multiplier, steps=1,
                                     orders=RDPAccountant.DEFAULT_ALPHAS)
    curve.flags.writeable = False
    return curve
