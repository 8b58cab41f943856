"""``optin audit canaries CONFIG``: a sweep with a canary audit in every cell, and its verdict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from experiments.cli.common import EXIT_AUDIT_FAILED, console, fail
from experiments.formatting import figure
from federated.errors import OptinError



def canaries(
    config: Path = typer.Argument(..., help="Sweep file (TOML); its \\[audit] table sets the canaries (defaults "
                                            "without one). E.g. experiments/configs/audit_canaries.toml."),
    results: Path = typer.Option(Path("results"), help="Folder under which the results folder is created."),
    resume: Path | None = typer.Option(None, help="Finish this earlier results folder of the same file."),
) -> None:
    """Train every cell with canaries injected in memory; report exposure and the one-run ε lower bound.

    Exit code 3 (and a red banner) when any empirical lower bound exceeds its claimed ε: at the bound's confidence (95 % by default) a correct mechanism does that in at most 1 cell in 20, so it is a bug in the mechanism or its accounting, or that chance; rerun to tell.

    Example: optin audit canaries experiments/configs/audit_canaries.toml
    """
    from experiments.research.report import load_cells
    from experiments.research.sweep import load_and_run

    try:
        outcome = load_and_run(config, results, resume, console, audit=True)
    except OptinError as exc:
        fail(exc)
    cells = [c for c in load_cells(outcome.run_dir) if c.get("audit")]
    copies = [e["copies"] for e in cells[0]["audit"]["exposure"]] if cells else []
    table = Table(title=f"Canary audit: claimed ε for one canary message vs the empirical lower bound; exposure in "
                        f"bits (chance {cells[0]['audit']['chance_exposure']:.2f})" if cells else "Canary audit")
    for column in ("cell", "claimed ε", "ε lower bound", *(f"exp. {k}×" for k in copies), "check"):
        table.add_column(column, justify="left" if column == "cell" else "right", no_wrap=column == "cell")
    for cell in cells:
        audit, one_run = cell["audit"], cell["audit"]["one_run"]
        table.add_row(cell["cell"]["id"], figure(audit["claimed_epsilon"]),
                      "-" if one_run is None else f"{one_run['epsilon_lower_bound']:.3f}",
                      *(f"{e['bits']:.2f}" for e in audit["exposure"]),
                      "[bold red]FAILED[/]" if audit["violation"] else "ok")
    console.print(table)
    console.print(f"Results: {outcome.run_dir}  (report.md, results.csv, cells/*/metrics.json)", soft_wrap=True,
                  highlight=False)
    exit_if_audit_failed(cells)


def exit_if_audit_failed(cells: list[dict[str, Any]]) -> None:
    """Print a red verdict and exit with ``EXIT_AUDIT_FAILED`` if any cell's lower bound exceeds its claim."""
    from experiments.research.report import audit_failures

    failed = audit_failures(cells)
    if failed:
        console.print(f"[bold red]PRIVACY AUDIT FAILED in {len(failed)} cell(s): {', '.join(failed)}. An empirical "
                      f"lower bound exceeds the claimed ε: a bug in the mechanism or its accounting, or the "
                      f"chance its confidence leaves (at most 1 in 20 per cell at 95 %); rerun to tell.[/]")
        raise typer.Exit(EXIT_AUDIT_FAILED)
