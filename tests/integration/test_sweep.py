"""A small local-DP sweep end to end: per-cell results, CSV, plots, report; node-reported ε against the
target and against dp-accounting; and resumability (a second invocation runs no finished cell)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from dp_accounting import dp_event
from dp_accounting.rdp.rdp_privacy_accountant import RdpAccountant
from typer.testing import CliRunner

from experiments.cli.app import app
from experiments.research.sweep import load_and_run
from federated.privacy.ledger import LEDGER_FILE, Ledger

SWEEP = """
name = "tiny"
target-epsilons = [8.0, 2.0]
seeds = [0]
dp-modes = ["local"]
delta = 1e-4

[run]
num-rounds = 2
local-steps = 3
sample-rate = 0.25
batch-size = 16
lr = 0.1

[[datasets]]
kind = "synthetic"
num-workspaces = 2
min-messages = 60
max-messages = 90
seed = 4
"""
CELLS = ["synthetic-local-eps8-seed0", "synthetic-local-eps2-seed0"]


def cell_files(run_dir: Path) -> dict[str, tuple[int, bytes]]:
    """Every file of every cell (metrics, ledgers, audit logs, server results): mtime and content."""
    return {str(p.relative_to(run_dir)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted((run_dir / "cells").rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    root = tmp_path_factory.mktemp("sweep")
    config = root / "tiny.toml"
    config.write_text(SWEEP, encoding="utf-8")
    result = CliRunner().invoke(app, ["sweep", str(config), "--results", str(root / "results")])
    assert result.exit_code == 0, result.output
    (run_dir,) = (root / "results").iterdir()
    return config, run_dir, result.output


@pytest.mark.slow
def test_every_cell_has_metrics_and_the_sweep_has_csv_plots_and_report(first_run) -> None:
    _, run_dir, output = first_run
    assert f"Results: {run_dir}" in output.replace("\n", "")
    for cell in CELLS:
        metrics = json.loads((run_dir / "cells" / cell / "metrics.json").read_text())
        assert metrics["cell"]["id"] == cell and len(metrics["rounds"]) == 3
        assert all(r["trained"] == 2 for r in metrics["rounds"][1:])
    with (run_dir / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["cell"] for r in rows) == sorted(CELLS)
    assert {r["accountant"] for r in rows} == {"rdp"}
    for plot in ("plots/accuracy_vs_epsilon.png", "plots/accuracy_vs_round.png"):
        assert (run_dir / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (run_dir / "report.md").read_text()
    for phrase in ("accountant `rdp`", "add/remove one message of one workspace", "Poisson over messages",
                   "amplification by sampling is claimed", "δ = 0.0001", "q = 0.25", "q is public and the same "
                   "for every workspace", "never sees them", *CELLS):
        assert phrase in report
    for cell in CELLS:  # held-out and training figures, read back from the workspaces' audit logs
        rounds = json.loads((run_dir / "cells" / cell / "metrics.json").read_text())["rounds"]
        assert all(0 <= r["eval_accuracy"] <= 1 and r["held_out"] > 0 for r in rounds)
        assert all(r["train_loss"] > 0 for r in rounds[1:])
    assert all(r["final_accuracy"] and r["initial_accuracy"] and r["final_loss"] for r in rows)
    for cell in CELLS:  # n-gram baselines always; alone runs only when asked for
        baselines = json.loads((run_dir / "cells" / cell / "metrics.json").read_text())["baselines"]
        assert set(baselines["means"]) == {"federated", "unigram", "bigram"}
        assert not (run_dir / "cells" / cell / "alone").exists()
    assert all(r["unigram_loss"] and r["bigram_accuracy"] and r["alone_loss"] == "" for r in rows)
    assert "## Baselines" in report and "No alone runs" in report


@pytest.mark.slow
def test_node_reported_epsilon_is_at_most_the_target_and_close_to_it(first_run) -> None:
    _, run_dir, _ = first_run
    for cell, target in zip(CELLS, (8.0, 2.0)):
        metrics = json.loads((run_dir / "cells" / cell / "metrics.json").read_text())
        # One public sampling rate, so one calibrated noise multiplier for workspaces of different sizes.
        assert {w["sample_rate"] for w in metrics["workspaces"]} == {0.25}
        assert len({w["noise_multiplier"] for w in metrics["workspaces"]}) == 1
        for workspace in metrics["workspaces"]:
            with Ledger(run_dir / "cells" / cell / "workspaces" / workspace["name"] / LEDGER_FILE) as ledger:
                releases = ledger.releases()
            assert len(releases) == 2 and all(r.steps == 3 for r in releases)
            node_epsilon = releases[-1].epsilon_total  # what the node recorded and reported to the server
            assert target - 0.01 <= node_epsilon <= target  # the calibration tolerance
            assert workspace["epsilon"] == node_epsilon and workspace["epsilon_ledger_rdp"] == node_epsilon
            # Recomputed by Google's dp-accounting from the mechanism the node actually ran.
            accountant = RdpAccountant()
            for r in releases:
                accountant.compose(dp_event.PoissonSampledDpEvent(r.sample_rate, dp_event.GaussianDpEvent(
                    r.noise_multiplier)), r.steps)
            assert node_epsilon == pytest.approx(accountant.get_epsilon(1e-4), rel=0.01)
        assert metrics["epsilon"]["local"] == max(w["epsilon"] for w in metrics["workspaces"])
        assert metrics["central"] is None


@pytest.mark.slow
def test_a_second_invocation_runs_no_finished_cell_and_reruns_an_unfinished_one(first_run) -> None:
    config, run_dir, _ = first_run
    before = cell_files(run_dir)
    again = load_and_run(config, run_dir.parent, run_dir)
    assert again.ran == () and sorted(again.skipped) == sorted(CELLS)
    assert cell_files(run_dir) == before  # no cell file was touched, let alone rewritten

    # An interrupted cell (no metrics.json) is rerun from scratch; the finished one is kept as it was.
    (run_dir / "cells" / CELLS[1] / "metrics.json").unlink()
    third = load_and_run(config, run_dir.parent, run_dir)
    assert third.ran == (CELLS[1],) and third.skipped == (CELLS[0],)
    after = cell_files(run_dir)
    kept = {k: v for k, v in before.items() if k.startswith(f"cells/{CELLS[0]}/")}
    assert kept and all(after[k] == v for k, v in kept.items())
    rerun = json.loads((run_dir / "cells" / CELLS[1] / "metrics.json").read_text())
    # Fresh ledgers: the rerun spent its own budget, not on top of the interrupted attempt's.
    assert all(w["releases"] == 2 and w["epsilon"] <= 2.0 for w in rerun["workspaces"])
    assert not math.isinf(rerun["epsilon"]["local"])


@pytest.mark.slow
def test_no_dp_cells_run_and_report_infinite_epsilon(tmp_path: Path) -> None:
    config = tmp_path / "nodp.toml"
    config.write_text(SWEEP.replace("[8.0, 2.0]", "[inf]"), encoding="utf-8")
    outcome = load_and_run(config, tmp_path / "results", None)
    assert outcome.ran == ("synthetic-none-epsinf-seed0",)
    metrics = json.loads((outcome.run_dir / "cells" / outcome.ran[0] / "metrics.json").read_text())
    assert metrics["epsilon"]["local"] == "inf" and all(w["releases"] == 2 for w in metrics["workspaces"])
    with (outcome.run_dir / "results.csv").open() as f:
        assert next(csv.DictReader(f))["epsilon_local"] == "inf"
    assert "| synthetic | none | ∞ |" in (outcome.run_dir / "report.md").read_text()
