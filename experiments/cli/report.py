"""``optin report RUN_DIR``: a report and plots for any finished run folder (``experiments.runners.run_report``)."""

from __future__ import annotations

from pathlib import Path

import typer

from experiments.cli.common import console, fail
from federated.errors import OptinError


def report(
    run_dir: Path = typer.Argument(..., help="A finished run's results-dir (holding metrics.json)."),
    workspaces: list[Path] = typer.Option([], "--workspace", "-w",
                                          help="A workspace folder of the run, if you hold it (repeat for each): "
                                               "adds its node-local held-out figures and the plots."),
) -> None:
    """Write report.md (and plots/accuracy.png with --workspace) for a finished run, e.g. one `flwr run` made.

    Example: optin report results/my-run -w ./acme -w ./globex
    """
    from experiments.runners.run_report import write_run_report

    try:
        written = write_run_report(run_dir, workspaces or None)
    except OptinError as exc:
        fail(exc)
    for warning in written.warnings:
        console.print(f"warning: {warning}", style="yellow", highlight=False, markup=False)
    console.print(f"wrote {written.report}" + "".join(f", {p}" for p in written.plots), highlight=False,
                  markup=False)
