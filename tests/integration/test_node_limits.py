"""A hostile server's sizes and names, and odd policy files, through the real ClientApp: each is refused with the
code naming its real cause, at once, and the node keeps serving."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from flwr.app import RecordDict

from experiments.runners.in_process import make_synthetic_federation
from federated.audit import AUDIT_FILE, read_entries, verify
from federated.data import SyntheticSpec
from federated.privacy.ledger import LEDGER_FILE
from federated.privacy.policy import POLICY_FILE
from tests.conftest import SMALL_CONFIG
from tests.node_calls import send, send_query, send_train, train_config


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    spec = SyntheticSpec(num_workspaces=1, seed=4, min_messages=100, max_messages=100)
    return make_synthetic_federation(tmp_path, spec, opted_out=[]).folders[0]


@pytest.fixture
def no_hang() -> Iterator[None]:
    """Fail (instead of hanging the suite) if the node blocks for a minute."""
    def expire(*_: object) -> None:
        raise TimeoutError("the node blocked")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def refusals(folder: Path) -> list[dict]:
    return [e for e in read_entries(folder / AUDIT_FILE) if e["kind"] == "refusal"]


def test_a_huge_seq_len_is_refused_before_any_model_is_built(folder: Path) -> None:
    config = replace(SMALL_CONFIG, seq_len=4_000_000)  # ~51 GB of encoding if the node went along
    start = time.monotonic()
    for message_type in ("train", "query"):
        reply = send(folder, message_type, config, RecordDict({}))
        assert reply.has_error() and reply.error.reason == "refused: bad-config", message_type
    assert time.monotonic() - start < 60
    details = [e["detail"] for e in refusals(folder)]
    assert len(details) == 2 and all("seq-len 4000000 is over this node's limit of 1024" in d for d in details)
    assert not send_train(folder, SMALL_CONFIG).has_error()  # the node keeps serving


def test_the_operator_sets_the_node_limits_and_the_server_cannot(folder: Path) -> None:
    tight = {"max-seq-len": "32", "max-local-steps": "2"}
    reply = send_train(folder, SMALL_CONFIG, node_config=tight)
    assert reply.error.reason == "refused: bad-config"
    assert "seq-len 64 is over this node's limit of 32 (node config 'max-seq-len')" in refusals(folder)[-1]["detail"]
    reply = send_train(folder, replace(SMALL_CONFIG, seq_len=32), node_config=tight, **{"local-steps": 3})
    assert reply.error.reason == "refused: bad-config"
    assert "local-steps 3 is over this node's limit of 2" in refusals(folder)[-1]["detail"]
    assert not (folder / LEDGER_FILE).exists()
    assert not send_train(folder, replace(SMALL_CONFIG, seq_len=32), node_config=tight,
                          **{"local-steps": 2}).has_error()


def test_more_local_steps_than_the_node_runs_are_refused_in_the_query_and_the_train(folder: Path) -> None:
    reply = send(folder, "query", SMALL_CONFIG, RecordDict({"config": train_config(**{"local-steps": 10**9})}))
    assert reply.error.reason == "refused: bad-config"
    reply = send_train(folder, SMALL_CONFIG, **{"local-steps": 10**9})
    assert reply.error.reason == "refused: bad-config"
    assert "local-steps 1000000000 is over this node's limit of 1000" in refusals(folder)[-1]["detail"]


@pytest.mark.parametrize("key, value", [("federation", "f" * 10_000_000), ("task", "t" * 1_000)])
def test_overlong_names_in_the_run_config_are_refused_without_being_logged_whole(folder: Path, key: str,
                                                                                 value: str) -> None:
    config = replace(SMALL_CONFIG, **{key: value})
    reply = send(folder, "query", config, RecordDict({}))
    assert reply.error.reason == "refused: bad-config"
    assert (folder / AUDIT_FILE).stat().st_size < 10_000


def test_a_huge_group_id_is_cut_in_the_audit_log(folder: Path) -> None:
    send(folder, "query", SMALL_CONFIG, RecordDict({}), group_id="7" * 20_000_000)
    send(folder, "query.members", SMALL_CONFIG, RecordDict({}), group_id="7" * 20_000_000)
    assert (folder / AUDIT_FILE).stat().st_size < 10_000
    assert verify(folder / AUDIT_FILE).ok


def test_a_message_type_with_an_action_is_not_offered(folder: Path) -> None:
    for message_type in ("query.default", "train.default", "evaluate.default"):
        reply = send(folder, message_type, SMALL_CONFIG, RecordDict({}))
        assert reply.error.reason == "refused: unsupported-message-type", message_type


def test_an_empty_workspace_trains_noise_only_rather_than_refusing(folder: Path) -> None:
    # Refusing would tell the server the workspace holds no message: a signal outside every ε.
    for channel in (folder / "data").iterdir():
        if channel.is_dir():
            for day in channel.iterdir():
                day.unlink()
    assert send_query(folder, SMALL_CONFIG)["can-afford"] is True
    assert not send_train(folder, SMALL_CONFIG).has_error()


@pytest.mark.parametrize("make, detail", [
    (lambda p: p.write_text("consent = true\nmax_epsilon = " + "9" * 400 + "\n"), "max_epsilon"),
    (lambda p: p.write_text("consent = true\ndelta = " + "9" * 5_000 + "\n"), "not a valid TOML file"),
    (lambda p: p.write_bytes(b"\xef\xbb\xbfconsent = true\n"), "byte-order mark (BOM)"),
    (lambda p: os.mkfifo(p), "is a FIFO; expected a regular file"),
    (lambda p: p.symlink_to("/dev/zero"), "is a character device; expected a regular file"),
    (lambda p: p.write_text("consent = true\n# " + "x" * 100_000 + "\n"), "over the node's limit of 64 KiB"),
])
def test_an_odd_policy_file_is_policy_invalid_at_once(folder: Path, no_hang: None, make, detail: str,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    policy = folder / POLICY_FILE
    policy.unlink()
    make(policy)
    answer = send_query(folder, SMALL_CONFIG)
    assert answer["consent"] is False and answer["reason"] == "policy-invalid"
    assert detail in caplog.text
    reply = send_train(folder, SMALL_CONFIG)
    assert reply.error.reason == "refused: policy-invalid"
