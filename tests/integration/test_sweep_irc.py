"""A sweep cell on real IRC workspaces (``federated.data.build_irc_workspaces``), if the corpus is present."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.research.sweep import load_and_run
from federated.data import resolve_data_root
from federated.data.paths import IRC_CORPUS

SWEEP = """
name = "irc"
target-epsilons = [8.0]
seeds = [0]
dp-modes = ["local"]
delta = 1e-5

[run]
num-rounds = 2
local-steps = 2
sample-rate = 0.05
batch-size = 16

[[datasets]]
kind = "irc"
path = "{root}"
partitions = ["rust", "stripe"]
max-lines = 400
"""


@pytest.mark.slow
def test_a_local_dp_cell_runs_on_irc_workspaces(tmp_path: Path) -> None:
    root = resolve_data_root()
    if not (root / IRC_CORPUS / "data").is_dir():
        pytest.skip(f"IRC corpus not found under {root} (set OPTIN_DATA to the folder holding {IRC_CORPUS}/)")
    config = tmp_path / "irc.toml"
    config.write_text(SWEEP.format(root=root.resolve()), encoding="utf-8")
    outcome = load_and_run(config, tmp_path / "results", None)
    metrics = json.loads((outcome.run_dir / "cells" / "irc-local-eps8-seed0" / "metrics.json").read_text())
    assert [w["name"] for w in metrics["workspaces"]] == ["rust", "stripe"]
    assert all(r["trained"] == 2 for r in metrics["rounds"][1:])
    assert all(7.9 <= w["epsilon"] <= 8.0 for w in metrics["workspaces"])
    assert metrics["rounds"][-1]["eval_accuracy"] > metrics["rounds"][0]["eval_accuracy"]
