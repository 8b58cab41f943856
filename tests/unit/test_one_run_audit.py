import pytest
from typer.testing import CliRunner

from experiments.cli.app import app
from federated.errors import PrivacyError
from federated.privacy.one_run_audit import epsilon_lower_bound, p_value


@pytest.mark.parametrize("m, r, v, expected", [(1000, 100, 100, 3.49), (10000, 1000, 900, 2.02)])
def test_reference_values_of_the_paper(m: int, r: int, v: int, expected: float) -> None:
    assert epsilon_lower_bound(m, r, v, delta=0.0) == pytest.approx(expected, abs=0.005)


def test_bound_is_where_the_p_value_crosses_five_percent() -> None:
    bound = epsilon_lower_bound(1000, 200, 150)
    assert p_value(1000, 200, 150, bound - 1e-3, 0.0) < 0.05 <= p_value(1000, 200, 150, bound + 1e-3, 0.0)


def test_chance_level_guessing_bounds_nothing_and_delta_only_weakens() -> None:
    assert epsilon_lower_bound(1000, 100, 50) == 0.0
    assert epsilon_lower_bound(1000, 100, 100, delta=1e-3) < epsilon_lower_bound(1000, 100, 100, delta=0.0)


def test_impossible_counts_are_rejected() -> None:
    with pytest.raises(PrivacyError, match="correct"):
        epsilon_lower_bound(10, 20, 5)


def test_cli_prints_the_number_alone_on_the_last_line() -> None:
    result = CliRunner().invoke(app, ["audit", "bound", "--canaries", "1000", "--guesses", "100", "--correct", "100"])
    assert result.exit_code == 0
    assert float(result.output.strip().splitlines()[-1]) == pytest.approx(3.49, abs=0.005)
    bad = CliRunner().invoke(app, ["audit", "bound", "--canaries", "10", "--guesses", "20", "--correct", "5"])
    assert bad.exit_code == 1 and "error:" in bad.output
