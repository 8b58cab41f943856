"""A run with ``init-model`` starts from the checkpoint: round 0 evaluates exactly the checkpoint's weights."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from clients.workspace_node import WorkspaceNode
from experiments.runners.in_process import make_synthetic_federation, run_federation
from experiments.runners.node_metrics import workspace_figures
from experiments.runners.results import load_metrics
from federated.errors import ConfigError
from federated.privacy.policy import POLICY_FILE, read_policy
from federated.tasks import get_task
from federated.tasks.checkpoint import save_checkpoint
from tests.conftest import SMALL_CONFIG, SMALL_SPEC


def test_round_zero_evaluates_the_checkpoint(tmp_path: Path) -> None:
    layout = make_synthetic_federation(tmp_path / "workspaces", SMALL_SPEC, opted_out=[])
    config = replace(SMALL_CONFIG, num_rounds=1, local_steps=1)
    task = get_task(config.task, config.seq_len)
    model = task.build_model(config.seed + 100)  # not the weights the run's seed would build
    with torch.no_grad():
        model.head.bias[ord(" ")] += 3.0  # and far from them: a start that favours spaces
    path = save_checkpoint(tmp_path / "start.pt", model.state_dict(), {"task": task.name, "seq_len": task.seq_len})
    run = replace(config, init_model=str(path), results_dir=str(tmp_path / "results"))
    run_federation(layout.folders, run)
    metrics = load_metrics(tmp_path / "results")
    first = metrics["rounds"][0]["round"]
    fresh = task.build_model(config.seed)
    for folder in layout.folders:
        held_out = task.encode(WorkspaceNode(folder).held_out_messages(run, read_policy(folder / POLICY_FILE)))
        expected = task.evaluate(model, held_out)
        figures = workspace_figures(metrics, folder.name)[first]
        assert figures["eval-loss"] == pytest.approx(expected["loss"], rel=1e-6)
        assert figures["eval-accuracy"] == pytest.approx(expected["accuracy"], rel=1e-6)
        assert abs(figures["eval-loss"] - task.evaluate(fresh, held_out)["loss"]) > 0.1


def test_a_checkpoint_for_another_model_stops_the_run(tmp_path: Path) -> None:
    layout = make_synthetic_federation(tmp_path / "workspaces", SMALL_SPEC, opted_out=[])
    task = get_task("nextchar", 32)
    path = save_checkpoint(tmp_path / "other.pt", task.build_model(0).state_dict(), {"task": "nextchar", "seq_len": 32})
    with pytest.raises(ConfigError, match="seq_len"):
        run_federation(layout.folders, replace(SMALL_CONFIG, num_rounds=1, local_steps=1, init_model=str(path)))
