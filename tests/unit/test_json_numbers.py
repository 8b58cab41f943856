"""∞ has one spelling in every JSON results file, and it reads back as ∞."""

from __future__ import annotations

import json
import math

from hypothesis import given
from hypothesis import strategies as st

from experiments.runners.results import load_metrics
from federated import json_numbers
from server.run_record import RunRecord

_numbers = st.floats(allow_nan=False) | st.integers() | st.text(max_size=8) | st.none()
_values = st.recursive(_numbers, lambda inner: st.lists(inner, max_size=4)
                       | st.dictionaries(st.text(max_size=5), inner, max_size=4), max_leaves=20)


@given(_values)
def test_any_results_value_reads_back_as_written(value: object) -> None:
    if _holds_the_words(value):
        return  # the strings "inf"/"-inf" are the encoding itself
    assert json_numbers.loads(json_numbers.dumps(value)) == value


def _holds_the_words(value: object) -> bool:
    if isinstance(value, str):
        return value in ("inf", "-inf")
    if isinstance(value, dict):
        return any(_holds_the_words(v) for v in value.values())
    if isinstance(value, list):
        return any(_holds_the_words(v) for v in value)
    return False


def test_a_no_dp_node_epsilon_is_written_as_inf_in_strict_json_and_reads_back(tmp_path) -> None:
    record = RunRecord(config={"max-epsilon": math.inf})
    record.round(1).consent[7] = "consent-on"
    record.round(1).trained[7] = {"epsilon": math.inf, "delta": 1e-5}
    record.write(tmp_path / "metrics.json")

    def no_constants(name: str) -> float:
        raise AssertionError(f"non-standard JSON constant {name}")

    raw = json.loads((tmp_path / "metrics.json").read_text(), parse_constant=no_constants)
    assert raw["nodes"]["7"]["epsilon"] == "inf"
    assert raw["config"]["max-epsilon"] == "inf"
    loaded = load_metrics(tmp_path)
    assert loaded["nodes"]["7"]["epsilon"] == math.inf
    assert loaded["config"]["max-epsilon"] == math.inf


def test_nan_is_written_as_null() -> None:
    assert json.loads(json_numbers.dumps({"loss": math.nan})) == {"loss": None}
