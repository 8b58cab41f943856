"""``optin sweep CONFIG``: a grid of target ε × seeds × DP modes × datasets, resumable, with a report."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from experiments.cli.audit import exit_if_audit_failed
from experiments.cli.common import console, fail
from experiments.formatting import figure
from federated.errors import OptinError


def sweep(
    config: Path = typer.Argument(..., help="Sweep file (TOML), e.g. experiments/configs/sweep_default.toml."),
    results: Path = typer.Option(Path("results"), help="Folder under which the sweep's results folder is created."),
    resume: Path | None = typer.Option(None, help="Finish this earlier results folder of the same sweep: finished "
                                                  "cells are kept, the others run."),
) -> None:
    """Train every cell of the grid (target ε × seeds × DP modes × privacy units × datasets) and write CSV, plots
    and a report: held-out loss and accuracy beside unigram, bigram and (baselines = ["alone"]) alone baselines.

    Datasets: built-in synthetic, IRC, or a folder of workspaces (Slack exports, JSONL, IRC manifests), copied fresh into every cell; workspaces listed in opted-out never train.

    With an \\[audit] table every cell also runs a canary audit; exit code 3 if a lower bound exceeds its claim.

    Example: optin sweep experiments/configs/sweep_default.toml  (later: --resume results/<run-id>)
    """
    from experiments.research.report import BASELINES, central_drowned, load_cells, mean_sd, summarize
    from experiments.research.sweep import load_and_run

    try:
        outcome = load_and_run(config, results, resume, console)
    except OptinError as exc:
        fail(exc)
    groups = summarize(load_cells(outcome.run_dir))
    shown = [b for b in BASELINES if any(b in g.baselines for g in groups)]
    table = Table(title="Final held-out loss (nats per byte for next-character models) and accuracy, mean ± sd over "
                        "seeds, with the baselines' on the same splits. ε local: per message (max over workspaces); "
                        "ε central: per workspace; ∞: no DP")
    columns = ["dataset", "mode", "target ε", "seeds", "loss", "accuracy",
               *(f"{b} {m}" for b in shown for m in ("loss", "accuracy") if b != "majority" or m == "accuracy"),
               "ε local", "ε central"]
    for column in columns:
        table.add_column(column, justify="left" if column in ("dataset", "mode") else "right",
                         overflow="fold")
    for g in groups:
        table.add_row(g.dataset, g.dp_mode, figure(g.target_epsilon), str(len(g.accuracies)),
                      mean_sd(g.losses, 3), mean_sd(g.accuracies, 3),
                      *(mean_sd(g.values(b, m), 3) for b in shown for m in ("loss", "accuracy")
                        if b != "majority" or m == "accuracy"),
                      figure(g.epsilon_local), "-" if g.epsilon_central is None else figure(g.epsilon_central))
    console.print(table)
    console.print(f"Ran {len(outcome.ran)} cell(s), kept {len(outcome.skipped)} finished one(s) in "
                  f"{outcome.seconds:.0f} s.", highlight=False)
    console.print(f"Results: {outcome.run_dir}  (report.md, results.csv, plots/, cells/*/metrics.json)",
                  soft_wrap=True, highlight=False)
    cells = load_cells(outcome.run_dir)
    for cell, ratio in central_drowned(cells):
        console.print(f"warning: cell {cell}: central DP noise outweighed the update it carried (signal/noise "
                      f"{ratio:.2g}); the model is mostly noise (report.md)", style="yellow", highlight=False,
                      markup=False)
    exit_if_audit_failed(cells)
