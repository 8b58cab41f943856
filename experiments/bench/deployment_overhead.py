"""How many seconds per round Flower's Deployment Engine adds above compute, and what sets that figure.

One run trains the same synthetic federation (all workspaces opted in) with the same config at two
amounts of local training (``--local-steps``, default 1 and 20), two ways:

- **in process** (``experiments.runners.in_process.run_federation``, on fresh copies of the workspaces): compute
  plus negligible dispatch; this is the compute baseline;
- **deployed**: one ``LoopbackDeployment`` (a SuperLink and one SuperNode per workspace on 127.0.0.1, TLS
  and SuperNode authentication on) that runs one ``flwr run`` per amount of local training.

A round's wall time is read the same way in both: from the server audit log, the time between the
consent answers of round r and of round r + 1 (one ``train`` exchange, then one ``evaluate`` exchange that
also carries round r + 1's ``query``), averaged over rounds 1..R-1. Overhead = deployed − in process, per
amount of local training. It also reads, from each node's executor log, what each message cost on the node:
the handler's own time and what the runtime added around it (taking the task, pulling the message and
its model from the SuperNode, pushing the reply); and, for comparison in the same run, what Flower's
stock runtime paid per message before any of that (n fresh interpreters importing Flower's ClientApp
runtime, Optin's ClientApp, torch and Opacus, started at once). The workspaces get a large privacy
budget (synthetic data): the runs must not be cut short by budget exhaustion.

What determines the overhead (Flower 1.42; nodes as ``optin node`` runs them: ``--isolation process`` and
Optin's executor, ``clients/node_executor.py``):

- **2 message exchanges per round** (``train``; ``evaluate`` with the next round's ``query``), each a
  ServerApp → SuperLink → SuperNode → worker → back trip.
- **Flower's fixed polling, per exchange**: an idle SuperNode asks the SuperLink for messages every 3 s
  (a constant in Flower's code), so a message waits 1.5 s on average (0 to 3 s) before a node sees it.
  The SuperNode offers the task while it is still fetching the message's model from the SuperLink, and
  Flower waits 1 s before its next try for a part not there yet: that shows up in the runtime time of
  model-carrying messages.
- **Optin's own polling**: the executor looks for a task every 0.2 s, the ServerApp for replies every
  0.1 s (``server/reply_polling.py``; Flower's own grid waits 3 s).
- **A fresh process per message**, forked from a server that already imported everything: milliseconds.

Measured with this file (``--rounds 4``, 3 workspaces of 100-200 messages) on a shared 2-core machine:
see BENCHMARKS.md, section 4c, for the figures and the model. Rerun for yours:

    .venv/bin/python -m experiments.bench.deployment_overhead --rounds 4
"""

from __future__ import annotations

import datetime as dt
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from experiments.bench.common import Seed, bench_app
from experiments.cli.common import console, fail
from experiments.runners.deployment import LoopbackDeployment, write_dev_certificates
from experiments.runners.in_process import make_synthetic_federation, run_federation
from federated.audit import AUDIT_FILE, read_entries
from federated.config import RunConfig
from federated.data import SyntheticSpec
from federated.errors import OptinError
from federated.privacy.policy import Policy, write_policy
from server.reply_polling import POLL_INTERVAL_S

EXCHANGES_PER_ROUND = 2
NODE_POLL_S = 3.0
"""Flower 1.42's idle SuperNode: how long it sleeps between asking the SuperLink for messages."""
EXECUTOR_POLL_S, SERVER_POLL_S = 0.2, POLL_INTERVAL_S
"""Optin's: the node's executor looking for a task, the ServerApp looking for replies."""
NODE_LINE = re.compile(r"run \d+ (?P<type>[a-z]+): (?P<outcome>answered|refused: [a-z0-9-]+) in (?P<handler>[\d.]+) s "
                       r"\(pulled in (?P<pulled>[\d.]+) s, pushed in (?P<pushed>[\d.]+) s\)")
"""A node's line for one message (``clients.node_worker``)."""
CLIENTAPP_IMPORTS = "import flwr.supernode.runtime.run_clientapp, clients.app"
BENCH_BUDGET = 1e6
"""Lifetime ε budget given to the synthetic workspaces, so that no round is skipped for budget."""
REPO = Path(__file__).resolve().parents[2]


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


def message_seconds(logs: list[Path]) -> dict[str, dict[str, list[float]]]:
    """Per message type, the seconds of every message the nodes' logs record: handling it, pulling it in (taking
    the task, the message and its model from the SuperNode), pushing the reply out."""
    times: dict[str, dict[str, list[float]]] = {}
    for path in logs:
        for match in NODE_LINE.finditer(path.read_text(encoding="utf-8", errors="replace")):
            entry = times.setdefault(match["type"], {"handler": [], "pulled": [], "pushed": []})
            for part in entry:
                entry[part].append(float(match[part]))
    return times


def main(
    rounds: Annotated[int, typer.Option(
        help="Federated rounds per run (at least 2: round times are between rounds).")] = 3,
    workspaces: Annotated[int, typer.Option(help="Synthetic workspaces, one SuperNode each, all opted in.")] = 3,
    local_steps: Annotated[list[int], typer.Option(
        help="DP-SGD steps per workspace per round (one or more).")] = [1, 20],  # noqa: B006 - never mutated
    seed: Seed = 0,
    timeout: Annotated[float, typer.Option(help="Seconds each deployed run may take.")] = 900.0,
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
    messages: dict[str, dict[str, list[float]]] = {}
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
            messages = message_seconds([deployment.log_of(f"executor-{key.name}") for key in keys])
        cold += cold_start_seconds(workspaces)
    except OptinError as exc:
        fail(exc)
    _report(local, deployed, messages, cold, setup, workspaces, rounds, root)


def _report(local: dict[int, list[float]], deployed: dict[int, list[float]],
            messages: dict[str, dict[str, list[float]]], cold_starts: list[float], setup: float, nodes: int,
            rounds: int, root: Path) -> None:
    flower_polling = NODE_POLL_S / 2
    optin_polling = (EXECUTOR_POLL_S + SERVER_POLL_S) / 2
    overheads = {s: statistics.mean(deployed[s]) - statistics.mean(local[s]) for s in local}
    table = Table(title=f"Seconds per round: {nodes} nodes, {os.cpu_count()} CPU core(s), "
                        f"mean (min-max) of rounds 1..{rounds - 1}")
    for column in ("local steps", "in process (compute)", "deployed", "overhead", "deployed / in process"):
        table.add_column(column, justify="right")
    for steps in local:
        table.add_row(str(steps), _spread(local[steps]), _spread(deployed[steps]), f"{overheads[steps]:.1f}",
                      f"{statistics.mean(deployed[steps]) / statistics.mean(local[steps]):.1f}x")
    console.print(table)
    per_message = Table(title="Seconds per message on a node, median (min-max), every message of the runs")
    for column in ("message", "count", "handler", "pulled in", "pushed in"):
        per_message.add_column(column, justify="left" if column == "message" else "right")
    for kind, times in sorted(messages.items()):
        per_message.add_row(kind, str(len(times["handler"])),
                            *(_spread(times[part], statistics.median(times[part])) for part in ("handler", "pulled",
                                                                                                 "pushed")))
    per_message.add_row(f"stock runtime, before: {nodes} fresh interpreters importing flwr-clientapp + Optin at once",
                        str(len(cold_starts)), "", _spread(cold_starts, statistics.median(cold_starts)), "")
    console.print(per_message)
    model_table = Table(title="What the overhead is made of (per round)")
    for column in ("part", "seconds", "source"):
        model_table.add_column(column, justify="right" if column == "seconds" else "left")
    model_table.add_row("message exchanges", str(EXCHANGES_PER_ROUND), "train; evaluate + next round's query")
    model_table.add_row("Flower's fixed polling, expected per exchange", f"{flower_polling:.2f}",
                        f"half of the idle SuperNode's {NODE_POLL_S:g} s")
    model_table.add_row("Optin's polling, expected per exchange", f"{optin_polling:.2f}",
                        f"half of {EXECUTOR_POLL_S:g} s (executor) + {SERVER_POLL_S:g} s (ServerApp)")
    model_table.add_row("model: exchanges x polling", f"{EXCHANGES_PER_ROUND * (flower_polling + optin_polling):.1f}",
                        "plus each exchange's slowest node's runtime and handler times (table above)")
    model_table.add_row("deployment set-up (once)", f"{setup:.1f}", "SuperLink up, keys registered, nodes online")
    console.print(model_table)
    console.print(f"work folders (logs, audit logs, metrics.json): {root}", highlight=False)
    console.print(f"{statistics.mean(overheads.values()):.1f}")


def _spread(values: list[float], centre: float | None = None) -> str:
    """``centre (min-max)``; the centre defaults to the mean."""
    centre = statistics.mean(values) if centre is None else centre
    return f"{centre:.1f} ({min(values):.1f}-{max(values):.1f})"


app = bench_app(main)

if __name__ == "__main__":
    app()
