"""``optin irc``: federated vs trained alone on the public IRC workspaces (``experiments.research.irc_experiment``)."""

from __future__ import annotations

from pathlib import Path

import typer

from experiments.cli.common import console, fail
from federated.errors import OptinError


def irc(
    config: Path | None = typer.Option(None, "--config", help="Experiment TOML: an experiment table and a run table "
                                       "(RunConfig keys). Default: experiments/configs/irc.toml."),
    data: Path | None = typer.Option(None, "--data", help="Data root holding irc-disentanglement/ "
                                     "(default: $OPTIN_DATA, else ../shared/data next to the repo)."),
    results: Path = typer.Option(Path("results"), "--results", help="Folder under which the run folder is created."),
) -> None:
    """Train the IRC workspaces federated and each alone; print held-out accuracy per workspace.

    Example: optin irc --config experiments/configs/irc.toml
    """
    from experiments.research.irc_experiment import DEFAULT_CONFIG, load_experiment, print_comparison, run_irc_experiment
    from federated.data import irc_corpus_dir, resolve_data_root

    try:
        experiment = load_experiment(config or DEFAULT_CONFIG)
        comparison = run_irc_experiment(experiment, irc_corpus_dir(resolve_data_root(data)), results, console)
    except OptinError as exc:
        fail(exc)
    print_comparison(comparison, console)
