"""``optin report``: the server's view of any finished run, and the node-local figures for whoever holds the
workspaces, as a run made without Optin's runners (``flwr run``) leaves it: only the results-dir."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clients.app import app as client_app
from experiments.cli.app import app
from experiments.runners.in_process import make_synthetic_federation
from federated.inprocess import run_in_process
from server.app import app as server_app
from tests.conftest import SMALL_CONFIG, SMALL_SPEC


@pytest.fixture(scope="module")
def bare_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """A run whose results-dir holds only what the ServerApp writes (no node-local figures merged)."""
    tmp_path = tmp_path_factory.mktemp("bare")
    federation = make_synthetic_federation(tmp_path / "workspaces", SMALL_SPEC, opted_out=[1])
    config = replace(SMALL_CONFIG, results_dir=str(tmp_path / "results"))
    run_in_process(server_app, client_app, [{"workspace": str(f)} for f in federation.folders], config.to_mapping())
    return tmp_path / "results", list(federation.folders)


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


def _consenting(metrics: dict) -> list[str]:
    return [node for node, reason in metrics["rounds"][1]["consent"].items() if reason == "consent-on"]


def test_the_server_view_needs_only_the_results_dir(bare_run: tuple[Path, list[Path]]) -> None:
    run_dir, _ = bare_run
    result = _invoke("report", str(run_dir))
    assert result.exit_code == 0, result.output
    text = (run_dir / "report.md").read_text()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    rows = [line for line in text.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(rows) == len(metrics["rounds"])
    consenting = len(_consenting(metrics))
    assert f"| 1 | {consenting}/{SMALL_SPEC.num_workspaces} | {consenting} |" in text
    assert "not available (they stay on the nodes" in text
    assert not (run_dir / "plots").exists()


def test_with_the_workspaces_it_adds_their_held_out_figures_and_plots(bare_run: tuple[Path, list[Path]]) -> None:
    run_dir, folders = bare_run
    args = [a for folder in folders for a in ("-w", str(folder))]
    result = _invoke("report", str(run_dir), *args)
    assert result.exit_code == 0, result.output
    assert (run_dir / "plots" / "accuracy.png").stat().st_size > 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    last = metrics["node_local"]["rounds"][-1]
    assert last["evaluating"] == len(_consenting(metrics))
    assert f"{last['eval-accuracy']:.3f} |" in (run_dir / "report.md").read_text()


def test_a_folder_without_metrics_is_a_one_line_error(tmp_path: Path) -> None:
    result = _invoke("report", str(tmp_path))
    assert result.exit_code == 1
    assert "no metrics.json" in result.output
