"""Flower Simulation Engine vs in process: the same federation, and where the extra time goes.

What is measured: the same synthetic federation (fresh, identical copies of the workspaces, all
consenting) and the same run config, run once with ``experiments.runners.flower_simulation.run_flower_simulation``
(``flwr run`` on a private local SuperLink, Ray backend, one CPU per ClientApp actor) and once with
``experiments.runners.in_process.run_federation`` (in process), in alternating order when repeated. Both
are timed from the call to its return (wall clock); the split comes from timestamps both runs
leave behind, read the same way for both:

- *SuperLink start*: the call to the SuperLink's "Starting the SuperLink Runtime HTTP API" log line;
- *run submission*: to its "Started task" line (``flwr run`` builds and submits the app, the
  SuperLink's executor starts ``flwr-simulation``);
- *simulation start*: to the simulation's "Initialising: RayBackend" line (``flwr-simulation``
  imports, installs the app, starts the ServerApp);
- *Ray + actors*: to its "Constructed ActorPool" line (``ray.init``, one actor per CPU);
- *first reply*: to the first node audit-log entry (each actor's first message imports Optin's
  ClientApp, torch and Opacus; the in-process run has these imported already);
- *round 0*: to the server audit log's first consent entry of round 1 (consent query and the
  initial model's evaluation on every node);
- *rounds*: from one round's first server consent entry to the next, the last one ending when
  ``metrics.json`` is written; the per-round figure is their mean;
- *teardown*: ``metrics.json`` to the return (``flwr ls`` for the run's status, stopping the
  SuperLink, the simulation and Ray; in process: nothing).

Per-message overhead = (Flower's round - in-process round) / messages per round (query, train and
evaluate to every node). Note that Ray runs two ClientApps at once on two CPUs (one torch thread
each) while the in-process grid runs them one after another (torch's default threads), so compute
is not identical. Target: whole run <= 2x the in-process run.

Run: ``.venv/bin/python -m experiments.bench.simulation_overhead`` (``--help`` for options).
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import re
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from experiments.bench.common import (
    BatchSize,
    LocalSteps,
    Messages,
    Repeats,
    SampleRate,
    Seed,
    Threads,
    Workspaces,
    apply_threads,
    bench_app,
    copy_workspaces,
    header,
    quiet_logging,
    table,
)
from experiments.runners.in_process import make_synthetic_federation, run_federation
from experiments.runners.flower_simulation import SimulationResources, run_flower_simulation
from federated.audit import AUDIT_FILE, read_entries
from federated.config import RunConfig
from federated.data import SyntheticSpec

STAGES = ("SuperLink start", "run submission", "simulation start", "Ray + actors", "first reply", "round 0")
SUPERLINK_MARKS = {"SuperLink start": "Starting the SuperLink Runtime HTTP API", "run submission": "Started task"}
SIMULATION_MARKS = {"simulation start": "Initialising: RayBackend", "Ray + actors": "Constructed ActorPool"}
_SUPERLINK_TIME = re.compile(r"^\w+ flwr (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \|")
_SIMULATION_TIME = re.compile(r"^(\d\d/\d\d/\d{4} \d\d:\d\d:\d\d):")


def first_line_time(log: Path, marker: str, pattern: re.Pattern[str], fmt: str) -> float | None:
    """Epoch seconds of the first line of ``log`` containing ``marker`` (local time, to the second
    or millisecond), or None."""
    if not log.is_file():
        return None
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        if marker in line and (match := pattern.match(line)):
            return dt.datetime.strptime(match.group(1), fmt).timestamp()
    return None


def audit_times(path: Path, kind: str = "consent") -> dict[int, float]:
    """Epoch seconds of the first ``kind`` entry of each round in an audit log."""
    first: dict[int, float] = {}
    for entry in read_entries(path):
        if entry.get("kind") == kind:
            first.setdefault(int(entry["round"]), dt.datetime.fromisoformat(entry["time"]).timestamp())
    return first


def timeline(start: float, end: float, folders: list[Path], results: Path, rounds: int,
             home: Path | None) -> dict[str, float | None]:
    """Stage durations (seconds) of one run; a stage whose mark is missing is None."""
    marks: dict[str, float | None] = {}
    if home is not None:
        superlink_log = home / "local-superlink" / "superlink.log"
        for stage, marker in SUPERLINK_MARKS.items():
            marks[stage] = first_line_time(superlink_log, marker, _SUPERLINK_TIME, "%Y-%m-%d %H:%M:%S,%f")
        for stage, marker in SIMULATION_MARKS.items():
            marks[stage] = first_line_time(results / "flwr-run.log", marker, _SIMULATION_TIME, "%m/%d/%Y %H:%M:%S")
    else:
        marks.update(dict.fromkeys([*SUPERLINK_MARKS, *SIMULATION_MARKS], start))
    marks["first reply"] = min(min(audit_times(f / AUDIT_FILE).values()) for f in folders)
    server = audit_times(results / AUDIT_FILE)
    marks["round 0"] = server[1]
    finished = (results / "metrics.json").stat().st_mtime
    stages: dict[str, float | None] = {}
    previous: float | None = start
    for stage in STAGES:
        mark = marks[stage]
        stages[stage] = None if mark is None or previous is None else mark - previous
        previous = mark if mark is not None else previous
    bounds = [server[r] for r in range(1, rounds + 1)] + [finished]
    stages["per round (mean)"] = statistics.mean(b - a for a, b in itertools.pairwise(bounds))
    stages["teardown"] = end - finished
    stages["total"] = end - start
    return stages


def main(
    workspaces: Workspaces = 4,
    messages: Messages = (100, 200),
    rounds: Annotated[int, typer.Option(help="Federated rounds.")] = 3,
    local_steps: LocalSteps = 10,
    sample_rate: SampleRate = 0.12,
    batch_size: BatchSize = 16,
    timeout: Annotated[float, typer.Option(help="Seconds the Flower run may take.")] = 600.0,
    repeats: Repeats = 1,
    seed: Seed = 0,
    threads: Threads = None,
) -> None:
    apply_threads(threads)

    work = Path(tempfile.mkdtemp(prefix="optin-bench-sim-"))
    spec = SyntheticSpec(num_workspaces=workspaces, seed=seed, min_messages=messages[0], max_messages=messages[1])
    template = list(make_synthetic_federation(work / "template", spec, opted_out=[]).folders)
    base = RunConfig(num_rounds=rounds, local_steps=local_steps, sample_rate=sample_rate,
                     batch_size=batch_size, seed=seed)
    resources = SimulationResources(client_cpus=1)
    print(header("Flower Simulation Engine vs in process",
                 f"{workspaces} workspaces ({messages[0]}-{messages[1]} messages), {rounds} rounds, "
                 f"{local_steps} DP-SGD steps at sample rate {sample_rate:g} (normalizer {batch_size}); Ray: "
                 f"{resources.federation_config(workspaces)}"))

    runs: dict[str, list[dict[str, float | None]]] = {"in process": [], "Flower simulation": []}
    for rep in range(repeats):
        for engine in (list(runs) if rep % 2 == 0 else list(runs)[::-1]):
            root = work / f"{engine.replace(' ', '-')}-{rep}"
            folders = copy_workspaces(template, root / "workspaces")
            config = replace(base, workspaces_root=str(root / "workspaces"), results_dir=str(root / "results"))
            home = root / "flwr-home" if engine == "Flower simulation" else None
            start = time.time()
            if home is None:
                with quiet_logging():
                    run_federation(folders, config)
            else:
                run_flower_simulation(config, resources=resources, timeout=timeout, flwr_home=home)
            runs[engine].append(timeline(start, time.time(), folders, root / "results", rounds, home))

    def med(engine: str, stage: str) -> float | None:
        values = [v for r in runs[engine] if (v := r[stage]) is not None]
        return statistics.median(values) if values else None

    stages = [*STAGES, "per round (mean)", "teardown", "total"]
    print(table(["stage (s)", *runs], [[stage, *(med(e, stage) if med(e, stage) is not None else "n/a" for e in runs)]
                                       for stage in stages]))
    inproc, flower = (statistics.median(r["total"] for r in runs[e]) for e in runs)
    round_in, round_fl = (statistics.median(r["per round (mean)"] for r in runs[e]) for e in runs)
    fixed_in, fixed_fl = inproc - rounds * round_in, flower - rounds * round_fl
    per_round = 3 * workspaces
    print(f"\nwhole run: Flower simulation / in process = {flower / inproc:.2f}x (target <= 2x: "
          f"{'met' if flower / inproc <= 2 else 'MISSED'})")
    print(f"per round: {round_fl / round_in:.2f}x; "
          f"per-message overhead {(round_fl - round_in) / per_round * 1000:.0f} ms "
          f"({per_round} messages per round)")
    print(f"fixed cost (start-up, round 0, teardown): {fixed_fl:.1f} s with Flower, {fixed_in:.1f} s in process")
    if 2 * round_in > round_fl:
        print(f"the whole run is within 2x from {max(1, math.ceil((fixed_fl - 2 * fixed_in) / (2 * round_in - round_fl)))}"
              f" rounds of this size on")


app = bench_app(main, __doc__)

if __name__ == "__main__":
    app()
