"""Hostile or broken replies are dropped and logged; the aggregate is that of the honest replies alone."""

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from server.run_record import RunRecord
from server.strategy import ConsentAwareFedAvg

TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1
GLOBAL = ArrayRecord({"w": ArrayRecord([np.zeros((2, 3), dtype=np.float32)])["0"]})


def metrics(**extra) -> MetricRecord:
    values = {"num-examples": 10, "train-loss": 1.0, "epsilon": 1.0, "delta": 1e-5, "steps": 3,
              "sample-rate": 0.1, "noise-multiplier": 1.0}
    values.update(extra)
    return MetricRecord(values)


def reply(node_id: int, records: dict) -> Message:
    sent = Message(RecordDict(), node_id, "train")
    return Message(RecordDict(records), reply_to=sent)


def arrays(value, shape=(2, 3), dtype=np.float32, key="w") -> ArrayRecord:
    return ArrayRecord({key: ArrayRecord([np.full(shape, value, dtype=dtype)])["0"]})


HOSTILE = {
    11: ({"arrays": arrays(np.nan), "metrics": metrics()}, "has NaN or Inf"),
    12: ({"arrays": arrays(np.inf), "metrics": metrics()}, "has NaN or Inf"),
    13: ({"arrays": arrays(5.0, shape=(3, 2)), "metrics": metrics()}, "expected float32[2, 3]"),
    14: ({"arrays": arrays(5.0, dtype=np.float64), "metrics": metrics()}, "expected float32[2, 3]"),
    15: ({"arrays": arrays(5.0, shape=(2000, 3000)), "metrics": metrics()}, "expected float32[2, 3]"),
    16: ({"arrays": arrays(5.0), "metrics": metrics(), "extra": ConfigRecord({"x": 1})}, "unexpected records"),
    17: ({"arrays": arrays(5.0, key="v"), "metrics": metrics()}, "array keys differ"),
    18: ({"arrays": arrays(5.0), "metrics": metrics(**{"text-length": 3})}, "unexpected metrics"),
    19: ({"arrays": arrays(5.0), "metrics": metrics(**{"train-loss": float("nan")})}, "'train-loss' is not finite"),
    20: ({"arrays": arrays(5.0), "metrics": metrics(**{"num-examples": 0})}, "num-examples"),
}


def test_hostile_train_replies_are_dropped_and_do_not_change_the_aggregate() -> None:
    record = RunRecord(config={})
    strategy = ConsentAwareFedAvg(record, ConfigRecord())
    strategy._sent[1] = GLOBAL
    honest = [reply(1, {"arrays": arrays(1.0), "metrics": metrics(**{"num-examples": 30})}),
              reply(2, {"arrays": arrays(3.0), "metrics": metrics(**{"num-examples": 10})})]
    hostile = [reply(node, content) for node, (content, _) in HOSTILE.items()]
    aggregated, _ = strategy.aggregate_train(1, hostile[:5] + honest + hostile[5:])
    np.testing.assert_allclose(aggregated["w"].numpy(), np.full((2, 3), 1.5))  # (30*1 + 10*3) / 40
    assert sorted(record.round(1).trained) == [1, 2]
    for node, (_, fragment) in HOSTILE.items():
        assert fragment in record.round(1).dropped[node]


def test_a_round_with_only_hostile_replies_aggregates_nothing() -> None:
    strategy = ConsentAwareFedAvg(RunRecord(config={}), ConfigRecord())
    strategy._sent[1] = GLOBAL
    assert strategy.aggregate_train(1, [reply(11, HOSTILE[11][0])]) == (None, None)


@pytest.mark.parametrize("content, fragment", [
    ({"metrics": MetricRecord({"num-examples": 5, "eval-loss": 1.0, "eval-accuracy": float("inf")})}, "not finite"),
    ({"metrics": MetricRecord({"num-examples": 5, "secret": 1.0})}, "unexpected metrics"),
    ({"metrics": MetricRecord({"num-examples": 5}), "arrays": arrays(1.0)}, "unexpected records"),
])
def test_hostile_evaluate_replies_are_dropped(content: dict, fragment: str) -> None:
    record = RunRecord(config={})
    strategy = ConsentAwareFedAvg(record, ConfigRecord())
    good = reply(1, {"metrics": MetricRecord({"num-examples": 5, "eval-loss": 2.0, "eval-accuracy": 0.5})})
    result = strategy.aggregate_evaluate(3, [good, reply(9, content)])
    assert result["eval-accuracy"] == 0.5
    assert fragment in record.round(3).dropped[9]
