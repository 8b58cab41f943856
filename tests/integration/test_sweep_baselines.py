"""A sweep's baselines: unigram and bigram models and each workspace trained alone, on exactly the held-out split
each cell's nodes evaluated the federated model on; never an alone run for an opted-out workspace; the report,
CSV and plots show loss beside accuracy for the federated model and every baseline."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from experiments.research.sweep import load_and_run
from experiments.research.sweep_config import load_sweep
from experiments.runners.local_evaluation import evaluate_locally
from federated.audit import AUDIT_FILE, read_entries
from federated.errors import ConfigError
from federated.privacy.ledger import LEDGER_FILE, Ledger
from federated.privacy.node_secret import SECRET_FILE
from federated.tasks.model_file import load_model

SWEEP = """
name = "baselines"
target-epsilons = [inf, 4.0]
seeds = [0]
dp-modes = ["local"]
delta = 1e-4
baselines = ["alone"]

[run]
num-rounds = 2
local-steps = 2
sample-rate = 0.25
batch-size = 16
lr = 0.1

[[datasets]]
kind = "synthetic"
num-workspaces = 3
min-messages = 60
max-messages = 90
seed = 4
opted-out = ["ws02-gardening"]
"""
CELLS = ("synthetic-none-epsinf-seed0", "synthetic-local-eps4-seed0")
CONSENTING = ("ws00-cooking", "ws01-devops")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("baselines")
    config = root / "baselines.toml"
    config.write_text(SWEEP, encoding="utf-8")
    outcome = load_and_run(config, root / "results", None)
    assert sorted(outcome.ran) == sorted(CELLS)
    return outcome.run_dir


def metrics(run_dir: Path, cell: str) -> dict:
    return json.loads((run_dir / "cells" / cell / "metrics.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("cell", CELLS)
def test_ngram_baselines_are_those_of_each_workspaces_own_split_in_the_cell_copy(run_dir: Path, cell: str) -> None:
    baselines = metrics(run_dir, cell)["baselines"]
    assert sorted(baselines["workspaces"]) == list(CONSENTING)
    model = load_model(run_dir / "cells" / cell / "run")
    for name in CONSENTING:
        recorded = baselines["workspaces"][name]
        # Recomputed through optin evaluate's path: the node's split of this cell's copy, scored anew.
        local = evaluate_locally(model, run_dir / "cells" / cell / "workspaces" / name)
        assert not local.secret_created
        for ngram in ("unigram", "bigram"):
            assert recorded[ngram]["loss"] == pytest.approx(local.scores[ngram]["loss"], rel=1e-12)
            assert recorded[ngram]["accuracy"] == pytest.approx(local.scores[ngram]["accuracy"], rel=1e-12)
            assert recorded[ngram]["held_out"] == local.held_out_messages
            assert recorded[ngram]["held_out_bytes"] == local.held_out_bytes
        # The same split the node evaluated the final global model on (its audit log's figures).
        assert recorded["federated"]["held_out"] == local.held_out_messages
        assert recorded["federated"]["loss"] == pytest.approx(local.scores["model"]["loss"], rel=1e-5)
    for ngram in ("unigram", "bigram"):  # held-out-weighted over the workspaces
        weights = {n: baselines["workspaces"][n][ngram]["held_out"] for n in CONSENTING}
        expected = sum(baselines["workspaces"][n][ngram]["loss"] * weights[n] for n in CONSENTING) / sum(
            weights.values())
        assert baselines["means"][ngram]["loss"] == pytest.approx(expected)
        assert baselines["means"][ngram]["held_out"] == sum(weights.values())
    assert baselines["means"]["federated"]["loss"] == pytest.approx(metrics(run_dir, cell)["rounds"][-1]["eval_loss"])


@pytest.mark.parametrize("cell", CELLS)
def test_each_consenting_workspace_and_no_other_runs_alone_on_its_cell_split_with_a_fresh_budget(
        run_dir: Path, cell: str) -> None:
    summary = metrics(run_dir, cell)
    folder = run_dir / "cells" / cell
    assert sorted(p.name for p in (folder / "alone").iterdir()) == list(CONSENTING)  # never the opted-out one
    epsilons = {w["name"]: w["epsilon"] for w in summary["workspaces"]}
    cell_run_ids = {str(e["run_id"]) for name in CONSENTING for e in read_entries(folder / "workspaces" / name /
                                                                                   AUDIT_FILE) if "run_id" in e}
    for name in CONSENTING:
        figures = summary["baselines"]["workspaces"][name]
        alone, copy = figures["alone"], folder / "alone" / name / "workspaces" / name
        assert sorted(p.name for p in (folder / "alone" / name / "workspaces").iterdir()) == [name]
        # Same node secret, so the same held-out split: as many held-out messages as in the federated cell.
        assert (copy / SECRET_FILE).read_bytes() == (folder / "workspaces" / name / SECRET_FILE).read_bytes()
        assert alone["held_out"] == figures["federated"]["held_out"] > 0
        assert 0 <= alone["accuracy"] <= 1 and alone["loss"] > 0
        # A fresh ledger and audit log: only the alone run's own releases, and none of the cell's run.
        with Ledger(copy / LEDGER_FILE) as ledger:
            assert len(ledger.releases()) == alone["releases"] == 2
        alone_run_ids = {str(e["run_id"]) for e in read_entries(copy / AUDIT_FILE) if "run_id" in e}
        assert len(alone_run_ids) == 1 and not alone_run_ids & cell_run_ids
        # The same mechanism as the workspace ran in the federation, so the same ε.
        assert alone["epsilon"] == pytest.approx(epsilons[name])
    assert summary["baselines"]["means"]["alone"]["workspaces"] == len(CONSENTING)


def test_report_csv_and_plots_show_loss_and_every_baseline(run_dir: Path) -> None:
    report = (run_dir / "report.md").read_text(encoding="utf-8")
    assert "## Baselines" in report and "### synthetic" in report
    assert ("| DP mode | target ε | seeds | initial loss | initial accuracy | federated loss | federated accuracy | "
            "alone loss | alone accuracy | "
            "unigram loss | unigram accuracy | bigram loss | bigram accuracy |") in report
    assert "| dataset | DP mode | target ε | seeds | loss | accuracy |" in report
    assert "loss in nats per byte" in report and "held-out split" in report
    none = metrics(run_dir, CELLS[0])["baselines"]["means"]
    assert f"| none | ∞ | 1 | {none['federated']['loss']:.4f} ± 0.0000 |" in report
    with (run_dir / "results.csv").open(encoding="utf-8") as f:
        rows = {r["cell"]: r for r in csv.DictReader(f)}
    for cell in CELLS:
        means = metrics(run_dir, cell)["baselines"]["means"]
        for name in ("alone", "unigram", "bigram"):
            assert float(rows[cell][f"{name}_loss"]) == pytest.approx(means[name]["loss"])
            assert float(rows[cell][f"{name}_accuracy"]) == pytest.approx(means[name]["accuracy"])
        assert float(rows[cell]["initial_loss"]) > float(rows[cell]["final_loss"]) > 0
    for plot in ("plots/loss_vs_epsilon.png", "plots/accuracy_vs_epsilon.png"):
        assert (run_dir / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("value, expected", [('["alone", "alone"]', "distinct baselines"),
                                             ('["solo"]', "'alone'"), ('"alone"', "a list")])
def test_bad_baselines_name_file_key_and_expectation(tmp_path: Path, value: str, expected: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(SWEEP.replace('baselines = ["alone"]', f"baselines = {value}"), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_sweep(path)
    assert str(path) in str(info.value) and "'baselines'" in str(info.value) and expected in str(info.value)


def test_alone_runs_are_off_by_default(tmp_path: Path) -> None:
    path = tmp_path / "plain.toml"
    path.write_text(SWEEP.replace('baselines = ["alone"]\n', ""), encoding="utf-8")
    assert load_sweep(path).baselines == ()


def test_a_reply_task_sweep_reports_the_majority_class_its_nodes_logged_and_no_ngrams(tmp_path: Path) -> None:
    path = tmp_path / "reply.toml"
    path.write_text(SWEEP.replace("[inf, 4.0]", "[inf]").replace('baselines = ["alone"]\n', "")
                    .replace("lr = 0.1", 'lr = 0.1\ntask = "reply"'), encoding="utf-8")
    outcome = load_and_run(path, tmp_path / "results", None)
    (cell,) = outcome.ran
    baselines = metrics(outcome.run_dir, cell)["baselines"]
    logged = {}
    for name in CONSENTING:
        entries = [e["kept_local"] for e in read_entries(outcome.run_dir / "cells" / cell / "workspaces" / name /
                                                          AUDIT_FILE) if e["kind"] == "evaluation"]
        logged[name] = (entries[-1]["majority_accuracy"], entries[-1]["held_out"])
        assert baselines["workspaces"][name]["majority"]["accuracy"] == logged[name][0]
        assert set(baselines["workspaces"][name]) == {"federated", "majority"}  # byte n-grams mean nothing here
    expected = sum(a * n for a, n in logged.values()) / sum(n for _, n in logged.values())
    assert baselines["means"]["majority"]["accuracy"] == pytest.approx(expected)
    report = (outcome.run_dir / "report.md").read_text(encoding="utf-8")
    assert "| federated loss | federated accuracy | majority accuracy |" in report
    assert "No alone runs" in report
