"""How many seconds per round Flower's Deployment Engine adds above compute, and what sets that figure.

One run trains the same synthetic federation (all workspaces opted in) with the same config at two
amounts of local training (``--local-steps``, default 1 and 20), two ways:

- **in process** (``experiments.federation.run_federation``, on fresh copies of the workspaces): compute
  plus negligible dispatch; this is the compute baseline;
- **deployed**: one ``LoopbackDeployment`` (a SuperLink and one SuperNode per workspace on 127.0.0.1, TLS
  and SuperNode authentication on) that runs one ``flwr run`` per amount of local training.

A round's wall time is read the same way in both: from the server audit log, the time between the
consent answers of round r and of round r + 1 (one ``train``, one ``evaluate`` and the next ``query``
exchange), averaged over rounds 1..R. Overhead = deployed − in process, per amount of local training.
It also times what the n ClientApp processes of one exchange pay before they can handle their message
(n fresh interpreters importing Flower's ClientApp runtime and Optin's ClientApp, torch and Opacus,
started at once), and prints everything side by side with a model of the overhead. The workspaces get a
large privacy budget (synthetic data): the two runs must not be cut short by budget exhaustion.

What determines the overhead (Flower 1.42, ``isolation = subprocess``):

- **3 message exchanges per round** (Optin's strategy: ``query``, ``train``, ``evaluate``), each a full
  ServerApp → SuperLink → SuperNode → ClientApp → back trip.
- **Polling, per exchange**: an idle SuperNode asks the SuperLink for messages every 3 s, its SuperExec
  looks for a task every 1 s (``FLWR_SUPEREXEC_TASK_POLL_INTERVAL``), the ServerApp asks for replies
  every 3 s. Expected wait ≈ 1.5 + 0.5 + 1.5 = 3.5 s (0 to 7 s).
- **A fresh process per message**: each message starts a ``flwr-clientapp`` process that imports torch
  and Opacus again; the n processes of an exchange start together and share the machine's cores.
- Not measured separately, and small at this size: TLS, node authentication, serialization and the
  loopback transfer of the ~0.5 MB model (milliseconds).

So overhead per round ≈ 3 × (3.5 s + concurrent cold start), whatever the local training: it dominates
tiny rounds (tests, demos) and fades relative to compute for real local training. Because deployed nodes
compute in parallel processes while the in-process baseline runs them one after another, heavy local
training can hide part of the overhead (the deployed round can even be shorter on many cores).

Measured with this file (``--rounds 3``, 3 workspaces of 100-200 messages) on a quiet 2-core machine
(load average < 1 before the run; each node's processes with ``OMP_NUM_THREADS=1``, which
``LoopbackDeployment`` sets unless the environment does):

    local steps   in process   deployed   overhead   ratio
              1          0.4       32.3       31.9   82.4x
             20          0.9       30.1       29.2   33.1x
    3 ClientApp cold starts at once: 5.2 s (median of 6); polling 3.5 s per exchange;
    model 3 x (3.5 + 5.2) = 26.1 s; the ~1-2 s per exchange it leaves out is the SuperNode's 0.5 s
    reply polling and each ClientApp process installing the app bundle (FAB) before it runs.

The overhead, ~30 s per round or ~10 s per exchange here, does not grow with local training. With
torch's default threads the 20-step round took 43.9 s (overhead 42.9 s): three ClientApps training at
once on 2 cores spin-wait on each other. Rerun for yours:

    .venv/bin/python -m experiments.bench.deployment_overhead --rounds 3
"""

from __future__ import annotations

import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import typer
from rich.table import Table

from experiments.cli_common import console, fail
from experiments.deploy import LoopbackDeployment, write_dev_certificates
from experiments.federation import make_synthetic_federation, run_federation
from federated.audit import AUDIT_FILE, read_entries
from federated.config import RunConfig
from federated.data import SyntheticSpec
from federated.errors import OptinError
from federated.privacy.policy import Policy, write_policy

EXCHANGES_PER_ROUND = 3
NODE_POLL_S, SUPEREXEC_POLL_S, SERVER_POLL_S = 3.0, 1.0, 3.0
"""Flower 1.42's idle polling periods: SuperNode pull loop, SuperExec task poll, ServerApp grid pull."""
CLIENTAPP_IMPORTS = "import flwr.supernode.runtime.run_clientapp, clients.app"
BENCH_BUDGET = 1e6
"""Lifetime ε budget given to the synthetic workspaces, so that no round is skipped for budget."""
REPO = Path(__file__).resolve().parents[2]

app = typer.Typer(add_completion=False)


def round_seconds(audit_log: Path) -> list[float]:
    """Wall time of each full round (consent answers of round r to those of r + 1, r >= 1)."""
    first: dict[int, dt.datetime] = {}
    for entry in read_entries(audit_log):
        if entry["kind"] == "consent":
            first.setdefault(int(entry["round"]), dt.datetime.fromisoformat(entry["time"]))
    rounds = sorted(r for r in first if r >= 1)
    return [(first[b] - first[a]).total_seconds() for a, b in zip(rounds, rounds[1:])]


def cold_start_seconds(processes: int, repeats: int = 3) -> list[float]:
    """Wall times until ``processes`` fresh interpreters, started at once, imported a ClientApp's modules."""
    times = []
    for _ in range(repeats):
        started = time.monotonic()
        running = [subprocess.Popen([sys.executable, "-c", CLIENTAPP_IMPORTS], cwd=REPO) for _ in range(processes)]
        if any(p.wait() != 0 for p in running):
            raise OptinError(f"a fresh interpreter could not run {CLIENTAPP_IMPORTS!r}")
        times.append(time.monotonic() - started)
    return times


def _workspaces(root: Path, spec: SyntheticSpec) -> tuple[Path, ...]:
    folders = make_synthetic_federation(root, spec, opted_out=[]).folders
    for folder in folders:
        write_policy(folder, Policy(consent=True, max_epsilon=BENCH_BUDGET))
    return folders


@app.command()
def main(
    rounds: int = typer.Option(3, help="Federated rounds per run (at least 2: round times are between rounds)."),
    workspaces: int = typer.Option(3, help="Synthetic workspaces, one SuperNode each, all opted in."),
    local_steps: list[int] = typer.Option([1, 20], help="DP-SGD steps per workspace per round (repeatable)."),
    seed: int = typer.Option(0, help="Seed of the data, model and sampling."),
    timeout: float = typer.Option(900.0, help="Seconds each deployed run may take."),
) -> None:
    """Measure the per-round overhead of the loopback deployment over the in-process run.

    Example: python -m experiments.bench.deployment_overhead --rounds 3 --local-steps 1 --local-steps 20
    """
    if rounds < 2:
        fail(f"--rounds: expected at least 2, got {rounds}")
    spec = SyntheticSpec(num_workspaces=workspaces, seed=seed, min_messages=100, max_messages=200)
    # 80 to 160 training messages each: ~12 per Poisson batch at this public rate.
    base = RunConfig(num_rounds=rounds, sample_rate=0.1, batch_size=12, seed=seed, min_available_nodes=workspaces)
    root = Path(tempfile.mkdtemp(prefix="optin-bench-deploy-"))
    local: dict[int, list[float]] = {}
    deployed: dict[int, list[float]] = {}
    try:
        cold = cold_start_seconds(workspaces)  # before and after the runs: the machine's load may change
        for steps in local_steps:
            results = root / f"inprocess-{steps}" / "results"
            run_federation(_workspaces(root / f"inprocess-{steps}" / "workspaces", spec),
                           replace(base, local_steps=steps, results_dir=str(results)))
            local[steps] = round_seconds(results / AUDIT_FILE)
        folders = _workspaces(root / "deployed" / "workspaces", spec)
        certs, keys = write_dev_certificates(root / "deployed" / "certs", [f.name for f in folders])
        started = time.monotonic()
        with LoopbackDeployment(root / "deployed" / "flower", certs) as deployment:
            cli = deployment.start_superlink()
            ids = [cli.register(key.public_key, key.name) for key in keys]
            for key, folder in zip(keys, folders):
                deployment.start_supernode(key, folder)
            cli.wait_online(ids)
            setup = time.monotonic() - started
            for steps in local_steps:
                config = replace(base, local_steps=steps, results_dir=str(root / "deployed" / f"results-{steps}"))
                outcome = cli.run(config, deployment.log_of(f"flwr-run-{steps}"), timeout=timeout)
                deployed[steps] = round_seconds(outcome.results / AUDIT_FILE)
        cold += cold_start_seconds(workspaces)
    except OptinError as exc:
        fail(exc)
    _report(local, deployed, cold, setup, workspaces, rounds, root)


def _report(local: dict[int, list[float]], deployed: dict[int, list[float]], cold_starts: list[float], setup: float,
            nodes: int, rounds: int, root: Path) -> None:
    polling = (NODE_POLL_S + SUPEREXEC_POLL_S + SERVER_POLL_S) / 2
    cold = statistics.median(cold_starts)
    model = EXCHANGES_PER_ROUND * (polling + cold)
    overheads = {s: statistics.mean(deployed[s]) - statistics.mean(local[s]) for s in local}
    table = Table(title=f"Seconds per round: {nodes} nodes, {os.cpu_count()} CPU core(s), "
                        f"mean (min-max) of rounds 1..{rounds}")
    for column in ("local steps", "in process (compute)", "deployed", "overhead", "deployed / in process"):
        table.add_column(column, justify="right")
    for steps in local:
        table.add_row(str(steps), _spread(local[steps]), _spread(deployed[steps]), f"{overheads[steps]:.1f}",
                      f"{statistics.mean(deployed[steps]) / statistics.mean(local[steps]):.1f}x")
    console.print(table)
    model_table = Table(title="What the overhead is made of (per round)")
    for column in ("part", "seconds", "source"):
        model_table.add_column(column, justify="right" if column == "seconds" else "left")
    model_table.add_row("message exchanges", str(EXCHANGES_PER_ROUND), "query, train, evaluate")
    model_table.add_row("expected polling wait per exchange", f"{polling:.1f}",
                        f"half of {NODE_POLL_S:g} s (node) + {SUPEREXEC_POLL_S:g} s (SuperExec) "
                        f"+ {SERVER_POLL_S:g} s (ServerApp)")
    model_table.add_row("ClientApp cold start per exchange", _spread(cold_starts, cold),
                        f"measured {len(cold_starts)} times (median): {nodes} fresh processes importing "
                        "flwr-clientapp + Optin at once")
    model_table.add_row("model: exchanges x (polling + cold start)", f"{model:.1f}",
                        "an upper bound for 'overhead': cold starts overlap polling")
    model_table.add_row("deployment set-up (once)", f"{setup:.1f}", "SuperLink up, keys registered, nodes online")
    console.print(model_table)
    console.print(f"work folders (logs, audit logs, metrics.json): {root}", highlight=False)
    console.print(f"{statistics.mean(overheads.values()):.1f}")


def _spread(values: list[float], centre: float | None = None) -> str:
    """``centre (min-max)``; the centre defaults to the mean."""
    centre = statistics.mean(values) if centre is None else centre
    return f"{centre:.1f} ({min(values):.1f}-{max(values):.1f})"


if __name__ == "__main__":
    app()
