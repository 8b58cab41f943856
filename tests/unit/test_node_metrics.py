"""Node-local figures read back from workspaces' audit logs: only the given run, held-out-weighted means."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from experiments.runners.node_metrics import NODE_LOCAL_KEY, merge_node_local, node_local, round_figures, run_ids
from federated.audit import AUDIT_FILE, AuditLog


def _evaluation(log: AuditLog, run_id: str, server_round: int, loss: float, accuracy: float, held_out: int) -> None:
    log.append("evaluation", run_id=run_id, round=str(server_round), sent=[],
               kept_local={"loss": loss, "accuracy": accuracy, "held_out": held_out})


def _release(log: AuditLog, run_id: str, server_round: int, loss: float | None) -> None:
    log.append("release", run_id=run_id, round=server_round, kept_local={"train_loss": loss, "zeroed_gradients": 0})


@pytest.fixture
def folders(tmp_path: Path) -> list[Path]:
    a, b, c = (tmp_path / name for name in ("ws-a", "ws-b", "ws-c"))
    for folder in (a, b, c):
        folder.mkdir()
    log_a, log_b = AuditLog(a / AUDIT_FILE), AuditLog(b / AUDIT_FILE)
    _evaluation(log_a, "old", 0, 9.0, 0.9, 100)  # an earlier run on the same folder: never mixed in
    log_a.append("consent", run_id="7", round="0", consent=True)
    _evaluation(log_a, "7", 0, 5.0, 0.0, 100)
    _evaluation(log_b, "7", 0, 6.0, 0.1, 300)
    _release(log_a, "7", 1, 3.0)
    _release(log_b, "7", 1, None)  # every Poisson batch empty: no loss
    _evaluation(log_a, "7", 1, 2.0, 0.4, 100)
    _evaluation(log_b, "7", 1, 3.0, 0.2, 300)
    return [a, b, c]  # c never took part (no audit log)


def test_merge_adds_per_workspace_and_weighted_round_figures(folders: list[Path], tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    server = {"config": {}, "rounds": [{"round": n, "metrics": {}} for n in range(3)], "nodes": {}}
    path.write_text(json.dumps(server), encoding="utf-8")
    merged = merge_node_local(path, folders, "7", {folders[0]: 100, folders[1]: 101})
    assert json.loads(path.read_text(encoding="utf-8")) == merged
    assert {k: v for k, v in merged.items() if k != NODE_LOCAL_KEY} == server  # the server's view is untouched
    section = node_local(merged)
    assert "never sees them" in section["note"] and section["run_id"] == "7"
    assert section["workspaces"]["ws-a"]["node_id"] == "100" and section["workspaces"]["ws-c"] == {
        "node_id": None, "rounds": {}}
    assert section["workspaces"]["ws-a"]["rounds"]["0"] == {"eval-loss": 5.0, "eval-accuracy": 0.0, "held-out": 100}
    rounds = round_figures(merged)
    assert sorted(rounds) == [0, 1, 2]  # every server round, even one nobody logged
    assert rounds[0]["eval-loss"] == pytest.approx((5.0 * 100 + 6.0 * 300) / 400)
    assert rounds[1]["eval-accuracy"] == pytest.approx((0.4 * 100 + 0.2 * 300) / 400)
    assert rounds[1]["held-out"] == 400 and rounds[1]["evaluating"] == 2
    assert rounds[1]["train-loss"] == 3.0 and rounds[1]["training"] == 2  # the empty-batch node has no loss
    assert rounds[0]["train-loss"] is None and rounds[2]["eval-accuracy"] is None


def test_run_ids_lists_every_run_that_released_or_evaluated(folders: list[Path]) -> None:
    assert run_ids(folders) == {"old", "7"}


def test_a_non_finite_result_is_left_out_of_the_mean(tmp_path: Path) -> None:
    folder = tmp_path / "ws"
    _evaluation(AuditLog(folder / AUDIT_FILE), "1", 0, math.nan, 0.5, 10)
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({"rounds": [{"round": 0}]}), encoding="utf-8")
    rounds = round_figures(merge_node_local(path, [folder], "1"))
    assert rounds[0]["evaluating"] == 0 and rounds[0]["eval-loss"] is None


def test_missing_section_names_the_fix() -> None:
    with pytest.raises(KeyError, match="merge_node_local"):
        node_local({"rounds": []})
