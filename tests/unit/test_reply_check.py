"""Hostile or broken replies are dropped and logged; the aggregate is that of the honest replies alone."""

import math

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict

from federated.inprocess import act_as
from server.run_record import RunRecord
from server.strategy import ConsentAwareFedAvg, TrainingRound, _consent_reason

act_as(1)
GLOBAL = ArrayRecord({"w": ArrayRecord([np.zeros((2, 3), dtype=np.float32)])["0"]})


def metrics(**extra) -> MetricRecord:
    values = {"epsilon": 1.0, "delta": 1e-5, "steps": 3, "sample-rate": 0.1, "noise-multiplier": 1.0,
              "max-grad-norm": 1.0, "private": 1}
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
    18: ({"arrays": arrays(5.0), "metrics": metrics(**{"text-length": 3})}, "expected exactly"),
    19: ({"arrays": arrays(5.0), "metrics": metrics(**{"epsilon": float("nan")})}, "'epsilon' is out of range"),
    20: ({"arrays": arrays(5.0), "metrics": metrics(**{"num-examples": 10**15})}, "expected exactly"),
    21: ({"arrays": arrays(5.0), "metrics": metrics(**{"epsilon": -math.inf})}, "'epsilon' is out of range"),
    22: ({"arrays": arrays(5.0), "metrics": metrics(**{"sample-rate": 1e300})}, "'sample-rate' is out of range"),
    23: ({"arrays": arrays(5.0), "metrics": metrics(**{"private": 0.5})}, "'private' must be an integer"),
    24: ({"arrays": ArrayRecord({"w": Array(dtype="float32", shape=(2, 3), stype="numpy.ndarray",
                                            data=Array(np.array(1000.0, dtype=np.float32)).data)}), "metrics": metrics()},
         "holds float32[]"),
    25: ({"arrays": ArrayRecord({"w": Array(dtype="float32", shape=(2, 3), stype="numpy.ndarray",
                                            data=b"garbage bytes")}), "metrics": metrics()}, "does not deserialize"),
}


def test_hostile_train_replies_are_dropped_and_do_not_change_the_aggregate() -> None:
    record = RunRecord(config={})
    strategy = ConsentAwareFedAvg(record, ConfigRecord())
    strategy._training[1] = TrainingRound(GLOBAL, [])
    honest = [reply(1, {"arrays": arrays(1.0), "metrics": metrics()}),
              reply(2, {"arrays": arrays(3.0), "metrics": metrics()})]
    hostile = [reply(node, content) for node, (content, _) in HOSTILE.items()]
    aggregated, _ = strategy.aggregate_train(1, hostile[:5] + honest + hostile[5:])
    np.testing.assert_allclose(aggregated["w"].numpy(), np.full((2, 3), 2.0))  # equal weights
    assert sorted(record.round(1).trained) == [1, 2]
    for node, (_, fragment) in HOSTILE.items():
        assert fragment in record.round(1).dropped[node]


def test_a_round_with_only_hostile_replies_aggregates_nothing() -> None:
    strategy = ConsentAwareFedAvg(RunRecord(config={}), ConfigRecord())
    strategy._training[1] = TrainingRound(GLOBAL, [])
    assert strategy.aggregate_train(1, [reply(11, HOSTILE[11][0])]) == (None, None)


@pytest.mark.parametrize("content, fragment", [
    ({"metrics": MetricRecord({"eval-accuracy": 1e300})}, "expected exactly"),
    ({"metrics": MetricRecord({"secret": 1.0})}, "expected exactly"),
    ({"metrics": MetricRecord({}), "arrays": arrays(1.0)}, "unexpected records"),
])
def test_hostile_evaluate_replies_are_dropped(content: dict, fragment: str) -> None:
    record = RunRecord(config={})
    strategy = ConsentAwareFedAvg(record, ConfigRecord())
    good = reply(1, {"metrics": MetricRecord({})})
    assert strategy.aggregate_evaluate(3, [good, reply(9, content)]) is None
    assert list(record.round(3).evaluated) == [1]
    assert fragment in record.round(3).dropped[9]


def test_a_node_cannot_move_the_aggregate_by_more_than_its_equal_share() -> None:
    """The attack: a node claiming 10**15 examples used to move FedAvg to its own model. Replies carry no counts
    now; whatever a node sends, it moves the average of k updates by exactly 1/k of its own."""
    strategy = ConsentAwareFedAvg(RunRecord(config={}), ConfigRecord())
    strategy._training[1] = TrainingRound(GLOBAL, [])
    honest = [reply(n, {"arrays": arrays(0.0), "metrics": metrics()}) for n in (1, 2, 3)]
    liar = reply(4, {"arrays": arrays(0.5), "metrics": metrics(**{"num-examples": 10**15})})
    liar_without_count = reply(4, {"arrays": arrays(0.5), "metrics": metrics()})
    dropped, _ = strategy.aggregate_train(1, honest + [liar])
    np.testing.assert_allclose(dropped["w"].numpy(), 0.0)
    strategy._training[1] = TrainingRound(GLOBAL, [])
    aggregated, _ = strategy.aggregate_train(1, honest + [liar_without_count])
    np.testing.assert_allclose(aggregated["w"].numpy(), 0.5 / 4)


def test_a_node_cannot_fill_the_servers_records_with_text() -> None:
    """The attack: a 5 MB consent reason or error text became a 30 MB audit log and metrics.json. Only reason
    codes are recorded; anything else is a bad answer or a malformed error."""
    huge = "x" * 5_000_000
    answer = ConfigRecord({"consent": False, "reason": huge, "can-afford": False, "remaining-epsilon": 0.0,
                           "label": ""})
    query = Message(RecordDict(), 5, "query")
    assert _consent_reason(Message(RecordDict({"consent": answer}), reply_to=query)) == "bad-answer"
    answer["reason"] = "consent-off"
    assert _consent_reason(Message(RecordDict({"consent": answer}), reply_to=query)) == "consent-off"

    record = RunRecord(config={})
    strategy = ConsentAwareFedAvg(record, ConfigRecord())
    strategy._training[1] = TrainingRound(GLOBAL, [])
    errors = [Message(Error(1001, "refused: " + huge), reply_to=Message(RecordDict(), 6, "train")),
              Message(Error(1001, "refused: budget-exhausted"), reply_to=Message(RecordDict(), 7, "train"))]
    strategy.aggregate_train(1, errors)
    assert record.round(1).skipped == {6: "train-error: malformed error", 7: "train-error: refused: budget-exhausted"}
