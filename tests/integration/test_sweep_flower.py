"""A sweep cell on Flower's Simulation Engine (run-mode "flower-sim"): the same cell results as in process,
and every field of the cell's run config travels through ``flwr run --run-config``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.runners.flower_simulation import LOG_FILE
from experiments.research.sweep import load_and_run

pytest.importorskip("ray", reason="Flower's Simulation Engine needs flwr[simulation] (Ray)")

SWEEP = """
name = "flower"
target-epsilons = [8.0]
seeds = [3]
dp-modes = ["both"]
delta = 1e-4
run-mode = "flower-sim"

[central]
clipping-norm = 2.0

[run]
num-rounds = 2
local-steps = 2
sample-rate = 0.25
batch-size = 16

[[datasets]]
kind = "synthetic"
num-workspaces = 2
min-messages = 60
max-messages = 80
"""


@pytest.mark.slow
def test_a_cell_runs_on_flowers_simulation_engine(tmp_path: Path) -> None:
    config = tmp_path / "flower.toml"
    config.write_text(SWEEP, encoding="utf-8")
    outcome = load_and_run(config, tmp_path / "results", None)
    assert outcome.ran == ("synthetic-both-eps8-seed3",)
    cell = outcome.run_dir / "cells" / outcome.ran[0]
    assert (cell / "run" / LOG_FILE).is_file()  # it went through `flwr run`
    metrics = json.loads((cell / "metrics.json").read_text())
    server = json.loads((cell / "run" / "metrics.json").read_text())
    assert server["config"] == metrics["run_config"]  # every field arrived, central DP settings included
    assert all(r["trained"] == 2 for r in metrics["rounds"][1:])
    assert 7.9 <= metrics["epsilon"]["local"] <= 8.0
    assert metrics["central"]["releases"] == 2 and 7.9 <= metrics["epsilon"]["central"] <= 8.0
    assert metrics["central"]["epsilon_server_rdp"] == metrics["epsilon"]["central"]
    # Held-out figures came back from the workspaces' audit logs (partition i = i-th sorted folder).
    assert all(r["eval_accuracy"] is not None and r["held_out"] > 0 for r in metrics["rounds"])
    assert all(r["train_loss"] is not None for r in metrics["rounds"][1:])
