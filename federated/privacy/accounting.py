"""Privacy accounting for Gaussian-mechanism releases, delegated to Opacus' accountants.

Guarantee: for a history of Gaussian-mechanism steps ``(noise_multiplier z,
sample_rate q, steps T)`` the reported ε is what the chosen Opacus accountant
gives at the given δ for their adaptive composition, subject to the rules below:

- ``rdp``: Rényi DP of the Poisson-subsampled Gaussian mechanism (Mironov et al. 2019), converted
  to (ε, δ) with Opacus' conversion over its default orders (α ≤ 63); an upper bound.
- ``prv``: numerical composition of privacy loss random variables (Gopi et al. 2021); Opacus
  returns the upper end of its error interval (``eps_error`` = 0.01), so also an upper bound,
  and usually a tighter one than RDP.

A history with a step of ``z = 0`` (no noise) has ε = ∞: such a release is not differentially private.

Edge rules (every input either gives an ε in [0, ∞] or raises :class:`PrivacyError`; never a
negative ε, NaN or another exception):

- **ε is clamped at 0.** Both accountants can return ε < 0 when δ is large next to what the
  mechanism leaks (δ ≳ 0.3 for typical DP-SGD, or δ ≥ 0.01 with very large noise). (ε, δ)-DP
  with ε < 0 implies (0, δ)-DP, so 0 is still an upper bound; it says only that δ alone
  already covers the mechanism's leakage (its total variation distance is at most δ). A δ
  that large is no meaningful guarantee: keep δ well below 1/N.
- **Noise above** :data:`MAX_NOISE` (including ``inf``) is accounted as ``MAX_NOISE``: ε does
  not increase with z, so this is still an upper bound (Opacus overflows for z ≳ 1e154).
- **Noise in (0,** :data:`MIN_NOISE` **)** gives ε = ∞: ∞ is a valid, if loose, upper bound; the
  accountants' finite value there exceeds 1e12 for RDP, and they overflow, hang or need
  unbounded memory as z → 0.
- **PRV's range**: Opacus' PRV accountant discretizes the privacy loss on a grid whose size
  grows with the steps, with 1/z and with log(1/δ). Histories whose grid exceeds
  :data:`MAX_PRV_GRID` points (tiny noise, huge step counts), a δ below what the grid resolves
  in floating point (δ ≲ 1e-14 to 1e-12, depending on the history) and a δ so close to 1 that
  it lies beyond the grid raise ``PrivacyError`` naming the PRV accountant and the reason. The
  RDP accountant handles every valid input.

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
import numbers
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from federated.errors import PrivacyError
from federated.privacy.rdp_analysis import ORDERS
from federated.privacy.rdp_analysis import rdp as rdp_analysis
from federated.privacy.rdp_curves import CurveFolder, compute_curve

if TYPE_CHECKING:
    from opacus.accountants.accountant import IAccountant
    from opacus.accountants.analysis.prv import Domain

Step = tuple[float, float, int]
"""One run of identical steps: (noise_multiplier, sample_rate, steps)."""

ACCOUNTANTS: tuple[str, ...] = ("rdp", "prv")
"""Opacus' RDP and PRV accountants, by the names runs and ledgers use."""

MAX_NOISE = 1e6
"""Noise multipliers above this are accounted as this (an upper bound; Opacus' ``MAX_SIGMA``)."""

MIN_NOISE = 1e-6
"""Noise multipliers in (0, MIN_NOISE) give ε = ∞ (an upper bound; the accountants break down as z → 0)."""

MAX_PRV_GRID = 10_000_000
"""Most points of the PRV accountant's discretization grid (about 5 s and 1-2 GB at the limit)."""

PRV_EPS_ERROR = 0.01
"""The PRV accountant's error margin in ε (Opacus' default), added to every PRV ε it reports."""

_LONGDOUBLE_EPS = float(np.finfo(np.longdouble).eps)


def make_accountant(name: str = "rdp", history: Iterable[Step] = ()) -> IAccountant:
    """An Opacus accountant of kind ``name`` that has already seen ``history`` (no edge rules applied)."""
    from opacus.accountants import PRVAccountant, RDPAccountant  # torch: only where an accountant object is needed

    check_accountant(name)
    accountant = {"rdp": RDPAccountant, "prv": PRVAccountant}[name]()
    accountant.history = [(float(z), float(q), int(t)) for z, q, t in history]
    return accountant


def epsilon(history: Sequence[Step], delta: float, accountant: str = "rdp") -> float:
    """ε spent by ``history`` at ``delta``: a float in [0, ∞], never negative or NaN.

    0.0 when nothing was released; ∞ if a step had no noise (or less than :data:`MIN_NOISE`);
    clamped at 0 where the accountant's value is negative (see the module docstring for why that is
    still an upper bound). ``PrivacyError`` for an unknown accountant, δ outside (0, 1), a step
    outside noise ≥ 0 / 0 < sample rate ≤ 1 / integer steps ≥ 1, or a history the PRV accountant
    cannot compute (the message names the reason; the RDP accountant handles every valid input).
    """
    check_accountant(accountant)
    check_delta(delta)
    steps = [_check_step(step) for step in history]
    if not steps:
        return 0.0
    if any(z < MIN_NOISE for z, _, _ in steps):
        return math.inf
    steps = [(min(z, MAX_NOISE), q, t) for z, q, t in steps]
    value = _rdp_epsilon(steps, delta) if accountant == "rdp" else _prv_epsilon(steps, delta)
    if math.isnan(value):  # not seen for valid inputs; refuse rather than report a number that is no bound
        raise PrivacyError(f"{accountant} accountant: epsilon is undefined (NaN) for {steps} at delta {delta}")
    return max(0.0, value)


def check_accountant(name: str) -> None:
    """``PrivacyError`` unless ``name`` is a known accountant."""
    if name not in ACCOUNTANTS:
        raise PrivacyError(f"accountant: unknown accountant {name!r}; expected one of {sorted(ACCOUNTANTS)}")


def check_delta(delta: float) -> None:
    """``PrivacyError`` unless ``0 < delta < 1``."""
    if not 0.0 < delta < 1.0:
        raise PrivacyError(f"delta: expected a value in (0, 1), got {delta}")


def _check_step(step: Step) -> Step:
    """The step as ``(float, float, int)``; ``PrivacyError`` unless noise >= 0, 0 < q <= 1 and steps >= 1."""
    z, q, t = step
    integral = isinstance(t, numbers.Integral) and not isinstance(t, bool) or isinstance(t, float) and t.is_integer()
    if not (z >= 0 and 0 < q <= 1 and integral and t >= 1):
        raise PrivacyError(f"history: expected noise >= 0, 0 < sample rate <= 1 and an integer number of steps "
                           f">= 1, got {(z, q, t)}")
    return float(z), float(q), int(t)


def _rdp_epsilon(history: Sequence[Step], delta: float) -> float:
    """Exactly ``RDPAccountant.get_epsilon``: the same orders, terms, sum order and conversion, with each
    step's RDP curve computed once per (noise multiplier, sampling rate) instead of at every call."""
    rdp = sum(_rdp_per_step(z, q) * float(t) for z, q, t in history)
    with warnings.catch_warnings():  # "optimal order is the largest alpha": a looser bound, still an upper bound
        warnings.simplefilter("ignore", UserWarning)
        eps, _ = rdp_analysis.get_privacy_spent(orders=list(ORDERS), rdp=rdp, delta=delta)
    return float(eps)


_curve_folder: CurveFolder | None = None


def keep_curves_in(folder: Path | None) -> None:
    """Keep each RDP curve this process computes in ``folder`` and read it back from there, in this process and
    in later ones (``federated.privacy.rdp_curves``: the same values, bit for bit); ``None``: memory only."""
    global _curve_folder
    _curve_folder = None if folder is None else CurveFolder(folder)


@functools.lru_cache(maxsize=4096)
def _rdp_per_step(noise_multiplier: float, sample_rate: float) -> np.ndarray:
    if _curve_folder is not None:
        return _curve_folder.curve(noise_multiplier, sample_rate)
    return compute_curve(noise_multiplier, sample_rate)


def prv_grid_size(history: Sequence[Step], delta: float) -> float:
    """Points of the grid Opacus' PRV accountant discretizes ``history`` on at ``delta`` (∞ if unbounded)."""
    domain = _prv_domain(history, delta)
    return math.inf if domain is None else float(domain.size)


def _prv_domain(history: Sequence[Step], delta: float) -> Domain | None:
    """``PRVAccountant._get_domain`` (Opacus 1.6), or None where its grid would exceed :data:`MAX_PRV_GRID` points.

    Half-width ``L`` from ``compute_safe_domain_size``, mesh ``eps_error / sqrt(T log(12 / delta_error) / 2)``
    with ``delta_error = delta / 1000``.
    """
    from opacus.accountants.analysis.prv import Domain, PoissonSubsampledGaussianPRV, compute_safe_domain_size

    delta_error = delta / 1000
    if delta_error <= 0:
        return None
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            half_width = float(compute_safe_domain_size(
                prvs=[PoissonSubsampledGaussianPRV(q, z) for z, q, _ in history],
                max_self_compositions=[t for _, _, t in history], eps_error=PRV_EPS_ERROR, delta_error=delta_error))
    except (ArithmeticError, ValueError):
        return None
    mesh = PRV_EPS_ERROR / math.sqrt(sum(t for _, _, t in history) * math.log(12 / delta_error) / 2)
    if not 2 * half_width / mesh + 2 <= MAX_PRV_GRID:  # also catches inf and NaN
        return None
    domain = Domain.create_aligned(-half_width, half_width, mesh)
    return domain if domain.size <= MAX_PRV_GRID else None


def _prv_epsilon(history: Sequence[Step], delta: float) -> float:
    """Exactly ``PRVAccountant.get_epsilon(delta)`` (Opacus 1.6: same domain, discretization, composition and
    upper end of the error interval), after checking that its grid is computable (else ``PrivacyError``)."""
    from opacus.accountants.analysis.prv import (
        PoissonSubsampledGaussianPRV,
        TruncatedPrivacyRandomVariable,
        compose_heterogeneous,
        discretize,
    )

    mechanism = f"{sum(t for _, _, t in history)} step(s) {_describe(history)}"
    hint = "use the rdp accountant (--accountant rdp), which handles every valid input"
    if delta / 1000 == 0:  # Opacus divides by delta_error = delta / 1000
        raise PrivacyError(f"prv accountant: delta {delta:g} is too small for it (delta / 1000 underflows to 0; it "
                           f"resolves delta only above about 1e-14 for typical histories); use a larger delta or "
                           f"{hint}")
    domain = _prv_domain(history, delta)
    if domain is None:
        raise PrivacyError(f"prv accountant: {mechanism} at delta {delta:g} needs a discretization grid of more than "
                           f"{MAX_PRV_GRID:.0e} points, the most it computes (too little noise, too many steps or "
                           f"too small a delta for it); {hint}")
    delta_error = delta / 1000
    floor = _LONGDOUBLE_EPS * domain.size / 0.999  # Opacus refuses delta - delta_error < eps * size
    if delta <= floor:
        raise PrivacyError(f"prv accountant: delta {delta:g} is too small for {mechanism}: its grid of "
                           f"{domain.size} points resolves delta only above about {floor:.1e} (floating-point error "
                           f"dominates below); use a larger delta or {hint}")
    try:
        with np.errstate(divide="ignore"):  # PRV takes log(1 - q), which is -inf (and handled) at q = 1
            prvs = [PoissonSubsampledGaussianPRV(q, z) for z, q, _ in history]
            dprvs = [discretize(TruncatedPrivacyRandomVariable(prv, domain.t_min, domain.t_max), domain)
                     for prv in prvs]
            composed = compose_heterogeneous(dprvs=dprvs, num_self_compositions=[t for _, _, t in history])
            _, _, upper = composed.compute_epsilon(delta, delta_error, PRV_EPS_ERROR)
        return float(upper)
    except RuntimeError as exc:  # Opacus: "Cannot compute epsilon", δ beyond the grid's largest δ (δ near 1)
        raise PrivacyError(f"prv accountant: delta {delta:g} is beyond what its grid covers for {mechanism} "
                           f"({exc}); use a smaller delta or {hint}") from exc
    except (ArithmeticError, ValueError, MemoryError) as exc:
        raise PrivacyError(f"prv accountant: cannot compute epsilon for {mechanism} at delta {delta:g} "
                           f"({type(exc).__name__}: {exc}); {hint}") from exc


def _describe(history: Sequence[Step]) -> str:
    """``z = 1.1, q = 0.01`` for one kind of step, ``of 3 kinds`` otherwise."""
    kinds = {(z, q) for z, q, _ in history}
    if len(kinds) == 1:
        (z, q), = kinds
        return f"(z = {z:g}, q = {q:g})"
    return f"of {len(kinds)} kinds"
