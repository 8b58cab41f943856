"""Noise calibration: the calibrated noise reaches the target ε within tolerance, under RDP and PRV."""

from __future__ import annotations

import math

import numpy as np
import pytest

from federated.errors import PrivacyError
from federated.privacy.accounting import make_accountant
from federated.privacy.calibration import DEFAULT_TOLERANCE, calibrate

# Mechanisms like the default sweep's: local DP-SGD (3 rounds × 8 steps at the Poisson rates of
# workspaces with 120..240 training messages, batch 16) and central DP-FedAvg (3 releases, q = 1).
CASES = [(acc, target, rate, steps) for acc in ("rdp", "prv") for target in (8.0, 1.0)
         for rate, steps in ((1 / 8, 24), (1 / 15, 24), (1.0, 3))] + [("rdp", 4.0, 1 / 10, 24), ("rdp", 2.0, 1.0, 3)]


@pytest.mark.parametrize("accountant, target, rate, steps", CASES)
def test_calibrated_noise_reaches_the_target_within_tolerance(accountant: str, target: float, rate: float,
                                                              steps: int) -> None:
    result = calibrate(target, 1e-5, rate, steps, accountant)
    # Recomputed from scratch with a fresh Opacus accountant, not the number the calibration carries.
    with np.errstate(divide="ignore"):
        spent = make_accountant(accountant, [(result.noise_multiplier, rate, steps)]).get_epsilon(delta=1e-5)
    assert target - DEFAULT_TOLERANCE <= spent <= target
    assert result.epsilon == pytest.approx(spent, rel=1e-12)
    assert result.noise_multiplier > 0


def test_less_budget_needs_more_noise_and_prv_needs_less_than_rdp() -> None:
    noise = {(acc, eps): calibrate(eps, 1e-5, 1.0, 3, acc).noise_multiplier
             for acc in ("rdp", "prv") for eps in (8.0, 4.0, 2.0, 1.0)}
    for acc in ("rdp", "prv"):
        assert noise[acc, 8.0] < noise[acc, 4.0] < noise[acc, 2.0] < noise[acc, 1.0]
    assert all(noise["prv", eps] < noise["rdp", eps] for eps in (8.0, 4.0, 2.0, 1.0))


def test_more_steps_or_a_higher_sampling_rate_need_more_noise() -> None:
    base = calibrate(4.0, 1e-5, 0.1, 30).noise_multiplier
    assert calibrate(4.0, 1e-5, 0.1, 300).noise_multiplier > base
    assert calibrate(4.0, 1e-5, 0.2, 30).noise_multiplier > base


def test_no_dp_is_noise_zero_and_infinite_epsilon() -> None:
    result = calibrate(math.inf, 1e-5, 0.1, 30)
    assert result.noise_multiplier == 0.0 and math.isinf(result.epsilon)


@pytest.mark.parametrize("args, fragment", [
    ((0.0, 1e-5, 0.1, 10), "target epsilon: expected a value > 0"),
    ((-1.0, 1e-5, 0.1, 10), "target epsilon: expected a value > 0"),
    ((math.nan, 1e-5, 0.1, 10), "target epsilon: expected a value > 0"),
    ((1.0, 1.0, 0.1, 10), "delta: expected a value in (0, 1)"),
    ((1.0, 0.0, 0.1, 10), "delta: expected a value in (0, 1)"),
    ((1.0, 1e-5, 0.0, 10), "sampling rate: expected a value in (0, 1]"),
    ((1.0, 1e-5, 1.5, 10), "sampling rate: expected a value in (0, 1]"),
    ((1.0, 1e-5, 0.1, 0), "steps: expected an integer >= 1"),
])
def test_bad_mechanisms_are_privacy_errors_naming_the_parameter(args: tuple, fragment: str) -> None:
    with pytest.raises(PrivacyError) as info:
        calibrate(*args)
    assert fragment in str(info.value)


def test_unknown_accountant_and_unreachable_target_are_privacy_errors() -> None:
    with pytest.raises(PrivacyError, match="unknown accountant 'gdp'"):
        calibrate(1.0, 1e-5, 0.1, 10, "gdp")
    with pytest.raises(PrivacyError, match="cannot be certified by the rdp accountant"):
        calibrate(1e-9, 1e-5, 1.0, 10)
