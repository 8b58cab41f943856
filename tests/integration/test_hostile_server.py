"""Hostile server requests are refused with a clear reply and an audit entry; the node keeps serving."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, RecordDict

from experiments.runners.in_process import make_synthetic_federation
from federated.audit import AUDIT_FILE, read_entries, verify
from federated.data import SyntheticSpec
from federated.privacy.ledger import LEDGER_FILE
from federated.tasks import get_task
from tests.conftest import SMALL_CONFIG
from tests.node_calls import send, send_train, train_config


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    spec = SyntheticSpec(num_workspaces=1, seed=4, min_messages=100, max_messages=100)
    return make_synthetic_federation(tmp_path, spec, opted_out=[]).folders[0]


def model_arrays() -> ArrayRecord:
    return ArrayRecord(get_task(SMALL_CONFIG.task, SMALL_CONFIG.seq_len).build_model(0).state_dict())


@pytest.mark.parametrize("overrides, fragment", [
    ({"noise-multiplier": -1.0}, "'noise-multiplier' expected a value >= 0.0"),
    ({"max-grad-norm": 0.0}, "'max-grad-norm' expected a value > 0.0"),
    ({"local-steps": 0}, "'local-steps' expected a value >= 1, got 0"),
    ({"batch-size": "32"}, "'batch-size' expected int, got '32'"),
    ({"sample-rate": 0.0}, "'sample-rate' expected a value > 0.0"),
    ({"sample-rate": 1.5}, "'sample-rate' expected a value > 0.0 and <= 1.0"),
    ({"lr": float("nan")}, "'lr' expected a value > 0.0"),
    ({"local-steps": True}, "'local-steps' expected int, got True"),
    ({"send-back": "messages"}, "unknown key(s) ['send-back']"),
])
def test_hostile_train_configs_are_refused_and_audited(folder: Path, overrides: dict, fragment: str) -> None:
    reply = send_train(folder, SMALL_CONFIG, **overrides)
    assert reply.has_error() and reply.error.reason == "refused: bad-request"
    (entry,) = [e for e in read_entries(folder / AUDIT_FILE) if e["kind"] == "refusal"]
    assert fragment in entry["detail"]
    assert not (folder / LEDGER_FILE).exists()
    assert not send_train(folder, SMALL_CONFIG, server_round=2).has_error()  # the node keeps serving


@pytest.mark.parametrize("content, fragment", [
    (lambda: RecordDict({"arrays": model_arrays()}), "expected ['arrays', 'config']"),
    (lambda: RecordDict({"arrays": model_arrays(), "config": train_config(), "extra": ConfigRecord({"a": 1})}),
     "expected ['arrays', 'config']"),
    (lambda: RecordDict({"arrays": ArrayRecord([np.zeros(3, dtype=np.float32)]), "config": train_config()}),
     "array keys differ"),
    (lambda: RecordDict({"arrays": ArrayRecord({k: v.double() for k, v in
                                                model_arrays().to_torch_state_dict().items()}),
                         "config": train_config()}), "is float64[258, 64], expected float32[258, 64]"),
])
def test_malformed_train_content_is_refused(folder: Path, content, fragment: str) -> None:
    reply = send(folder, "train", SMALL_CONFIG, content())
    assert reply.has_error() and reply.error.reason == "refused: bad-request"
    (entry,) = [e for e in read_entries(folder / AUDIT_FILE) if e["kind"] == "refusal"]
    assert fragment in entry["detail"]


def test_unknown_message_types_are_refused_and_audited(folder: Path) -> None:
    for message_type in ("train.export_messages", "evaluate.dump", "query.members"):
        reply = send(folder, message_type, SMALL_CONFIG, RecordDict())
        assert reply.has_error() and reply.error.reason == "refused: unsupported-message-type"
    refusals = [e for e in read_entries(folder / AUDIT_FILE) if e["kind"] == "refusal"]
    assert [e["reason"] for e in refusals] == ["unsupported-message-type"] * 3
    assert verify(folder / AUDIT_FILE).ok
    assert not send_train(folder, SMALL_CONFIG).has_error()
