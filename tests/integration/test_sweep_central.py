"""A central-DP sweep cell whose noise drowns the model says so: in the command's output and the report."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from experiments.cli.app import app

SWEEP = """
name = "drowned"
target-epsilons = [1.0]
seeds = [0]
dp-modes = ["central"]
delta = 1e-4

[run]
num-rounds = 2
local-steps = 1
sample-rate = 0.25
batch-size = 16

[[datasets]]
kind = "synthetic"
num-workspaces = 2
min-messages = 40
max-messages = 50
"""


def test_central_noise_that_drowns_the_update_is_flagged(tmp_path: Path) -> None:
    config = tmp_path / "drowned.toml"
    config.write_text(SWEEP, encoding="utf-8")
    result = CliRunner().invoke(app, ["sweep", str(config), "--results", str(tmp_path / "results")],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "results").iterdir()
    (cell,) = (run_dir / "cells").iterdir()
    ratios = json.loads((cell / "metrics.json").read_text())["central"]["signal_to_noise"]
    assert len(ratios) == 2 and max(ratios) < 1  # 2 workspaces at ε = 1: the noise is far larger than the update
    assert f"warning: cell {cell.name}: central DP noise outweighed" in " ".join(result.output.split())
    assert "**Central DP noise drowned the model** in 1 cell(s)" in (run_dir / "report.md").read_text()
