"""Accounting: Optin's ε agrees with Google's dp-accounting and Flower's accountant on the mechanisms sweeps run.

Local DP-SGD: Poisson-subsampled Gaussian, add/remove one message (dp-accounting's
``PoissonSampledDpEvent`` under its RDP accountant, and its PLD accountant against Opacus' PRV).
Central DP-FedAvg: the Gaussian mechanism without amplification, add/remove (zero out) one
workspace (dp-accounting's ``GaussianDpEvent``, and Flower's own ``RdpAccountant`` with
``no-amplification`` sampling). RDP must agree within 1%, PRV with PLD within 0.015 in ε.
"""

from __future__ import annotations

import math
import warnings

import pytest
from dp_accounting import dp_event
from dp_accounting.pld.pld_privacy_accountant import PLDAccountant
from dp_accounting.rdp.rdp_privacy_accountant import RdpAccountant
from flwr.supercore.privacy_accounting import (
    GaussianPrivacyEvent,
    NeighboringRelation,
    PrivacyConfig,
    SamplingMethod,
)
from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant as FlowerRdpAccountant
from opacus.accountants import RDPAccountant

from federated.errors import PrivacyError
from federated.privacy.accounting import Step, epsilon
from federated.privacy.calibration import calibrate

DELTA = 1e-5
# (target ε, Poisson rate, steps) of the default sweep's local cells (3 rounds × 8 steps, batch 16,
# workspaces of 120..240 training messages) and of its central cells (3 releases, rate 1).
LOCAL = [(eps, rate, 24) for eps in (8.0, 1.0) for rate in (1 / 8, 1 / 11, 1 / 15)]
CENTRAL = [(eps, 1.0, 3) for eps in (8.0, 1.0)]


def _event(z: float, q: float) -> dp_event.DpEvent:
    gaussian = dp_event.GaussianDpEvent(z)
    return gaussian if q == 1.0 else dp_event.PoissonSampledDpEvent(q, gaussian)


def _dp_accounting(history: list[Step], accountant: RdpAccountant | PLDAccountant) -> float:
    for z, q, t in history:
        accountant.compose(_event(z, q), t)
    return float(accountant.get_epsilon(DELTA))


@pytest.mark.parametrize("target, rate, steps", LOCAL + CENTRAL)
def test_rdp_agrees_with_dp_accounting_within_one_percent(target: float, rate: float, steps: int) -> None:
    z = calibrate(target, DELTA, rate, steps, "rdp").noise_multiplier
    # A node's ledger holds one row per round; compose them the same way.
    history = [(z, rate, steps // 3)] * 3
    ours = epsilon(history, DELTA, "rdp")
    theirs = _dp_accounting(history, RdpAccountant())
    assert ours == pytest.approx(theirs, rel=0.01)
    assert ours <= target


@pytest.mark.parametrize("target, rate, steps", [LOCAL[1], LOCAL[4], *CENTRAL])
def test_prv_agrees_with_dp_accounting_pld_within_0_015(target: float, rate: float, steps: int) -> None:
    z = calibrate(target, DELTA, rate, steps, "prv").noise_multiplier
    history = [(z, rate, steps)]
    assert epsilon(history, DELTA, "prv") == pytest.approx(_dp_accounting(history, PLDAccountant()), abs=0.015)


@pytest.mark.parametrize("target", [8.0, 1.0])
def test_central_epsilon_agrees_with_flowers_accountant_without_amplification(target: float) -> None:
    z = calibrate(target, DELTA, 1.0, 3, "rdp").noise_multiplier
    config = PrivacyConfig(target_delta=DELTA, population_size=4,
                           neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
                           sampling_method=SamplingMethod.NO_AMPLIFICATION)
    flower = FlowerRdpAccountant(config)
    flower.compose(GaussianPrivacyEvent(noise_multiplier=z, sample_size=4, population_size=4), count=3)
    assert epsilon([(z, 1.0, 3)], DELTA) == pytest.approx(flower.get_epsilon(DELTA), rel=0.01)


def test_rdp_epsilon_is_exactly_opacus_rdp_accountant() -> None:
    history = [(0.8, 1 / 8, 10), (1.3, 1 / 9, 7), (0.8, 1 / 8, 10), (4.0, 1.0, 2)]
    accountant = RDPAccountant()
    accountant.history = list(history)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert epsilon(history, DELTA) == accountant.get_epsilon(delta=DELTA)


def test_no_noise_is_infinite_epsilon_and_nothing_released_is_zero() -> None:
    assert math.isinf(epsilon([(1.0, 0.1, 5), (0.0, 0.1, 1)], DELTA))
    assert math.isinf(epsilon([(0.0, 1.0, 1)], DELTA, "prv"))
    assert epsilon([], DELTA, "prv") == 0.0


@pytest.mark.parametrize("history, delta, accountant, fragment", [
    ([(1.0, 0.1, 5)], 1.0, "rdp", "delta: expected a value in (0, 1)"),
    ([(1.0, 0.0, 5)], DELTA, "rdp", "0 < sample rate <= 1"),
    ([(-1.0, 0.1, 5)], DELTA, "rdp", "noise >= 0"),
    ([(1.0, 0.1, 5)], DELTA, "gdp", "unknown accountant 'gdp'"),
])
def test_bad_histories_are_privacy_errors(history: list[Step], delta: float, accountant: str, fragment: str) -> None:
    with pytest.raises(PrivacyError) as info:
        epsilon(history, delta, accountant)
    assert fragment in str(info.value)
