"""The main job end to end through the CLI: tables, metrics.json, plot, and clean errors."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from experiments.cli.app import app


@pytest.mark.slow
def test_demo_writes_results_and_prints_both_tables(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["demo", "--workspaces", "4", "--opted-out", "1", "--rounds", "1",
                                      "--local-steps", "3", "--results", str(tmp_path)])
    assert result.exit_code == 0, result.output
    (run_dir,) = tmp_path.iterdir()
    assert run_dir.name.endswith("-demo")
    for name in ("metrics.json", "config.toml", "run.log", "plots/accuracy.png", "model.safetensors", "model.json"):
        assert (run_dir / name).stat().st_size > 0
    assert (run_dir / "plots/accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Global model per round" in result.output and "Workspaces" in result.output
    assert "policy-missing" in result.output and str(run_dir) in result.output.replace("\n", "")
    # The losses and accuracies come from the workspaces' own logs, not from the server's view.
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert all(not figures for r in metrics["rounds"] for figures in r["evaluated"].values())
    local = {r["round"]: r for r in metrics["node_local"]["rounds"]}
    assert local[0]["evaluating"] == local[1]["evaluating"] == 3 and local[0]["held-out"] > 0
    assert 0 <= local[1]["eval-accuracy"] <= 1 and local[1]["training"] == 3


def test_demo_rejects_bad_arguments_in_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["demo", "--workspaces", "2", "--opted-out", "3", "--results", str(tmp_path)])
    assert result.exit_code == 1
    assert "opted-out: expected between 0 and 2, got 3" in result.output
    assert "Traceback" not in result.output
    assert not list(tmp_path.iterdir())  # nothing was created for a rejected run
