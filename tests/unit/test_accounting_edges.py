"""Accounting edge cases: every input gives an ε in [0, ∞] or a ``PrivacyError`` naming the problem.

Never a negative ε (clamped at 0, which is still an upper bound), never NaN, never an Opacus traceback;
``optin privacy noise`` names the accountant that cannot certify a target and why. The canary audit's
texts state its lower bound as a confidence statement, not as "never".
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opacus.accountants.utils import get_noise_multiplier
from scipy import stats
from typer.testing import CliRunner

from experiments.cli.app import app
from experiments.research.report import _violations
from federated.errors import PrivacyError
from federated.privacy.accounting import MAX_NOISE, epsilon, make_accountant
from federated.privacy.calibration import calibrate
from federated.privacy.one_run_audit import epsilon_lower_bound

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()
ACCOUNTANTS = ["rdp", "prv"]


# -- 1. ε is never negative ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("accountant", ACCOUNTANTS)
@pytest.mark.parametrize("history, delta", [
    ([(1.1, 0.01, 1000)], 0.3), ([(1.1, 0.01, 1000)], 0.6), ([(1.1, 0.01, 1000)], 0.9),
    ([(100.0, 1.0, 1)], 0.05),  # a δ that small still gives ε < 0 with enough noise: no δ cap could prevent it
])
def test_a_negative_accountant_epsilon_is_clamped_to_zero(history: list, delta: float, accountant: str) -> None:
    with np.errstate(divide="ignore"):
        raw = make_accountant(accountant, history).get_epsilon(delta=delta)
    assert raw < 0  # what Opacus says
    assert epsilon(history, delta, accountant) == 0.0


@pytest.mark.parametrize("accountant", ACCOUNTANTS)
@pytest.mark.parametrize("z", [1.0, 5.0, 100.0])
@pytest.mark.parametrize("delta", [0.05, 0.3, 0.5, 0.9])
def test_zero_is_sound_where_it_is_clamped(z: float, delta: float, accountant: str) -> None:
    """(0, δ)-DP holds iff δ ≥ the total variation distance; for one Gaussian step it is 2Φ(1/2z) − 1."""
    if epsilon([(z, 1.0, 1)], delta, accountant) == 0.0:
        assert 2 * stats.norm.cdf(1 / (2 * z)) - 1 <= delta


@pytest.mark.parametrize("accountant", ACCOUNTANTS)
@pytest.mark.parametrize("delta", ["0.5", "0.6"])
def test_cli_prints_zero_not_a_negative_epsilon(accountant: str, delta: str) -> None:
    result = runner.invoke(app, ["privacy", "epsilon", "--sampling-rate", "0.01", "--noise-multiplier", "1.1",
                                 "--steps", "1000", "--delta", delta, "--accountant", accountant])
    assert result.exit_code == 0, result.output
    assert float(result.output.strip().splitlines()[-1]) == 0.0


def test_help_states_the_clamping_rule() -> None:
    result = runner.invoke(app, ["privacy", "epsilon", "--help"])
    assert result.exit_code == 0 and "never" in result.output and "negative" in result.output


# -- 2. extreme inputs: a number or a PrivacyError -------------------------------------------------------------------

@pytest.mark.parametrize("delta, fragment", [
    (1e-16, "too small"), (1e-30, "too small"), (1e-300, "too small"), (5e-324, "too small"),
    (0.999999, "beyond what its grid covers"),
])
def test_prv_refuses_a_delta_outside_its_range_with_a_clear_error(delta: float, fragment: str) -> None:
    with pytest.raises(PrivacyError) as info:
        epsilon([(1.1, 0.01, 1000)], delta, "prv")
    assert str(info.value).startswith("prv accountant:") and fragment in str(info.value)
    assert "--accountant rdp" in str(info.value)


@pytest.mark.parametrize("delta", [1e-16, 1e-30, 1e-300, 5e-324])
def test_rdp_handles_every_tiny_delta_and_epsilon_grows_as_delta_shrinks(delta: float) -> None:
    assert epsilon([(1.1, 0.01, 1000)], 1e-12) < epsilon([(1.1, 0.01, 1000)], delta) < math.inf


@pytest.mark.parametrize("history", [[(1e-5, 0.01, 100)], [(1.0, 0.01, 10**9)], [(1.0, 0.01, 10**20)]])
def test_prv_refuses_a_grid_too_large_to_compute(history: list) -> None:
    with pytest.raises(PrivacyError, match="prv accountant: .* discretization grid of more than"):
        epsilon(history, 1e-5, "prv")
    assert 0 < epsilon(history, 1e-5, "rdp") < math.inf


@pytest.mark.parametrize("accountant", ACCOUNTANTS)
def test_tiny_noise_is_infinite_and_huge_noise_is_accounted_at_the_cap(accountant: str) -> None:
    assert math.isinf(epsilon([(1e-300, 0.01, 100)], 1e-5, accountant))
    assert math.isinf(epsilon([(1e-7, 0.01, 100), (1.0, 0.01, 10)], 1e-5, accountant))
    capped = epsilon([(MAX_NOISE, 0.01, 100)], 1e-5, accountant)
    for z in (1e7, 1e300, math.inf):
        assert epsilon([(z, 0.01, 100)], 1e-5, accountant) == capped
    assert capped <= epsilon([(1e3, 0.01, 100)], 1e-5, accountant)


@pytest.mark.parametrize("accountant", ACCOUNTANTS)
def test_every_unit_in_every_step_and_tiny_rates_work(accountant: str) -> None:
    assert 0 < epsilon([(1.0, 1.0, 1)], 1e-5, accountant) < math.inf
    assert 0 <= epsilon([(1.0, 1e-300, 100)], 1e-5, accountant) < 0.2


@pytest.mark.parametrize("step", [(1.0, 0.1, 2.5), (1.0, 0.1, True), (1.0, 0.1, 0), (math.nan, 0.1, 5),
                                  (1.0, math.nan, 5), (-1.0, 0.1, 5), (1.0, 0.0, 5)])
def test_malformed_steps_are_privacy_errors(step: tuple) -> None:
    with pytest.raises(PrivacyError, match="history: expected"):
        epsilon([step], 1e-5)


def test_integral_float_steps_are_accepted() -> None:
    assert epsilon([(1.0, 0.1, 5.0)], 1e-5) == epsilon([(1.0, 0.1, 5)], 1e-5)


@pytest.mark.parametrize("accountant", ACCOUNTANTS)
@pytest.mark.parametrize("noise, rate, steps, delta", [
    ("1.1", "0.01", "1000", "1e-30"), ("1.1", "0.01", "1000", "5e-324"), ("1.1", "0.01", "1000", "0.999999"),
    ("1e-300", "0.01", "100", "1e-5"), ("1e-5", "0.01", "100", "1e-5"), ("1e300", "0.01", "100", "1e-5"),
    ("inf", "0.01", "100", "1e-5"), ("1", "1", "1", "1e-5"), ("1", "1e-300", "100", "1e-5"),
    ("1", "0.01", "1000000000", "1e-5"), ("1", "0.01", "100000000000000000000", "1e-5"),
    ("nan", "0.01", "100", "1e-5"), ("1", "nan", "100", "1e-5"), ("1", "0.01", "100", "nan"),
    ("1", "0.01", "100", "inf"), ("1", "0.01", "100", "0"),
])
def test_cli_epsilon_gives_a_number_or_a_one_line_error_never_a_traceback(noise: str, rate: str, steps: str,
                                                                          delta: str, accountant: str) -> None:
    number_or_one_line_error(runner.invoke(app, ["privacy", "epsilon", "--noise-multiplier", noise, "--sampling-rate",
                                                 rate, "--steps", steps, "--delta", delta, "--accountant", accountant]))


@pytest.mark.parametrize("accountant", ACCOUNTANTS)
@pytest.mark.parametrize("target, rate, steps, delta", [
    ("1", "0.01", "1000", "1e-30"), ("1", "0.01", "1000", "0.999999"), ("0.05", "1", "10", "1e-5"),
    ("1e-9", "1", "10", "1e-5"), ("1", "1", "1", "0.6"), ("8", "1e-300", "10", "1e-5"), ("nan", "0.1", "5", "1e-5"),
])
def test_cli_noise_gives_a_number_or_a_one_line_error_never_a_traceback(target: str, rate: str, steps: str,
                                                                        delta: str, accountant: str) -> None:
    number_or_one_line_error(runner.invoke(app, ["privacy", "noise", "--target-epsilon", target, "--sampling-rate",
                                                 rate, "--steps", steps, "--delta", delta, "--accountant", accountant]))


def number_or_one_line_error(result) -> None:
    """Exit 0 with a number >= 0 on the last line, or exit 1 with one ``error:`` line; never a traceback."""
    assert isinstance(result.exception, SystemExit) or result.exception is None, result.output
    lines = result.output.strip().splitlines()
    if result.exit_code == 0:
        value = float(lines[-1])
        assert value >= 0 and not math.isnan(value)
    else:
        assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("error:"), result.output


_NOISE = st.one_of(st.floats(0.3, 30.0), st.sampled_from([0.0, 1e-300, 1e-7]))
_HUGE_NOISE = st.sampled_from([1e7, 1e300, math.inf])
_RATE = st.one_of(st.floats(1e-4, 1.0), st.sampled_from([1.0, 1e-300]))
_FAST_RATE = st.sampled_from([1.0, 0.01, 1e-300])  # Opacus' RDP takes seconds at huge noise for mid rates
_STEPS = st.one_of(st.integers(1, 1000), st.sampled_from([10**9, 10**20]))
_DELTA = st.one_of(st.floats(1e-12, 0.99), st.sampled_from([1e-30, 1e-300, 5e-324, 0.999999]))


@st.composite
def valid_inputs(draw: st.DrawFn) -> tuple[list, float, str]:
    history = []
    for _ in range(draw(st.integers(1, 2))):
        if draw(st.booleans()) and draw(st.integers(0, 4)) == 0:
            history.append((draw(_HUGE_NOISE), draw(_FAST_RATE), draw(_STEPS)))
        else:
            history.append((draw(_NOISE), draw(_RATE), draw(_STEPS)))
    return history, draw(_DELTA), draw(st.sampled_from(ACCOUNTANTS))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_inputs())
def test_property_valid_inputs_give_epsilon_in_zero_to_inf_or_a_prv_privacy_error(
        inputs: tuple[list, float, str]) -> None:
    history, delta, accountant = inputs
    try:
        value = epsilon(history, delta, accountant)
    except PrivacyError as exc:
        assert accountant == "prv" and str(exc).startswith("prv accountant:")  # RDP takes every valid input
        return
    assert isinstance(value, float) and not math.isnan(value) and value >= 0


_BAD = st.sampled_from([
    ("noise", -1.0), ("noise", math.nan), ("rate", 0.0), ("rate", -0.1), ("rate", 1.5), ("rate", math.nan),
    ("steps", 0), ("steps", -3), ("steps", 2.5), ("steps", True), ("delta", 0.0), ("delta", 1.0),
    ("delta", -1e-5), ("delta", math.nan), ("delta", math.inf), ("accountant", "gdp"),
])


@settings(max_examples=60, deadline=None)
@given(z=st.floats(0.5, 5.0), q=st.floats(1e-3, 1.0), t=st.integers(1, 50), delta=st.floats(1e-9, 1e-3),
       accountant=st.sampled_from(ACCOUNTANTS), bad=_BAD)
def test_property_invalid_inputs_raise_privacy_error_only(z: float, q: float, t: int, delta: float, accountant: str,
                                                          bad: tuple[str, object]) -> None:
    values = {"noise": z, "rate": q, "steps": t, "delta": delta, "accountant": accountant}
    values[bad[0]] = bad[1]
    with pytest.raises(PrivacyError):
        epsilon([(values["noise"], values["rate"], values["steps"])], values["delta"], values["accountant"])


# -- 3. an unreachable target names the accountant and why -----------------------------------------------------------

def test_rdp_order_floor_names_rdp_and_what_prv_gives() -> None:
    with pytest.raises(PrivacyError) as info:
        calibrate(0.05, 1e-5, 1.0, 10, "rdp")
    message = str(info.value)
    assert "cannot be certified by the rdp accountant" in message and "alpha <= 63" in message
    assert "at least 0.1029" in message
    prv = calibrate(0.05, 1e-5, 1.0, 10, "prv")
    assert f"--accountant prv) reaches it with noise multiplier {prv.noise_multiplier:.4g}" in message


def test_a_target_neither_accountant_certifies_names_both_reasons() -> None:
    with pytest.raises(PrivacyError) as info:
        calibrate(1e-9, 1e-5, 1.0, 10, "rdp")
    assert "rdp accountant" in str(info.value) and "prv accountant (--accountant prv) cannot either" in str(info.value)
    with pytest.raises(PrivacyError, match="cannot be certified by the prv accountant.*error margin of 0.01"):
        calibrate(1e-9, 1e-5, 1.0, 10, "prv")


def test_prv_calibration_at_a_delta_it_cannot_resolve_says_so() -> None:
    with pytest.raises(PrivacyError, match="prv accountant .* cannot compute epsilon for any noise multiplier"):
        calibrate(1.0, 1e-30, 1.0, 10, "prv")
    assert calibrate(2.0, 1e-30, 1.0, 10, "rdp").epsilon <= 2.0  # RDP's floor at δ = 1e-30 is about 1.03


@pytest.mark.parametrize("accountant, target, rate, steps", [("rdp", 2.0, 0.05, 100), ("prv", 2.0, 0.05, 100),
                                                             ("rdp", 0.5, 1.0, 3), ("prv", 8.0, 1 / 8, 24)])
def test_the_search_is_opacus_get_noise_multiplier(accountant: str, target: float, rate: float, steps: int) -> None:
    with np.errstate(divide="ignore"):
        theirs = get_noise_multiplier(target_epsilon=target, target_delta=1e-5, sample_rate=rate, steps=steps,
                                      accountant=accountant, epsilon_tolerance=0.01)
    assert calibrate(target, 1e-5, rate, steps, accountant).noise_multiplier == theirs


# -- 4. the canary audit's claim is a confidence statement -----------------------------------------------------------

@pytest.mark.parametrize("eps", [0.0, 0.5, 1.0, 2.0])
def test_a_correct_claim_is_exceeded_at_most_one_minus_confidence_of_the_time(eps: float) -> None:
    """Guesses that are right with probability e^ε / (1 + e^ε) (ε-DP, δ = 0): P[bound > ε] ≤ 5 % at 95 %."""
    m, r = 256, 64
    p = math.exp(eps) / (1 + math.exp(eps))
    exceed = sum(stats.binom.pmf(v, r, p) for v in range(r + 1) if epsilon_lower_bound(m, r, v) > eps)
    assert exceed <= 0.05


def test_report_banner_is_a_confidence_statement() -> None:
    cell = {"cell": {"id": "c1"}, "audit": {"violation": True, "claimed_epsilon": 1.0, "claimed_basis": "local",
                                            "one_run": {"epsilon_lower_bound": 1.5, "confidence": 0.95}}}
    banner = " ".join(_violations([cell]))
    assert banner.startswith("> **PRIVACY AUDIT FAILED")
    assert "5% chance" in banner and "95% confidence" in banner and "rerun" in banner
    assert "this is a bug" not in banner and "never" not in banner


@pytest.mark.parametrize("path", ["experiments/research/canary_audit.py", "experiments/research/report.py",
                                  "federated/privacy/one_run_audit.py", "docs/experiments.md", "docs/privacy.md"])
def test_no_audit_text_claims_a_bound_above_the_claim_is_never_chance(path: str) -> None:
    text = (ROOT / path).read_text(encoding="utf-8")
    assert "never an acceptable result" not in text and "a bug, never a result" not in text
    assert "— this is a bug." not in text and "claim is a bug:" not in text and "as a bug." not in text
