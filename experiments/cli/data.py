"""``optin data``: inspect workspace data and build workspaces from public corpora.

User mistakes (``OptinError``) end in a one-line error and exit code 1 (``experiments.cli.common.fail``).
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from experiments.cli.common import console, fail
from federated.data import (
    DATA_ENV,
    SyntheticSpec,
    WorkspaceStats,
    build_irc_workspaces,
    generate_federation,
    irc_corpus_dir,
    resolve_data_root,
    workspace_stats,
)
from federated.data.paths import DATA_FOLDER
from federated.errors import OptinError

data_app = typer.Typer(help="Inspect workspace data and build workspaces from public corpora.",
                       no_args_is_help=True, pretty_exceptions_enable=False)

_DATA_HELP = f"Data root holding irc-disentanglement/ (default: ${DATA_ENV}, else ../shared/data next to the repo)."


@data_app.command()
def stats(
    path: Path = typer.Argument(..., help="One workspace folder, a data folder (Slack export, IRC manifest, JSONL), "
                                          "or a folder of either."),
    scrub: bool = typer.Option(True, "--scrub/--no-scrub", help="Count the texts as training sees them (scrubbed)."),
    skip_bad_files: bool = typer.Option(False, "--skip-bad-files",
                                        help="Skip malformed message files (listed) instead of failing."),
) -> None:
    """Print messages, members, channels and characters per workspace.

    Example: optin data stats results/irc-workspaces
    """
    try:
        rows = workspace_stats(path, scrub=scrub, skip_bad_files=skip_bad_files)
    except OptinError as exc:
        fail(exc)
    console.print(_stats_table(rows, f"Workspaces in {path}"))
    for row in rows:
        if row.skipped_by_reason:
            reasons = ", ".join(f"{reason} {count:,}" for reason, count in
                                sorted(row.skipped_by_reason.items(), key=lambda item: (-item[1], item[0])))
            console.print(f"{row.name}: skipped entries: {reasons}", highlight=False, markup=False, soft_wrap=True)
        for skipped in row.skipped_files:
            console.print(f"{row.name}: not read: {skipped.path}: {skipped.reason}", highlight=False, soft_wrap=True)


@data_app.command()
def irc(
    out: Path = typer.Option(..., "--out", help="Folder to create the workspace folders in (e.g. under results/)."),
    data: Path | None = typer.Option(None, "--data", help=_DATA_HELP),
    max_lines: int | None = typer.Option(None, "--max-lines", min=1,
                                         help="Use only the first N log lines of each workspace (default: all)."),
) -> None:
    """Build the IRC workspaces (#ubuntu by era, #linux, #mediawiki, #rust, #stripe, #ubuntu-meeting).

    Each workspace gets data/source.toml pointing at its slice of the corpus; no text is copied.
    Consent is not given: write each workspace's policy.toml before training on it.

    Example: optin data irc --out results/irc-workspaces --max-lines 2000
    """
    try:
        folders = build_irc_workspaces(irc_corpus_dir(resolve_data_root(data)), out, max_lines=max_lines)
        rows = [row for folder in folders for row in workspace_stats(folder)]
    except OptinError as exc:
        fail(exc)
    console.print(_stats_table(rows, f"IRC workspaces written to {out}"))
    console.print(f"{len(folders)} workspaces in {out} (manifests only: <workspace>/{DATA_FOLDER}/source.toml)",
                  soft_wrap=True)


def _stats_table(rows: list[WorkspaceStats], title: str) -> Table:
    table = Table(title=title)
    table.add_column("workspace", overflow="fold")
    table.add_column("layout", no_wrap=True)
    for column in ("messages", "members", "channels", "characters", "skipped"):
        table.add_column(column, justify="right", no_wrap=True, min_width=len(column))
    for r in rows:
        table.add_row(r.name, r.layout, f"{r.messages:,}", f"{r.members:,}", f"{r.channels:,}", f"{r.characters:,}",
                      f"{r.skipped_entries:,}" + (f" (+{len(r.skipped_files)} files)" if r.skipped_files else ""))
    if len(rows) > 1:
        table.add_section()
        table.add_row("total", "", f"{sum(r.messages for r in rows):,}", "", "",
                      f"{sum(r.characters for r in rows):,}", f"{sum(r.skipped_entries for r in rows):,}")
    return table


@data_app.command()
def synthetic(
    out: Path = typer.Option(..., "--out", help="Folder to create the workspace folders in (absent or empty)."),
    workspaces: int = typer.Option(1, "--workspaces", min=1, help="How many workspace folders."),
    seed: int = typer.Option(0, "--seed", min=0, help="Generator seed (the same seed gives the same messages)."),
) -> None:
    """Make fresh synthetic workspace folders (Slack export layout) to try a node on.

    Each has data only: no policy file (consent is off until `optin consent on`), no ledger, no audit log.

    Example: optin data synthetic --out ./try --workspaces 1
    """
    try:
        folders = generate_federation(out, SyntheticSpec(num_workspaces=workspaces, seed=seed))
        rows = [row for folder in folders for row in workspace_stats(folder)]
    except OptinError as exc:
        fail(exc)
    console.print(_stats_table(rows, f"Synthetic workspaces written to {out}"))
    console.print(f"consent is off in each; turn it on with `optin consent on --workspace {folders[0]}`",
                  highlight=False, markup=False, soft_wrap=True)
