"""Which levers bring the DP next-byte model below the n-gram baselines: public pretraining first.

Runs Optin's ServerApp and ClientApp in process (``experiments.runners.in_process.run_federation``) on the
IRC evaluation workspaces (``federated.tasks.pretrain.EVALUATION_PARTITIONS``: none of their files is
pretraining text), each capped at ``--max-lines`` log lines, once per cell:

- ``main``: a fresh model vs the pretrained checkpoint (``init-model``), at every ``--epsilons`` target
  (message-level local DP-SGD, ∞ = no DP) and learning rate ``--lr``; ``pretrained``: the latter only;
- ``lr``, ``batch``, ``steps``: the pretrained model at ε = ``--lever-epsilon`` with other learning rates,
  larger Poisson batches (sample rate and normalizer scaled together) or other rounds × local steps.

Every other setting is ``BASE``: 10 rounds × 20 local DP-SGD steps, normalizer 32 at the sampling rate
that expects 32 messages in the median workspace's training split, clipping norm 1.

Privacy: each cell's noise multiplier is calibrated to its target ε at δ = ``--delta`` for its own
sampling rate and rounds × local steps (``federated.privacy.calibration``, RDP: the node's own
accountant), written as every workspace policy's noise floor; the server asks for 0, so nodes run
exactly that noise. The ε reported per cell is the accountant's ε of that mechanism.

Every cell copies the same built workspaces, node secrets included, so all cells and the baselines see
the same train / held-out split. Baselines: byte unigram and bigram (``federated.tasks.ngram``) fitted on
each workspace's training split and evaluated on its held-out split. Figures are plain means over
workspaces of each node's held-out loss (nats/byte) and accuracy in the last round (node-local figures
read back from the audit logs, ``experiments.runners.node_metrics``). DP sampling and noise come from the
OS, so a cell repeated gives slightly different figures.

Results: ``<results>/<UTC time>-pretrain-levers/`` with ``levers.json``, ``table.md`` and ``run.log``.
Run: ``python -m experiments.research.pretrain_levers --checkpoint pretrained.safetensors``
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import typer

from experiments.runners.in_process import run_federation
from experiments.runners.node_metrics import workspace_figures
from experiments.runners.results import load_metrics, log_to_file, new_run_dir
from federated.config import RunConfig
from federated.data import PARTITIONS, build_irc_workspaces, irc_corpus_dir, load_workspace, resolve_data_root
from federated.data.records import split_messages
from federated.privacy.calibration import calibrate
from federated.privacy.node_secret import node_secret
from federated.privacy.policy import Policy, write_policy
from federated.tasks.checkpoint import load_checkpoint
from federated.tasks.ngram import evaluate_ngram, fit_bigram, fit_unigram
from federated.tasks.pretrain import EVALUATION_PARTITIONS, pretraining_overlap

BASE = RunConfig(num_rounds=10, local_steps=20, batch_size=32, lr=0.1, max_grad_norm=1.0, seed=0)


@dataclass(frozen=True)
class Cell:
    """One run: a label, the target ε, whether it starts from the checkpoint, and its run config changes."""

    label: str
    epsilon: float
    pretrained: bool
    changes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CellResult:
    label: str
    pretrained: bool
    target_epsilon: float
    epsilon: float
    noise_multiplier: float
    sample_rate: float
    initial_loss: float
    loss: float
    accuracy: float
    seconds: float


def plan_cells(levers: list[str], epsilons: list[float], lever_epsilon: float, lr: float) -> list[Cell]:
    """The cells of the chosen levers, in run order; every cell runs at learning rate ``lr`` unless its lever
    is the learning rate."""
    cells: list[Cell] = []
    starts = {"main": (False, True), "pretrained": (True,)}
    for lever, pretrained in starts.items():
        if lever in levers:
            cells += [Cell(f"{'pretrained' if p else 'fresh'} ε={e:g} lr={lr:g}", e, p, {"lr": lr})
                      for p in pretrained for e in epsilons]
    e = lever_epsilon
    if "lr" in levers:
        cells += [Cell(f"pretrained ε={e:g} lr={rate:g}", e, True, {"lr": rate}) for rate in (0.003, 0.01, 0.03)]
    if "batch" in levers:
        cells += [Cell(f"pretrained ε={e:g} lr={lr:g} batch×{k}", e, True, {"lr": lr, "batch": k}) for k in (2, 4)]
    if "steps" in levers:
        cells += [Cell(f"pretrained ε={e:g} lr={lr:g} {r}×{s} steps", e, True,
                       {"lr": lr, "num_rounds": r, "local_steps": s}) for r, s in ((5, 20), (10, 40))]
    return list({cell.label: cell for cell in cells}.values())  # a cell two levers share runs once


def build_workspaces(corpus: Path, root: Path, max_lines: int) -> list[Path]:
    """The evaluation workspaces, each with its node secret created now so every copy splits alike."""
    chosen = tuple(p for p in PARTITIONS if p.name in EVALUATION_PARTITIONS)
    folders = build_irc_workspaces(corpus, root, max_lines=max_lines, partitions=chosen)
    for folder in folders:
        node_secret(folder)
    return folders


def splits(folders: list[Path], held_out_fraction: float) -> dict[str, tuple[list[str], list[str]]]:
    """Each workspace's (train, held-out) texts, split as its node splits them."""
    result = {}
    for folder in folders:
        messages = load_workspace(folder / "data", name=folder.name).messages
        train, held = split_messages(list(messages), held_out_fraction, node_secret(folder))
        result[folder.name] = ([m.text for m in train], [m.text for m in held])
    return result


def baselines(data: dict[str, tuple[list[str], list[str]]], seq_len: int) -> dict[str, dict[str, float]]:
    """Mean over workspaces of the unigram's and the bigram's held-out loss and accuracy."""
    rows: dict[str, list[dict[str, float]]] = {"unigram": [], "bigram": []}
    for train, held in data.values():
        rows["unigram"].append(evaluate_ngram(fit_unigram(train, seq_len), held, seq_len))
        rows["bigram"].append(evaluate_ngram(fit_bigram(train, seq_len), held, seq_len))
    return {name: {k: statistics.fmean(r[k] for r in results) for k in ("loss", "accuracy")}
            for name, results in rows.items()}


def run_cell(cell: Cell, folders: list[Path], train_sizes: list[int], checkpoint: Path, folder: Path,
             delta: float) -> CellResult:
    """Copy the workspaces, calibrate and write their policies, run the federation, read back the figures."""
    changes = dict(cell.changes)
    scale = changes.pop("batch", 1)
    base = replace(BASE, **changes)
    rate = min(1.0, scale * base.batch_size / statistics.median(train_sizes))
    config = replace(base, sample_rate=rate, batch_size=base.batch_size * scale, noise_multiplier=0.0,
                     dp_mode="none" if math.isinf(cell.epsilon) else "local", min_available_nodes=len(folders),
                     init_model=str(checkpoint) if cell.pretrained else "", results_dir=str(folder / "run"))
    steps = config.num_rounds * config.local_steps
    calibration = calibrate(cell.epsilon, delta, rate, steps, "rdp")
    copies = []
    for source in folders:
        copies.append(folder / "workspaces" / source.name)
        shutil.copytree(source, copies[-1])
        write_policy(copies[-1], Policy(consent=True, delta=delta, noise_multiplier=calibration.noise_multiplier,
                                        max_epsilon=calibration.epsilon))
    start = time.perf_counter()
    run_federation(copies, config)
    seconds = time.perf_counter() - start
    metrics = load_metrics(folder / "run")
    first, last = metrics["rounds"][0]["round"], metrics["rounds"][-1]["round"]
    figures = [workspace_figures(metrics, c.name) for c in copies]
    return CellResult(cell.label, cell.pretrained, cell.epsilon, calibration.epsilon, calibration.noise_multiplier,
                      rate, statistics.fmean(f[first]["eval-loss"] for f in figures),
                      statistics.fmean(f[last]["eval-loss"] for f in figures),
                      statistics.fmean(f[last]["eval-accuracy"] for f in figures), seconds)


def table(results: list[CellResult], base: dict[str, dict[str, float]]) -> str:
    """The markdown table: one row per cell, then the baselines; loss relative to the bigram's."""
    bigram = base["bigram"]["loss"]
    lines = ["| cell | ε (accountant) | σ | q | initial loss | held-out loss | vs bigram | accuracy |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.label} | {r.epsilon:.2f} | {r.noise_multiplier:.3f} | {r.sample_rate:.4f} | "
                     f"{r.initial_loss:.3f} | {r.loss:.3f} | {100 * (r.loss / bigram - 1):+.1f}% | {r.accuracy:.3f} |")
    for name, figures in base.items():
        lines.append(f"| {name} (train split) | – | – | – | – | {figures['loss']:.3f} | "
                     f"{100 * (figures['loss'] / bigram - 1):+.1f}% | {figures['accuracy']:.3f} |")
    return "\n".join(lines) + "\n"


def main(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Checkpoint written by 'optin pretrain'."),
    data: Path | None = typer.Option(None, "--data", help="Data root holding irc-disentanglement/."),
    results: Path = typer.Option(Path("results"), "--results", help="Folder under which the run folder is made."),
    levers: str = typer.Option("main", help="Comma-separated: main, pretrained, lr, batch, steps."),
    lr: float = typer.Option(BASE.lr, help="Learning rate of every cell outside the lr lever."),
    epsilons: str = typer.Option("1,4,8,inf", help="Target ε of the main lever (inf: no DP)."),
    lever_epsilon: float = typer.Option(4.0, help="Target ε of the other levers."),
    max_lines: int = typer.Option(3000, min=1, help="Log lines per workspace."),
    delta: float = typer.Option(1e-5, help="δ of every cell."),
) -> None:
    """Compare fresh and pretrained starts (and other levers) under local DP with the n-gram baselines.

    Example: python -m experiments.research.pretrain_levers --checkpoint pretrained.safetensors --levers main,lr
    """
    _, metadata = load_checkpoint(checkpoint)
    corpus = irc_corpus_dir(resolve_data_root(data))
    overlap = pretraining_overlap(metadata, corpus, EVALUATION_PARTITIONS)
    if overlap:
        raise typer.BadParameter(f"{checkpoint} was pretrained on evaluation files {overlap[:5]}")
    run_dir = new_run_dir(results, "pretrain-levers")
    log_to_file(run_dir / "run.log")
    folders = build_workspaces(corpus, run_dir / "workspaces", max_lines)
    data_splits = splits(folders, Policy().held_out_fraction)
    base = baselines(data_splits, BASE.seq_len)
    sizes = [len(train) for train, _ in data_splits.values()]
    done: list[CellResult] = []
    cells = plan_cells(levers.split(","), [float(e) for e in epsilons.split(",")], lever_epsilon, lr)
    for i, cell in enumerate(cells):
        done.append(run_cell(cell, folders, sizes, checkpoint.resolve(), run_dir / f"cell-{i:02d}", delta))
        typer.echo(f"{cell.label}: loss {done[-1].loss:.3f} acc {done[-1].accuracy:.3f} ({done[-1].seconds:.0f} s)")
        (run_dir / "levers.json").write_text(json.dumps(
            {"checkpoint": str(checkpoint), "pretrain_partitions": metadata["partitions"],
             "workspaces": {n: {"train": len(t), "held_out": len(h)} for n, (t, h) in data_splits.items()},
             "base_run": BASE.to_mapping(), "baselines": base, "cells": [asdict(r) for r in done]},
            indent=2) + "\n", encoding="utf-8")
    text = table(done, base)
    (run_dir / "table.md").write_text(text, encoding="utf-8")
    typer.echo(text)
    typer.echo(f"Results: {run_dir}")


if __name__ == "__main__":
    typer.run(main)
