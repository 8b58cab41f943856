"""Baselines of a sweep cell, scored on exactly the held-out splits the cell's nodes evaluated the federated model on.

- **Unigram and bigram** (next-character task): for each consenting workspace of the cell's copy, fitted on its
  node's training split and scored on its node's held-out split (``federated.tasks.ngram.ngram_baselines``,
  as ``experiments.runners.local_evaluation`` does): the split is ``clients.workspace_cache.load_split`` keyed by
  the copy's node secret with its policy's ``held_out_fraction``, each message encoded as the node encodes it.
  Each cell's copies have fresh node secrets, so the split, and these figures, are the cell's own. Computed on
  the researcher's machine from data the sweep already holds; nothing is sent anywhere. Canaries (in memory
  only) are not in the training split fitted here.
- **Majority** (reply task): the accuracy of always answering the majority class of a workspace's held-out
  split, which its node logged beside its evaluation (``majority_accuracy`` in its audit log's ``evaluation``
  entry of the cell's last round).
- **Alone** (``baselines = ["alone"]``): each consenting workspace trained with no other workspace, with the
  cell's run config (rounds, local steps, q, noise multipliers, DP mode, seed) on a fresh copy of the cell's
  copy: same data, policy and node secret (so the same held-out split), a new ledger and audit log (so its own
  budget, of the same ε). Its figures are the node-local ones of its own audit log
  (``experiments.runners.node_metrics``), after the last round; its ε is its ledger's, under the sweep's
  accountant. The canary audit's canaries are not injected into it.

Means over workspaces are weighted by held-out messages, as the federated figures are
(``experiments.runners.node_metrics``); a workspace with nothing held out has no figures and no weight.
Losses are nats per predicted byte (next-character task).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from clients.workspace_cache import load_split
from clients.workspace_node import DATA_FOLDER
from experiments.research.sweep_cells import CellPlan, WorkspacePlan
from experiments.runners.flower_simulation import run_flower_simulation
from experiments.runners.in_process import run_federation
from experiments.runners.node_metrics import workspace_figures
from experiments.runners.results import load_metrics
from federated.audit import AUDIT_FILE, read_entries
from federated.config import RunConfig
from federated.inprocess import Observer
from federated.privacy.accounting import epsilon
from federated.privacy.ledger import LEDGER_FILE, Ledger
from federated.privacy.node_secret import SECRET_FILE, node_secret
from federated.privacy.policy import POLICY_FILE, read_policy
from federated.tasks import get_task
from federated.tasks.nextchar import NextCharTask
from federated.tasks.ngram import ngram_baselines

ALONE_FOLDER = "alone"
NGRAMS = ("unigram", "bigram")


def ngram_figures(plan: CellPlan) -> dict[str, dict[str, Any]] | None:
    """Per consenting workspace of the cell, ``{"unigram": {...}, "bigram": {...}}`` (each ``loss``, ``accuracy``,
    ``held_out`` messages, ``held_out_bytes`` scored); ``None`` unless the cell's task is next-character
    prediction. A workspace with nothing held out gets no figures."""
    task = get_task(plan.run_config.task, plan.run_config.seq_len)
    if not isinstance(task, NextCharTask):
        return None
    workspaces: dict[str, dict[str, Any]] = {}
    for w in _consenting(plan):
        policy = read_policy(w.folder / POLICY_FILE)
        train, held_out = load_split(w.folder / DATA_FOLDER, w.name, node_secret(w.folder), policy.held_out_fraction)
        if not held_out:
            continue
        scored = task.encode(held_out)
        counts = {"held_out": len(scored), "held_out_bytes": int((scored.tensors[1] >= 0).sum())}
        scores = ngram_baselines([m.text for m in train], [m.text for m in held_out], task.seq_len)
        workspaces[w.name] = {name: {**scores[name], **counts} for name in NGRAMS}
    return workspaces


def majority_figures(plan: CellPlan, run_id: str, last_round: int) -> dict[str, dict[str, Any]] | None:
    """Per consenting workspace, ``{"majority": {"accuracy", "held_out"}}``: the majority-class accuracy it logged
    with its last-round evaluation of run ``run_id``; ``None`` if no workspace logged one (a task without it)."""
    workspaces = {}
    for w in _consenting(plan):
        entries = [e for e in _entries(w.folder) if e.get("kind") == "evaluation" and str(e.get("run_id")) == run_id
                   and str(e.get("round")) == str(last_round) and isinstance(e.get("kept_local"), dict)]
        if entries and "majority_accuracy" in entries[-1]["kept_local"]:
            kept = entries[-1]["kept_local"]
            workspaces[w.name] = {"majority": {"loss": None, "accuracy": float(kept["majority_accuracy"]),
                                               "held_out": int(kept.get("held_out", 0))}}
    return workspaces or None


def run_alone(plan: CellPlan, run_mode: str, delta: float, accountant: str,
              observer: Observer | None = None) -> dict[str, dict[str, Any]]:
    """Train each consenting workspace of the cell on its own (see the module docstring); per workspace,
    ``{"alone": {"loss", "accuracy", "held_out", "releases", "epsilon", "rounds"}}`` after the last round."""
    workspaces = {}
    for w in _consenting(plan):
        folder = plan.folder / ALONE_FOLDER / w.name
        copy = alone_copy(w.folder, folder / "workspaces" / w.name)
        config = replace(plan.run_config, min_available_nodes=1, min_train_nodes=1,
                         workspaces_root=str(copy.parent), results_dir=str(folder / "run"))
        _run(copy, config, run_mode, observer)
        metrics = load_metrics(folder / "run")
        rounds = workspace_figures(metrics, w.name)
        figures = rounds.get(max(int(r["round"]) for r in metrics["rounds"]), {})
        with Ledger(copy / LEDGER_FILE) as ledger:
            releases = ledger.releases()
        workspaces[w.name] = {"alone": {
            "loss": figures.get("eval-loss"), "accuracy": figures.get("eval-accuracy"),
            "held_out": int(figures.get("held-out", 0)),
            "releases": len(releases),
            "epsilon": epsilon([(r.noise_multiplier, r.sample_rate, r.steps) for r in releases], delta, accountant),
            "rounds": {str(n): f for n, f in sorted(rounds.items())},
        }}
    return workspaces


def alone_copy(source: Path, target: Path) -> Path:
    """``target`` made anew with ``source``'s data, policy and node secret: the same held-out split, and no ledger
    or audit log, so a fresh budget."""
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    shutil.copytree(source / DATA_FOLDER, target / DATA_FOLDER, symlinks=True)
    for name in (POLICY_FILE, SECRET_FILE):
        shutil.copy2(source / name, target / name)
    return target


def weighted_mean(workspaces: Iterable[Mapping[str, Any]], name: str) -> dict[str, Any]:
    """``{"loss", "accuracy", "held_out", "workspaces"}``: each metric's mean over the workspaces with a ``name``
    figure for it, weighted by their held-out messages (``None`` where none has one); ``held_out`` and
    ``workspaces``: the total and the number of workspaces behind the accuracy."""
    result: dict[str, Any] = {}
    for metric in ("loss", "accuracy"):
        scored = [(w[name][metric], w[name]["held_out"]) for w in workspaces
                  if w.get(name, {}).get(metric) is not None and w[name]["held_out"] > 0]
        weight = sum(n for _, n in scored)
        result[metric] = sum(v * n for v, n in scored) / weight if weight else None
        result["held_out"], result["workspaces"] = weight, len(scored)
    return result


def _run(folder: Path, config: RunConfig, run_mode: str, observer: Observer | None) -> None:
    if run_mode == "inprocess":
        run_federation([folder], config, observer)
    else:
        run_flower_simulation(config)


def _consenting(plan: CellPlan) -> list[WorkspacePlan]:
    return [w for w in plan.workspaces if not w.opted_out]


def _entries(folder: Path) -> Iterable[dict[str, Any]]:
    path = folder / AUDIT_FILE
    return read_entries(path) if path.is_file() else ()
