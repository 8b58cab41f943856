"""``optin privacy epsilon`` and ``optin privacy noise``: the number alone on the last line, one-line errors."""

from __future__ import annotations

import math

import pytest
from typer.testing import CliRunner

from experiments.cli.app import app
from federated.privacy.accounting import epsilon
from federated.privacy.calibration import calibrate

runner = CliRunner()


def last_line(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return result.output.strip().splitlines()[-1]


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_epsilon_prints_the_mechanisms_epsilon_alone_on_the_last_line(accountant: str) -> None:
    line = last_line(["privacy", "epsilon", "--sampling-rate", "0.125", "--noise-multiplier", "1.2", "--steps", "30",
                      "--delta", "1e-5", "--accountant", accountant])
    assert float(line) == epsilon([(1.2, 0.125, 30)], 1e-5, accountant)


def test_noise_prints_the_calibrated_multiplier_alone_and_it_reaches_the_target() -> None:
    line = last_line(["privacy", "noise", "--target-epsilon", "2", "--sampling-rate", "1", "--steps", "3",
                      "--delta", "1e-5", "--accountant", "prv"])
    assert float(line) == calibrate(2.0, 1e-5, 1.0, 3, "prv").noise_multiplier
    assert 2.0 - 0.01 <= epsilon([(float(line), 1.0, 3)], 1e-5, "prv") <= 2.0


def test_no_noise_is_infinite_epsilon_and_infinite_target_is_no_noise() -> None:
    assert math.isinf(float(last_line(["privacy", "epsilon", "--sampling-rate", "0.1", "--noise-multiplier", "0",
                                       "--steps", "5"])))
    assert last_line(["privacy", "epsilon", "--sampling-rate", "0.1", "--noise-multiplier", "0",
                      "--steps", "5"]) == "inf"
    assert float(last_line(["privacy", "noise", "--target-epsilon", "inf", "--sampling-rate", "0.1",
                            "--steps", "5"])) == 0.0


@pytest.mark.parametrize("args, fragment", [
    (["epsilon", "--sampling-rate", "1.5", "--noise-multiplier", "1", "--steps", "5"], "sampling rate"),
    (["epsilon", "--sampling-rate", "0.1", "--noise-multiplier", "-1", "--steps", "5"], "--noise-multiplier"),
    (["epsilon", "--sampling-rate", "0.1", "--noise-multiplier", "1", "--steps", "5", "--delta", "1"], "delta"),
    (["epsilon", "--sampling-rate", "0.1", "--noise-multiplier", "1", "--steps", "5", "--accountant", "gdp"],
     "unknown accountant 'gdp'"),
    (["noise", "--target-epsilon", "0", "--sampling-rate", "0.1", "--steps", "5"], "target epsilon"),
    (["noise", "--target-epsilon", "1", "--sampling-rate", "0.1", "--steps", "0"], "steps"),
])
def test_user_errors_are_one_line_and_exit_1(args: list[str], fragment: str) -> None:
    result = runner.invoke(app, ["privacy", *args])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0]


@pytest.mark.parametrize("command", ["epsilon", "noise"])
def test_help_has_an_example(command: str) -> None:
    result = runner.invoke(app, ["privacy", command, "--help"])
    assert result.exit_code == 0 and f"Example: optin privacy {command}" in result.output
