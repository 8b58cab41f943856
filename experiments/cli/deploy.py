"""Deployment commands: ``optin node`` (one workspace's SuperNode) and ``optin server`` (federation operator).

Both run Flower's own ``flower-supernode`` / ``flower-superlink`` with TLS and SuperNode authentication
always on and runtime dependency installation off (``experiments.runners.deployment`` builds the command lines; it is
imported inside each command, so that ``optin --help`` and the operator commands need no Flower import);
``--dry-run`` prints the command (with the environment it gets) instead of running it. A started process
runs in the foreground until it exits or is interrupted (Ctrl-C, SIGTERM); then it and every process it
started are stopped.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer
from rich.table import Table

from clients.node_limits import NodeLimits
from experiments.cli.common import console, fail
from federated.errors import OptinError
from federated.limits import MAX_LOCAL_STEPS, MAX_SEQ_LEN
from federated.privacy.policy import POLICY_FILE, read_policy

server_app = typer.Typer(help="Federation operator helpers: development certificates and the SuperLink.",
                         no_args_is_help=True)


def add_deploy_commands(app: typer.Typer) -> None:
    """Register ``optin node`` and ``optin server`` on the ``optin`` app."""
    app.command("node")(node)
    app.add_typer(server_app, name="server")


def node(
    workspace: Path = typer.Option(Path("."), "--workspace", "-w", help="The workspace folder this node serves."),
    superlink: str = typer.Option("127.0.0.1:8000", help="The SuperLink's address, HOST:PORT."),
    root_certificates: Path = typer.Option(..., "--root-certificates",
                                           help="CA certificate (PEM) that signed the SuperLink's TLS certificate."),
    auth_key: Path = typer.Option(..., "--auth-key",
                                  help="This node's private key (OpenSSH, EC P-384); the federation operator "
                                       "registers its public key."),
    port: int = typer.Option(9094, help="Loopback port of the node's local runtime API."),
    max_wait_time: float | None = typer.Option(None, help="Give up after this many seconds without reaching the "
                                                          "SuperLink, or being let in by it (default: keep trying "
                                                          "to reach it; retry a refused activation for 180 s)."),
    flwr_home: Path | None = typer.Option(None, help="Flower's folder for this node (installed apps); "
                                                    "default <workspace>/.flower."),
    max_seq_len: int = typer.Option(MAX_SEQ_LEN, min=1, help="The longest seq-len a run may ask of this node."),
    max_local_steps: int = typer.Option(MAX_LOCAL_STEPS, min=1,
                                        help="The most DP-SGD steps one round may ask of this node."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the flower-supernode command and exit."),
) -> None:
    """Run this workspace's SuperNode: TLS, node authentication, no runtime dependency installation.

    The node trains only while the workspace's policy says consent = true (checked at every message).
    Ctrl-C stops it.

    Example: optin node -w ./acme --root-certificates certs/ca.crt --auth-key certs/nodes/acme.key
    """
    from experiments.runners.deployment import SUPEREXEC_SECRET_FILE, executor_command, supernode_command, write_superexec_secret

    for path, what in ((root_certificates, "--root-certificates"), (auth_key, "--auth-key")):
        if not path.is_file():
            fail(f"{what} {path}: no such file")
    if not workspace.is_dir():
        fail(f"{workspace}: no such workspace folder")
    home = (flwr_home or workspace / ".flower").resolve()
    try:
        commands = [supernode_command(workspace, superlink, root_certificates.resolve(), auth_key.resolve(),
                                      home=home, port=port, max_wait_time=max_wait_time,
                                      limits=NodeLimits(max_seq_len=max_seq_len, max_local_steps=max_local_steps)),
                    executor_command(home, port)]
    except OptinError as exc:
        fail(exc)
    if dry_run:
        console.print(f"# run both, with {home / SUPEREXEC_SECRET_FILE} holding a secret only they can read",
                      highlight=False, markup=False)
        for command in commands:
            console.print(_shell(command, home), highlight=False, soft_wrap=True, markup=False)
        return
    write_superexec_secret(home)
    console.print(f"{workspace}: {_consent_summary(workspace)}", highlight=False)
    for command in commands:
        console.print(f"starting: {_shell(command, home)}", highlight=False, soft_wrap=True, markup=False)
    _run(commands, home, max_wait_time)


@server_app.command("dev-certs")
def dev_certs(
    outdir: Path = typer.Argument(..., help="Folder for the certificates and keys."),
    nodes: list[str] = typer.Option([], "--node", help="Make a node key pair with this name (repeatable)."),
    force: bool = typer.Option(False, help="Replace existing files."),
) -> None:
    """Write a DEVELOPMENT CA, a server certificate for localhost/127.0.0.1/::1 and node key pairs.

    For a federation on one machine only (tests, demos); never across machines.

    Example: optin server dev-certs ./certs --node acme --node globex
    """
    from experiments.runners.deployment import write_dev_certificates

    try:
        certs, keys = write_dev_certificates(outdir, nodes, force=force)
    except OptinError as exc:
        fail(exc)
    table = Table(title="DEVELOPMENT certificates (loopback only)")
    table.add_column("file")
    table.add_column("use")
    table.add_row(str(certs.ca_cert), "trust anchor: --root-certificates of nodes, root-certificates of flwr")
    table.add_row(f"{certs.server_cert}, {certs.server_key}", "the SuperLink's TLS certificate and key")
    for key in keys:
        table.add_row(f"{key.private_key}", f"node {key.name}: --auth-key of `optin node` (keep it on that node)")
        table.add_row(f"{key.public_key}", f"node {key.name}: `flwr supernode register` on the SuperLink")
    console.print(table)
    console.print(f"next: optin server superlink --certs {outdir}", highlight=False)


@server_app.command("superlink")
def superlink(
    certs: Path = typer.Option(..., "--certs", help="Folder with ca.crt, server.pem and server.key."),
    state: Path = typer.Option(Path("superlink-state"), help="Folder for the SuperLink's database and Flower home."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8000, help="Port of the Fleet, Control and runtime APIs (one port)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the flower-superlink command and exit."),
) -> None:
    """Run the SuperLink: TLS on, SuperNode authentication on, no runtime dependency installation.

    Only nodes whose public key was registered (`flwr supernode register KEY.pub CONNECTION`) may connect.

    Example: optin server superlink --certs ./certs --port 8000
    """
    from experiments.runners.deployment import ServerCertificates, superlink_command

    try:
        command = superlink_command(ServerCertificates.in_folder(certs.resolve()), state.resolve() / "state.db",
                                    host=host, port=port)
    except OptinError as exc:
        fail(exc)
    home = state.resolve() / "flwr-home"
    if dry_run:
        console.print(_shell(command, home), highlight=False, soft_wrap=True)
        return
    console.print(f"starting: {_shell(command, home)}", highlight=False, soft_wrap=True)
    _run([command], home)


def _shell(command: list[str], home: Path) -> str:
    """The command as a shell line, with the Flower home and the install switch ``run_in_foreground`` sets."""
    return shlex.join([f"FLWR_HOME={home}", "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1", *command])


def _consent_summary(workspace: Path) -> str:
    path = workspace / POLICY_FILE
    if not path.exists():
        return f"no {POLICY_FILE}: consent is off (turn it on with `optin consent on --workspace {workspace}`)"
    try:
        policy = read_policy(path)
    except OptinError as exc:
        return f"consent is off: {exc}"
    return f"consent is {'on' if policy.consent else 'off'} ({path})"


def _run(commands: list[list[str]], home: Path, retry_for: float | None = None) -> None:
    """Run ``commands`` in the foreground (``retry_for``: how long a refused activation is retried; None: the
    default) and exit with the first one's code."""
    from experiments.runners.deployment import RESTART_FOR_S, run_in_foreground

    try:
        code = run_in_foreground(commands, home, RESTART_FOR_S if retry_for is None else retry_for)
    except OptinError as exc:
        fail(exc)
    if code not in (0, 130):
        fail(f"{' / '.join(Path(c[0]).name for c in commands)} exited with code {code}")
    sys.exit(code)
