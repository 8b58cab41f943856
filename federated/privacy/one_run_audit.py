"""Empirical ε lower bound from one training run (Steinke, Nasr, Jagielski 2023,
"Privacy Auditing with One (1) Training Run", Algorithm 2 / Theorem 3 and its δ > 0 extension).

Setting: ``m`` canaries, each included in training independently with probability 1/2; after
training the auditor guesses in or out for ``r`` of them (abstaining on the rest) and ``v`` guesses
are right. Under the null hypothesis that training was (ε, δ)-DP with respect to adding or removing
one canary, the number of correct guesses is dominated by Binomial(r, e^ε / (1 + e^ε)) up to an
additive term that grows with δ and m. ``p_value`` is the paper's bound on P[≥ v correct];
``epsilon_lower_bound`` is the largest ε the observation rejects at the given confidence.

What the bound means: it is a statistical test, not a certainty. If training really was (ε, δ)-DP,
the bound exceeds ε with probability at most ``1 - confidence`` (5 % at the default 95 %), i.e. up to
1 in 20 audited cells even with correct accounting. A bound above the claimed ε is therefore a bug
in the mechanism or its accounting, or that chance; rerunning with fresh coins (another seed) tells
them apart, and with many cells about ``(1 - confidence) × cells`` such flags are expected by chance.

Assumptions: canaries were included by independent fair coins (Poisson with rate 1/2) and the
guesses were fixed before looking at which canaries were included.
"""

from __future__ import annotations

import math

from scipy import stats

from federated.errors import PrivacyError


def p_value(m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    """Upper bound on P[at least ``v`` of ``r`` guesses correct] if training was (ε, δ)-DP."""
    _check(m, r, v, delta)
    if epsilon < 0:
        raise PrivacyError(f"epsilon: expected a value >= 0, got {epsilon}")
    q = 1.0 / (1.0 + math.exp(-epsilon))
    beta = float(stats.binom.sf(v - 1, r, q))
    # alpha = max over i of P[v - i <= Binomial(r, q) < v] / i: the price of δ per unit of slack.
    alpha, mass = 0.0, 0.0
    for i in range(1, v + 1):
        mass += float(stats.binom.pmf(v - i, r, q))
        alpha = max(alpha, mass / i)
    return min(1.0, beta + alpha * delta * 2 * m)


def epsilon_lower_bound(m: int, r: int, v: int, delta: float = 0.0, confidence: float = 0.95,
                        tolerance: float = 1e-6) -> float:
    """Largest ε rejected at ``confidence``: training was not (ε, δ)-DP for any smaller ε (0 if none)."""
    _check(m, r, v, delta)
    if not 0 < confidence < 1:
        raise PrivacyError(f"confidence: expected a value in (0, 1), got {confidence}")
    threshold = 1 - confidence
    if p_value(m, r, v, 0.0, delta) >= threshold:
        return 0.0
    low, high = 0.0, 1.0
    while p_value(m, r, v, high, delta) < threshold:
        low, high = high, 2 * high
        if high > 1e4:
            return math.inf
    while high - low > tolerance:
        mid = (low + high) / 2
        if p_value(m, r, v, mid, delta) < threshold:
            low = mid
        else:
            high = mid
    return low


def _check(m: int, r: int, v: int, delta: float) -> None:
    if not 0 <= v <= r <= m:
        raise PrivacyError(f"expected 0 <= correct ({v}) <= guesses ({r}) <= canaries ({m})")
    if not 0 <= delta <= 1:
        raise PrivacyError(f"delta: expected a value in [0, 1], got {delta}")
