"""The ``optin`` command line: a thin Typer layer; each command imports its work inside, so operator commands
stay free of torch. User mistakes (``OptinError``) end in one line on stderr and exit code 1; the
exit codes are listed in ``experiments.cli.common``."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import typer

from experiments.cli.audit import canaries
from experiments.cli.common import console, fail
from experiments.cli.data import data_app
from experiments.cli.deploy import add_deploy_commands
from experiments.cli.irc import irc
from experiments.cli.model import complete, evaluate
from experiments.cli.operator import audit_app, consent_app, ledger_app, policy_app
from experiments.cli.pretrain import pretrain
from experiments.cli.privacy import privacy_app
from experiments.cli.report import report
from experiments.cli.sweep import sweep
from experiments.cli.threads import apply_thread_defaults
from federated.data import SyntheticSpec
from federated.errors import OptinError

app = typer.Typer(help="Optin: opt-in, differentially private federated training across chat workspaces.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
app.add_typer(consent_app, name="consent")
app.add_typer(policy_app, name="policy")
app.add_typer(ledger_app, name="ledger")
audit_app.command("canaries")(canaries)
app.add_typer(audit_app, name="audit")
app.add_typer(privacy_app, name="privacy")
app.command()(sweep)
app.command()(irc)
app.command()(report)
app.command()(complete)
app.command()(evaluate)
app.command()(pretrain)
add_deploy_commands(app)


@app.callback()
def main(
    threads: int | None = typer.Option(None, min=1, help="Intra-op threads for torch in this command and the "
                                                         "processes it starts. Default: OMP_NUM_THREADS if set, "
                                                         "else the cores free now (CPU count minus load, at "
                                                         "least 1); idle OpenMP threads sleep (OMP_WAIT_POLICY="
                                                         "PASSIVE)."),
) -> None:
    """Optin's command line."""
    apply_thread_defaults(threads)


@app.command()
def demo(
    workspaces: int = typer.Option(8, help="Number of synthetic workspaces."),
    opted_out: int = typer.Option(2, help="How many of them do not consent."),
    rounds: int = typer.Option(5, help="Federated rounds."),
    local_steps: int = typer.Option(30, help="DP-SGD steps per workspace per round."),
    noise_multiplier: float = typer.Option(1.0, help="Gaussian noise std / clipping norm."),
    seed: int = typer.Option(0, help="Seed of the data, model and sampling."),
    results: Path = typer.Option(Path("results"), help="Folder under which the run folder is created."),
    task: str = typer.Option("nextchar", help="What to learn (docs/tasks.md): 'nextchar' (the next character of "
                                              "a message) or 'reply' (whether a message is a thread reply)."),
) -> None:
    """Train on built-in synthetic workspaces in process and print per-round and per-workspace tables.

    Example: optin demo --workspaces 8 --opted-out 2 --rounds 5
    """
    from experiments.runners.demo import DEMO_CONFIG, print_demo, run_demo
    from federated.tasks import get_task

    try:
        get_task(task)  # an unknown task fails here, before any workspace is generated
        config = replace(DEMO_CONFIG, num_rounds=rounds, local_steps=local_steps, noise_multiplier=noise_multiplier,
                         task=task)
        result = run_demo(results, SyntheticSpec(num_workspaces=workspaces, seed=seed), opted_out, config, console)
    except (OptinError, ValueError) as exc:
        fail(exc)
    print_demo(result, console)


app.add_typer(data_app, name="data")
