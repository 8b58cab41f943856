"""``optin demo``: a small synthetic federation, some workspaces not opted in, trained in process.

Shows the whole round data flow on one machine in a few minutes: consent
queries, skips, local DP-SGD with Opacus on each consenting workspace, FedAvg,
held-out evaluation, per-workspace ε from the Opacus RDP accountant.

The losses and accuracies it prints are node-local figures: each node keeps them in
its workspace's audit log and sends none; the demo holds every workspace folder, so it
reads them back (``experiments.runners.node_metrics``). A real server never sees them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from flwr.app import Message
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from experiments.formatting import figure
from experiments.runners.in_process import make_synthetic_federation, run_federation
from experiments.runners.node_metrics import round_figures, workspace_figures
from experiments.runners.results import load_metrics, log_to_file, new_run_dir, plot_rounds, write_config
from federated.config import RunConfig
from federated.data import SyntheticSpec

DEMO_CONFIG = RunConfig(num_rounds=5, local_steps=30, sample_rate=0.05, batch_size=30, lr=0.1,
                        noise_multiplier=1.0, max_grad_norm=1.0)
"""The demo's run: with ``SyntheticSpec``'s default sizes (300 to 1200 messages, 80% for training) a sampling
rate of 0.05 draws about 12 to 48 messages per step, 30 on average: the public normalizer ``batch-size``."""


@dataclass(frozen=True)
class DemoResult:
    run_dir: Path
    metrics: dict[str, Any]
    names: dict[str, str]
    """Node id (as in ``metrics.json``) to workspace folder name."""


def spread_indices(total: int, count: int) -> list[int]:
    """``count`` indices spread evenly over ``range(total)``."""
    if not 0 <= count <= total:
        raise ValueError(f"opted-out: expected between 0 and {total}, got {count}")
    return [total * (j + 1) // (count + 1) for j in range(count)]


def run_demo(results_root: Path, spec: SyntheticSpec, opted_out: int, config: RunConfig = DEMO_CONFIG,
             console: Console | None = None) -> DemoResult:
    """Generate the federation, run it in process with a progress display, write results; return them."""
    console = console or Console()
    opted_out_indices = spread_indices(spec.num_workspaces, opted_out)
    run_dir = new_run_dir(results_root, "demo")
    layout = make_synthetic_federation(run_dir / "workspaces", spec, opted_out_indices)
    config = replace(config, results_dir=str(run_dir), seed=spec.seed)
    write_config(run_dir, config.to_mapping())
    log_to_file(run_dir / "run.log")

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console, transient=False) as progress:
        task = progress.add_task("evaluating the initial model", total=config.num_rounds + 1)

        def observe(message_type: str, group_id: str, replies: Sequence[Message]) -> None:
            if message_type == "query":
                consenting = sum(1 for r in replies if not r.has_error() and r.content["consent"]["consent"])
                progress.update(task, description=f"round {group_id}: {consenting}/{len(replies)} consent")
            elif message_type == "train":
                progress.update(task, description=f"round {group_id}: {len(replies)} trained, evaluating")
            elif message_type == "evaluate":
                progress.advance(task)
                progress.update(task, description=f"round {group_id} done")

        served = run_federation(layout.folders, config, observe)

    metrics = load_metrics(run_dir)
    plot_rounds(metrics, run_dir / "plots" / "accuracy.png")
    names = {str(node_id): folder.name for node_id, folder in served.items()}
    return DemoResult(run_dir, metrics, names)


def print_demo(result: DemoResult, console: Console) -> None:
    """The per-round and per-workspace tables, and where the results are."""
    local = round_figures(result.metrics)
    rounds = Table(title="Global model per round (held-out splits of consenting workspaces, node-local figures)")
    for column in ("round", "trained", "skipped", "train loss", "held-out loss", "held-out accuracy"):
        rounds.add_column(column, justify="right", no_wrap=True)
    for r in result.metrics["rounds"]:
        figures = local.get(int(r["round"]), {})
        rounds.add_row(str(r["round"]), str(len(r["trained"])), str(len(r["skipped"])),
                       figure(figures.get("train-loss")), figure(figures.get("eval-loss")),
                       figure(figures.get("eval-accuracy")))
    console.print(rounds)

    nodes = sorted(result.metrics["nodes"].items(), key=lambda kv: int(kv[0]))
    deltas = {entry["delta"] for _, entry in nodes if entry["delta"] is not None}
    # One δ for all (the usual case) goes in the title, so the table fits an 80-column terminal.
    shared = f", δ = {next(iter(deltas)):g}" if len(deltas) == 1 else ""
    workspaces = Table(title=f"Workspaces (ε from the Opacus RDP accountant, message-level DP{shared})")
    columns = ("workspace", "consent", "rounds", "ε spent", *(("δ",) if not shared else ()), "held-out", "accuracy")
    for column in columns:
        workspaces.add_column(column, justify="left" if column == "workspace" else "right", no_wrap=True)
    for node_id, entry in nodes:
        name = result.names.get(node_id, f"node {node_id}")
        last = _last_evaluation(workspace_figures(result.metrics, name))
        workspaces.add_row(name, entry.get("consent", "?"), str(entry["rounds_joined"]), figure(entry["epsilon"]),
                           *((figure(entry["delta"], "g"),) if not shared else ()),
                           str(last["held-out"]) if last else "-", figure(last.get("eval-accuracy") if last else None))
    console.print(workspaces)
    console.print("Losses and accuracies: each workspace's own figures, read from its audit log (this demo holds "
                  "every workspace); nodes send none of them to the server.", soft_wrap=True)
    console.print(f"Results: {result.run_dir}  (metrics.json, audit.jsonl, config.toml, run.log, plots/accuracy.png, "
                  "model.safetensors + model.json: the final global model)", soft_wrap=True)
    if result.metrics["config"]["task"] == "nextchar":  # completion needs a next-character model
        console.print(f"Try it: optin complete {result.run_dir} --prefix \"see you \"", soft_wrap=True,
                      highlight=False)


def _last_evaluation(rounds: dict[int, dict[str, Any]]) -> dict[str, Any] | None:
    """The workspace's figures of the last round it evaluated in, if any."""
    evaluated = [n for n, f in rounds.items() if "eval-accuracy" in f]
    return rounds[max(evaluated)] if evaluated else None
