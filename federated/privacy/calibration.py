"""Noise calibration: the smallest Gaussian noise multiplier that keeps a planned mechanism within a target ε.

Guarantee: for a planned mechanism of ``steps`` Gaussian steps at sampling rate ``sample_rate``,
:func:`calibrate` returns a noise multiplier ``z`` whose ε at ``delta`` under the chosen accountant
(``federated.privacy.accounting``) is at most ``target_epsilon`` and, unless the search hit its
bounds, at least ``target_epsilon - tolerance``. The search is Opacus'
``opacus.accountants.utils.get_noise_multiplier`` (z doubling from 20 up to at most ``MAX_SIGMA`` =
1e6, then bisection on ``z``; see ``_search`` for where it stops early), run on
:func:`federated.privacy.accounting.epsilon` so that its edge rules apply; a z whose ε the PRV
accountant cannot compute (its grid would be too large, e.g. for very little noise) counts as "not
private enough" during the search. The returned
:class:`Calibration` carries the ε recomputed for ``z``, so a caller never has to trust the search.

A target can be out of reach of one accountant however much noise is added: RDP's conversion over
Opacus' default orders (α ≤ 63) bottoms out at an ε that depends on δ alone (about 0.1 at
δ = 1e-5), and PRV adds its error margin (0.01) to every ε. ``PrivacyError`` then names the
accountant, the smallest ε it can certify at this δ and, for RDP, what the PRV accountant gives.

The target is ∞ for "no DP": the noise multiplier is then 0 and the ε of the mechanism is ∞.

Assumptions are those of the accountant: each step bounds every unit's contribution to L2 norm
``C`` and adds Gaussian noise of std ``z * C``; ``sample_rate < 1`` is Poisson sampling of units
(amplification by sampling); ``sample_rate = 1`` is every unit in every step, no amplification
(what central DP-FedAvg over all consenting workspaces uses). Neighbouring datasets differ by one
unit. Sampling rates differ by workspace size, so local DP-SGD is calibrated per workspace.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from opacus.accountants.utils import MAX_SIGMA

from federated.errors import PrivacyError
from federated.privacy.accounting import MAX_NOISE, check_accountant, check_delta, epsilon

log = logging.getLogger("optin.privacy.calibration")

DEFAULT_TOLERANCE = 0.01
"""How far below the target the calibrated ε may land (absolute, in ε)."""


@dataclass(frozen=True)
class Calibration:
    """A calibrated mechanism: what was asked, the noise multiplier found and the ε it gives."""

    target_epsilon: float
    delta: float
    sample_rate: float
    steps: int
    accountant: str
    noise_multiplier: float
    epsilon: float


def calibrate(target_epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str = "rdp",
              tolerance: float = DEFAULT_TOLERANCE) -> Calibration:
    """The noise multiplier for ``steps`` steps at ``sample_rate`` to reach ``target_epsilon`` at ``delta``.

    ``PrivacyError`` for a target ≤ 0, δ outside (0, 1), a sampling rate outside (0, 1], steps < 1,
    an unknown accountant, a target the accountant cannot certify with any noise up to 1e6 (the
    message names the accountant, its smallest ε here and, for RDP, what PRV gives), or a mechanism
    the PRV accountant cannot compute (see ``federated.privacy.accounting``).
    """
    check_mechanism(delta, sample_rate, steps, accountant)
    if math.isnan(target_epsilon) or target_epsilon <= 0:
        raise PrivacyError(f"target epsilon: expected a value > 0 (or inf for no DP), got {target_epsilon}")
    if not tolerance > 0:
        raise PrivacyError(f"tolerance: expected a value > 0, got {tolerance}")
    if math.isinf(target_epsilon):
        return Calibration(target_epsilon, delta, sample_rate, steps, accountant, 0.0, math.inf)
    noise = _search(target_epsilon, delta, sample_rate, steps, accountant, tolerance)
    achieved = epsilon([(noise, sample_rate, steps)], delta, accountant)
    log.debug("calibrated z=%.4f for ε=%.4f (target %g, δ=%g, q=%.5f, T=%d, %s)", noise, achieved,
              target_epsilon, delta, sample_rate, steps, accountant)
    return Calibration(target_epsilon, delta, sample_rate, steps, accountant, noise, achieved)


def check_mechanism(delta: float, sample_rate: float, steps: int, accountant: str) -> None:
    """``PrivacyError`` naming the first parameter of a Gaussian mechanism that is out of range."""
    check_delta(delta)
    if not 0 < sample_rate <= 1:
        raise PrivacyError(f"sampling rate: expected a value in (0, 1], got {sample_rate}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise PrivacyError(f"steps: expected an integer >= 1, got {steps!r}")
    check_accountant(accountant)


def _search(target: float, delta: float, rate: float, steps: int, accountant: str, tolerance: float) -> float:
    """Opacus 1.6's ``get_noise_multiplier`` search on :func:`epsilon`; ``PrivacyError`` if the target is out of reach.

    A z whose ε the PRV accountant cannot compute (its grid would exceed ``MAX_PRV_GRID`` points) counts as not
    private enough; once one was met, the bisection stops when z is resolved to 1e-3 (relative) rather than at the
    tolerance in ε, which may then be out of reach (PRV evaluations near the grid limit take seconds each). Otherwise
    it also stops when z is resolved to 1e-12, where Opacus' loop could spin forever. Either way ε(z) ≤ target.
    """
    uncomputable = False

    def spent(z: float) -> float:
        nonlocal uncomputable
        try:
            return epsilon([(z, rate, steps)], delta, accountant)
        except PrivacyError:  # PRV cannot compute this z: not certified, so not private enough
            uncomputable = True
            return math.inf

    low, high, eps_high = 0.0, 10.0, math.inf
    while eps_high > target:
        high *= 2
        eps_high = spent(high)
        if high > MAX_SIGMA:
            raise _unreachable(target, delta, rate, steps, accountant, tolerance)
    while target - eps_high > tolerance and high - low > (1e-3 if uncomputable else 1e-12) * high:
        mid = (low + high) / 2
        eps = spent(mid)
        if eps < target:
            high, eps_high = mid, eps
        else:
            low = mid
    if target - eps_high > tolerance:
        log.debug("calibration stopped %.4g below the target ε %g (%s accountant%s): z = %.6g", target - eps_high,
                    target, accountant, ", whose grid limit was reached" if uncomputable else "", high)
    return high


def _unreachable(target: float, delta: float, rate: float, steps: int, accountant: str,
                 tolerance: float) -> PrivacyError:
    """Why ``accountant`` cannot certify ``target``: its smallest ε at this δ and, for RDP, what PRV gives."""
    head = (f"target epsilon {target:g} at delta {delta:g} cannot be certified by the {accountant} accountant for "
            f"{steps} step(s) at sampling rate {rate:g}")
    floor, reason = _floor(delta, rate, steps, accountant)
    if accountant == "prv":
        return PrivacyError(f"{head}: {reason}; choose a larger target or delta")
    prv_floor, prv_reason = _floor(delta, rate, steps, "prv")
    if prv_floor < target:
        try:
            prv = calibrate(target, delta, rate, steps, "prv", tolerance)
            alternative = (f"the prv accountant (--accountant prv) reaches it with noise multiplier "
                           f"{prv.noise_multiplier:.4g} (epsilon {prv.epsilon:.4g})")
        except PrivacyError as exc:
            alternative = f"the prv accountant (--accountant prv) cannot either: {exc}"
    else:
        alternative = f"the prv accountant (--accountant prv) cannot either: {prv_reason}"
    return PrivacyError(f"{head}: {reason}; {alternative}")


def _floor(delta: float, rate: float, steps: int, accountant: str) -> tuple[float, str]:
    """The smallest ε ``accountant`` certifies here (at the largest noise: ε does not fall with z) and why."""
    try:
        floor = epsilon([(MAX_NOISE, rate, steps)], delta, accountant)
    except PrivacyError as exc:  # only PRV: it cannot compute any z here (e.g. delta below what its grid resolves)
        detail = str(exc).split("; use ")[0]  # its advice to use the other accountant is the caller's to give
        return math.inf, f"it cannot compute epsilon for any noise multiplier up to {MAX_NOISE:g} ({detail})"
    if accountant == "prv":
        return floor, (f"it gives at least {floor:.4g} however much noise is added (it adds its error margin of "
                       f"0.01 to every epsilon)")
    return floor, (f"with Opacus' default orders (alpha <= 63) its conversion from Renyi DP gives at least "
                   f"{floor:.4g} at this delta however much noise is added")
