"""Noise calibration: the smallest Gaussian noise multiplier that keeps a planned mechanism within a target ε.

Guarantee: for a planned mechanism of ``steps`` Gaussian steps at sampling rate ``sample_rate``,
:func:`calibrate` returns a noise multiplier ``z`` whose ε at ``delta`` under the chosen accountant
(``federated.privacy.accounting``) is at most ``target_epsilon`` and, unless the search hit its
bounds, at least ``target_epsilon - tolerance``. The search is Opacus'
``opacus.accountants.utils.get_noise_multiplier`` (doubling, then bisection on ``z``); the
returned :class:`Calibration` carries the ε recomputed for ``z``, so a caller never has to trust
the search.

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
import warnings
from dataclasses import dataclass

import numpy as np
from opacus.accountants.utils import get_noise_multiplier

from federated.errors import PrivacyError
from federated.privacy.accounting import ACCOUNTANTS, check_delta, epsilon

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
    an unknown accountant, or a target too small to reach with any finite noise.
    """
    check_mechanism(delta, sample_rate, steps, accountant)
    if math.isnan(target_epsilon) or target_epsilon <= 0:
        raise PrivacyError(f"target epsilon: expected a value > 0 (or inf for no DP), got {target_epsilon}")
    if not tolerance > 0:
        raise PrivacyError(f"tolerance: expected a value > 0, got {tolerance}")
    if math.isinf(target_epsilon):
        return Calibration(target_epsilon, delta, sample_rate, steps, accountant, 0.0, math.inf)
    try:
        with np.errstate(divide="ignore"), warnings.catch_warnings():
            # PRV takes log(1 - q), which is -inf (and handled) at q = 1; RDP warns when its best order is the
            # largest it tries (a looser bound, still an upper bound).
            warnings.filterwarnings("ignore", message="Optimal order is the")
            noise = float(get_noise_multiplier(target_epsilon=target_epsilon, target_delta=delta,
                                               sample_rate=sample_rate, steps=steps, accountant=accountant,
                                               epsilon_tolerance=tolerance))
    except ValueError as exc:  # Opacus: "The privacy budget is too low."
        raise PrivacyError(f"target epsilon {target_epsilon} at delta {delta} cannot be reached with "
                           f"{steps} step(s) at sampling rate {sample_rate}: {exc}") from exc
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
    if accountant not in ACCOUNTANTS:
        raise PrivacyError(f"accountant: unknown accountant {accountant!r}; expected one of {sorted(ACCOUNTANTS)}")
