"""The egress check lets only the allowed forms of reply leave a node, and records every refusal."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MetricRecord,
    RecordDict,
)

from clients.app import app as client_app
from clients.egress import BLOCKED_REASON, egress_check
from clients.workspace_node import CANARIES_KEY
from experiments.runners.in_process import make_synthetic_federation
from federated.audit import AUDIT_FILE, read_entries, verify
from federated.config import RunConfig
from federated.data import SyntheticSpec
from federated.inprocess import act_as, stamp
from federated.protocol import REFUSED_CODE
from tests.node_calls import send, send_query, send_train, train_config

SECRET = "alice wrote: the launch is on friday"
MODEL = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.zeros(3, dtype=np.float32)}


def _request(message_type: str) -> Message:
    act_as(1)
    content = RecordDict()
    if message_type in ("train", "evaluate"):
        content = RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in MODEL.items()}),
                              "config": train_config()})
    return stamp(Message(content, 7, message_type, group_id="3"), 1)


def _consent(**changes: object) -> RecordDict:
    answer = {"consent": True, "reason": "consent-on", "can-afford": True, "remaining-epsilon": 2.5, "label": ""}
    answer.update(changes)
    return RecordDict({"consent": ConfigRecord(answer)})


def _arrays(**changes: Array) -> ArrayRecord:
    return ArrayRecord({**{k: Array(v + 1) for k, v in MODEL.items()}, **changes})


def _train(arrays: ArrayRecord | None = None, **metrics: object) -> RecordDict:
    values = {"epsilon": 1.5, "delta": 1e-5, "steps": 3, "sample-rate": 0.2, "noise-multiplier": 1.0,
              "max-grad-norm": 1.0, "private": 1}
    values.update(metrics)
    return RecordDict({"arrays": arrays if arrays is not None else _arrays(), "metrics": MetricRecord(values)})


def _evaluate(**metrics: object) -> RecordDict:
    return RecordDict({"metrics": MetricRecord(dict(metrics))})


def _with_trailing_bytes() -> Array:
    good = Array(MODEL["w"] + 1)
    return Array(dtype=good.dtype, shape=good.shape, stype=good.stype, data=good.data + SECRET.encode())


def _handler(content: RecordDict | Error) -> Callable[[Message, Context], Message]:
    return lambda msg, context: Message(content, reply_to=msg)


@pytest.fixture
def context(tmp_path: Path) -> Context:
    return Context(1, 7, {"workspace": str(tmp_path)}, RecordDict(), {})


ALLOWED = {
    "query: consent answer": ("query", _consent()),
    "query: consent off with its code": ("query", _consent(consent=False, reason="policy-missing")),
    "train: model and metrics": ("train", _train()),
    "train: a subset of the metrics": ("train", RecordDict({"arrays": _arrays(),
                                                             "metrics": MetricRecord({"epsilon": 3.0})})),
    "evaluate: no metrics": ("evaluate", _evaluate()),
    "refusal with its code": ("train", Error(REFUSED_CODE, "refused: consent-off")),
}


@pytest.mark.parametrize("message_type, content", ALLOWED.values(), ids=ALLOWED.keys())
def test_allowed_replies_leave_unchanged(context: Context, tmp_path: Path, message_type: str,
                                         content: RecordDict | Error) -> None:
    request = _request(message_type)
    expected = _handler(content)(request, context)
    reply = egress_check(request, context, lambda m, c: expected)
    assert reply is expected
    assert not (tmp_path / AUDIT_FILE).exists()


BLOCKED = {
    "query: extra consent field": ("query", _consent(note=SECRET)),
    "query: free text as the reason": ("query", _consent(reason=SECRET)),
    "query: free text as the label": ("query", _consent(label=SECRET)),
    "query: a label that is too long": ("query", _consent(label="a" * 65)),
    "query: consent as a string": ("query", _consent(consent="yes")),
    "query: remaining budget as an int": ("query", _consent(**{"remaining-epsilon": 2})),
    "query: an extra record": ("query", RecordDict({**_consent(), "debug": ConfigRecord({"text": SECRET})})),
    "train: a config record": ("train", RecordDict({**_train(), "config": ConfigRecord({"text": SECRET})})),
    "train: metric not allowed": ("train", _train(**{"top-member-messages": 412})),
    "train: metric that is a list": ("train", _train(**{"epsilon": [2.0, 2.2]})),
    "train: the training-set size": ("train", _train(**{"num-examples": 40})),
    "train: the training loss": ("train", _train(**{"train-loss": 2.1})),
    "evaluate: a held-out loss": ("evaluate", _evaluate(**{"eval-loss": 2.0})),
    "evaluate: a held-out accuracy": ("evaluate", _evaluate(**{"eval-accuracy": 0.3})),
    "train: extra array": ("train", _train(_arrays(**{SECRET: Array(np.zeros(1, dtype=np.float32))}))),
    "train: array of another shape": ("train", _train(_arrays(w=Array(np.zeros((3, 3), dtype=np.float32))))),
    "train: array of another dtype": ("train", _train(_arrays(b=Array(np.zeros(3, dtype=np.float64))))),
    "train: bytes hidden after an array": ("train", _train(_arrays(w=_with_trailing_bytes()))),
    "evaluate: model arrays": ("evaluate", RecordDict({**_evaluate(), "arrays": _arrays()})),
    "evaluate: train metric": ("evaluate", _evaluate(epsilon=1.0)),
    "error with free text": ("train", Error(REFUSED_CODE, f"refused: could not parse {SECRET!r}")),
    "error with another code": ("evaluate", Error(2, "refused: consent-off")),
}


@pytest.mark.parametrize("message_type, content", BLOCKED.values(), ids=BLOCKED.keys())
def test_anything_else_is_refused_and_audited(context: Context, tmp_path: Path, message_type: str,
                                              content: RecordDict | Error) -> None:
    reply = egress_check(_request(message_type), context, _handler(content))
    assert reply.has_error() and reply.error.code == REFUSED_CODE and reply.error.reason == BLOCKED_REASON
    assert not reply.has_content()
    (entry,) = read_entries(tmp_path / AUDIT_FILE)
    assert entry["kind"] == "egress-blocked" and entry["message_type"] == message_type and entry["round"] == "3"
    assert entry["violations"]
    assert verify(tmp_path / AUDIT_FILE).ok


def test_a_reply_that_changes_its_group_id_is_refused(context: Context) -> None:
    def handle(msg: Message, ctx: Context) -> Message:
        reply = Message(_evaluate(), reply_to=msg)
        reply.metadata.group_id = SECRET
        return reply
    assert egress_check(_request("evaluate"), context, handle).error.reason == BLOCKED_REASON


def test_an_exception_text_never_leaves(context: Context, tmp_path: Path) -> None:
    def crash(msg: Message, ctx: Context) -> Message:
        raise ValueError(f"cannot parse line 3: {SECRET}")
    reply = egress_check(_request("train"), context, crash)
    assert reply.error.reason == BLOCKED_REASON and SECRET not in reply.error.reason
    (entry,) = read_entries(tmp_path / AUDIT_FILE)
    assert entry["violations"] == ["handler raised ValueError"]


def test_a_reply_is_refused_even_when_its_audit_entry_cannot_be_written(tmp_path: Path) -> None:
    (tmp_path / AUDIT_FILE).write_text("not json\n", encoding="utf-8")  # a damaged log refuses appends
    context = Context(1, 7, {"workspace": str(tmp_path)}, RecordDict(), {})
    reply = egress_check(_request("query"), context, _handler(_consent(reason=SECRET)))
    assert reply.error.reason == BLOCKED_REASON


def test_optins_clientapp_runs_every_reply_through_the_check(tmp_path: Path) -> None:
    """The real ClientApp: normal replies pass; a malformed request is refused by the ingress check; a crash
    inside a handler comes out as the fixed refusal."""
    (folder,) = make_synthetic_federation(tmp_path, SyntheticSpec(num_workspaces=1, seed=2, min_messages=40,
                                                                  max_messages=60), opted_out=[]).folders
    config = RunConfig(local_steps=2, batch_size=8, seed=2)
    assert send_query(folder, config)["consent"] is True
    assert not send_train(folder, config).has_error()
    wrong_model = RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in MODEL.items()}),
                              "config": train_config()})
    reply = send(folder, "train", config, wrong_model)  # the ingress check refuses it before the handler
    assert reply.error.reason == "refused: bad-request"
    kinds = [e["kind"] for e in read_entries(folder / AUDIT_FILE)]
    assert kinds == ["consent", "release", "refusal"]
    # A node its operator misconfigured: the error's text names the bad value; only its fixed code leaves.
    context = Context(1, 7, {"workspace": str(folder), CANARIES_KEY: f"[{SECRET!r}"}, RecordDict(),
                      config.to_mapping())
    request = stamp(Message(RecordDict(), 7, "query", group_id="1"))
    reply = client_app(request, context)
    assert reply.error.reason == "refused: bad-config" and SECRET not in str(reply.error.reason)
