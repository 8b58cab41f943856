"""The node's DP holds against a hostile server: each test plays one attack against the real ClientApp.

- Replay: the server resends a round, or runs again with the same seed, to subtract the noise.
- Hostile model: NaN or huge weights that would turn the release into a membership signal.
- Side channels: reply fields that depend on the workspace's messages (counts, losses, evaluation).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ArrayRecord, RecordDict

from experiments.runners.in_process import make_synthetic_federation
from federated.audit import AUDIT_FILE, read_entries, verify
from federated.data import SyntheticSpec, load_workspace
from federated.privacy.ledger import LEDGER_FILE, Ledger
from federated.privacy.node_secret import node_secret
from federated.protocol import TRAIN_METRICS
from federated.tasks import get_task
from tests.conftest import SMALL_CONFIG
from tests.node_calls import send, send_train, train_config

SPEC = SyntheticSpec(num_workspaces=2, seed=5, min_messages=40, max_messages=400)


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, ...]:
    return make_synthetic_federation(tmp_path / "ws", SPEC, opted_out=[]).folders


def released(reply) -> dict[str, np.ndarray]:
    assert not reply.has_error(), reply.error
    return {k: v.numpy() for k, v in reply.content["arrays"].items()}


def ledger_rows(folder: Path) -> int:
    if not (folder / LEDGER_FILE).exists():
        return 0
    with Ledger(folder / LEDGER_FILE) as ledger:
        return len(ledger.releases())


def test_a_replayed_round_is_refused_so_the_server_never_sees_two_views_of_one_update(folders) -> None:
    folder = folders[0]
    first = send_train(folder, SMALL_CONFIG, run_id=3, server_round=1)
    assert not first.has_error()
    again = send_train(folder, SMALL_CONFIG, run_id=3, server_round=1, **{"max-grad-norm": 0.5})
    assert again.has_error() and again.error.reason == "refused: round-already-released"
    assert ledger_rows(folder) == 1


def test_every_server_known_input_twice_gives_different_releases(folders, tmp_path: Path) -> None:
    """Identical workspaces (a copy), identical run config and seed, identical model and round: the releases differ,
    so no server can regenerate the sampling and noise from what it knows and subtract them."""
    node_secret(folders[0])  # the twin shares the split too: only the randomness could differ
    twin = tmp_path / "twin"
    shutil.copytree(folders[0], twin)
    a = released(send_train(folders[0], SMALL_CONFIG, run_id=9, server_round=1))
    b = released(send_train(twin, SMALL_CONFIG, run_id=9, server_round=1))
    c = released(send_train(folders[0], SMALL_CONFIG, run_id=10, server_round=1))
    for key in a:
        assert not np.array_equal(a[key], b[key]) and not np.array_equal(a[key], c[key]), key


def test_a_repeatable_seed_is_the_operators_and_marks_every_release_not_private(folders, tmp_path: Path) -> None:
    node_secret(folders[0])  # the twin shares the split too: only the randomness could differ
    twin = tmp_path / "twin"
    shutil.copytree(folders[0], twin)
    seeded = {"repeatable-seed": "17"}
    first = send_train(folders[0], SMALL_CONFIG, run_id=4, node_config=seeded)
    second = send_train(twin, SMALL_CONFIG, run_id=4, node_config=seeded)
    assert all(np.array_equal(released(first)[k], released(second)[k]) for k in released(first))
    assert first.content["metrics"]["private"] == 0
    (entry,) = [e for e in read_entries(folders[0] / AUDIT_FILE) if e["kind"] == "release"]
    assert entry["private"] is False
    default = send_train(folders[1], SMALL_CONFIG, run_id=4)
    assert default.content["metrics"]["private"] == 1


def _hostile_arrays(value: float, row: int = ord("~")) -> ArrayRecord:
    state = get_task(SMALL_CONFIG.task, SMALL_CONFIG.seq_len).build_model(0).state_dict()
    state["tok.weight"][row] = value
    return ArrayRecord(state)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 1e30])
@pytest.mark.parametrize("message_type", ["train", "evaluate"])
def test_a_hostile_model_is_refused_before_any_data_is_read(folders, value: float, message_type: str) -> None:
    """The refusal depends on the model alone: the same whether or not the workspace holds the byte."""
    content = RecordDict({"arrays": _hostile_arrays(value), "config": train_config()})
    reply = send(folders[0], message_type, SMALL_CONFIG, content)
    assert reply.has_error() and reply.error.reason == "refused: bad-request"
    (entry,) = [e for e in read_entries(folders[0] / AUDIT_FILE) if e["kind"] == "refusal"]
    assert "tok.weight" in entry["detail"]
    assert ledger_rows(folders[0]) == 0


def test_train_replies_carry_only_values_independent_of_the_workspace(folders) -> None:
    """Two workspaces of different sizes give the same metrics: no count, loss or rate reveals their data."""
    sizes = [len(load_workspace(folder / "data").messages) for folder in folders]
    assert sizes[0] != sizes[1]
    replies = [send_train(folder, SMALL_CONFIG, run_id=5) for folder in folders]
    metrics = [dict(reply.content["metrics"]) for reply in replies]
    assert set(metrics[0]) == set(TRAIN_METRICS)
    assert metrics[0] == metrics[1]
    assert set(replies[0].content.keys()) == {"arrays", "metrics"}


def test_evaluation_stays_on_the_node_and_is_audited(folders) -> None:
    arrays = ArrayRecord(get_task(SMALL_CONFIG.task, SMALL_CONFIG.seq_len).build_model(0).state_dict())
    for server_round in range(3):
        reply = send(folders[0], "evaluate", SMALL_CONFIG, RecordDict({"arrays": arrays}),
                     group_id=str(server_round))
        assert not reply.has_error() and dict(reply.content["metrics"]) == {}
    entries = [e for e in read_entries(folders[0] / AUDIT_FILE) if e["kind"] == "evaluation"]
    assert [e["round"] for e in entries] == ["0", "1", "2"]
    assert all(e["sent"] == [] and 0 <= e["kept_local"]["accuracy"] <= 1 for e in entries)
    assert verify(folders[0] / AUDIT_FILE).ok
