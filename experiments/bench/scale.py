"""Scale: time per round and peak memory for 10, 100, 1000 simulated workspaces and a cohort of 10.

What is measured: for each population size N, a fresh subprocess runs Optin's ServerApp and ClientApp
in process (``experiments.runners.in_process.run_federation``'s grid) on N synthetic workspaces (all
consenting, ``results-dir`` set as the demo does) with ``fraction-train = cohort / N`` and
``min-train-nodes = cohort``, so every round trains exactly ``--cohort`` workspaces, and
``fraction-evaluate = cohort / N``, so every round evaluates ``--cohort`` workspaces too (a sample of
its own). Per round, from the grid's observer (the end of each ``send_and_receive``) and from timing
every ClientApp call:

- *round*: wall time from the end of round r-1 to the end of round r's evaluation;
- *query*: the nodes' query handlers (consent, ledger, budget projection from the cached split,
  audit entry). Consent is per node and may change every round, so the strategy asks all N: this
  part necessarily scales with the population, and is also shown per node;
- *train*: the cohort's train handlers (DP-SGD; should not depend on N);
- *evaluate*: the evaluate handlers of the sampled nodes (of every consenting node with
  ``--evaluate-all``); also per node of the population;
- *server+grid*: the rest of the round: the strategy (sampling, the server's audit entries, one per
  node for its consent answer and one per node not sampled, written as two batches; FedAvg) and the
  grid (message copies). Also per node.

Memory: the subprocess's peak resident set (``getrusage`` ``ru_maxrss``) and its growth over the
resident set measured just before the run (after imports and set-up), so imports do not count.
Round 0 (the initial model's evaluation, with its own query) is reported apart as start-up.

Variants, each in its own subprocess, interleaved: *sampled* (as above; always run), *all* (with
``--evaluate-all``: ``fraction-evaluate = 1``, every consenting node evaluates every round), and
*against* (with ``--against DIR``: this script's child run from the source tree ``DIR``, e.g. an
earlier commit unpacked with ``git archive <commit> | tar -x -C DIR``, with that tree's defaults; its
``experiments/bench/scale.py`` must accept the child options ``--child --variant --rounds --cohort
--local-steps --sample-rate --batch-size --seed --threads``; ``--sample-rate`` only where it exists). The federation is generated afresh for each run.

Run: ``.venv/bin/python -m experiments.bench.scale`` (``--help`` for options).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from flwr.app import Context, Message, MessageType

from clients.app import app as client_app
from experiments.bench.common import (
    BatchSize,
    LocalSteps,
    Messages,
    Repeats,
    SampleRate,
    Seed,
    Threads,
    apply_threads,
    bench_app,
    header,
    quiet_logging,
    table,
)
from experiments.runners.in_process import make_synthetic_federation
from federated.config import RunConfig
from federated.data import SyntheticSpec
from federated.inprocess import run_in_process
from server.app import app as server_app


def resident_mb() -> float:
    """This process's resident set now, in MB (``/proc/self/status``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass(frozen=True)
class ChildOptions:
    """What a child run is told on its command line (besides the federation's folder and its variant)."""

    rounds: int
    cohort: int
    local_steps: int
    sample_rate: float
    batch_size: int
    seed: int
    threads: int | None
    fraction_evaluate: float | None = None
    """None: the cohort's share of the population, as for training."""


def child(root: Path, variant: str, options: ChildOptions) -> dict[str, Any]:
    """Run the federation under ``root`` and return the measurements (the subprocess's side)."""
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    n = len(folders)
    cohort_fraction = min(1.0, options.cohort / n)
    config = RunConfig(num_rounds=options.rounds, local_steps=options.local_steps,
                       sample_rate=options.sample_rate, batch_size=options.batch_size,
                       fraction_train=cohort_fraction, min_train_nodes=min(options.cohort, n),
                       fraction_evaluate=options.fraction_evaluate or cohort_fraction, seed=options.seed,
                       results_dir=str(root.parent / f"results-{n}-{variant}"))
    marks: list[tuple[str, str, float]] = []
    handler: dict[tuple[str, str], float] = defaultdict(float)

    def timed_app(message: Message, context: Context) -> Message:
        start = time.perf_counter()
        try:
            return client_app(message, context)
        finally:
            handler[(message.metadata.message_type, message.metadata.group_id)] += time.perf_counter() - start

    with quiet_logging():
        baseline_mb = resident_mb()
        start = time.perf_counter()
        run_in_process(server_app, timed_app, [{"workspace": str(f)} for f in folders], config.to_mapping(),
                       observer=lambda t, g, _replies: marks.append((t, g, time.perf_counter())))
    end_of = {(t, g): at for t, g, at in marks}
    rounds = []
    previous = end_of[(MessageType.EVALUATE, "0")]
    for r in map(str, range(1, options.rounds + 1)):
        end = end_of[(MessageType.EVALUATE, r)]
        parts = {t: handler[(t, r)] for t in (MessageType.QUERY, MessageType.TRAIN, MessageType.EVALUATE)}
        rounds.append({"round": end - previous, **parts, "server+grid": end - previous - sum(parts.values())})
        previous = end
    return {"n": n, "variant": variant, "startup": end_of[(MessageType.EVALUATE, "0")] - start,
            "rounds": rounds, "baseline_mb": baseline_mb,
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_child(root: Path, variant: str, options: ChildOptions, against: Path | None) -> dict[str, Any]:
    command = [sys.executable, "-m", "experiments.bench.scale", "--child", str(root), "--variant", variant,
               "--rounds", str(options.rounds), "--cohort", str(options.cohort),
               "--local-steps", str(options.local_steps), "--batch-size", str(options.batch_size),
               "--seed", str(options.seed)]
    if options.threads is not None:
        command += ["--threads", str(options.threads)]
    if variant != "against":  # a source tree from before the public sampling rate has no such option
        command += ["--sample-rate", str(options.sample_rate)]
    if variant == "all":
        command += ["--fraction-evaluate", "1"]
    done = subprocess.run(command, capture_output=True, text=True, check=False,
                          cwd=against if variant == "against" else None)
    if done.returncode != 0:
        raise SystemExit(f"size {root.name} ({variant}) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(results: Sequence[dict[str, Any]]) -> None:
    rows = []
    for res in results:
        n, last = res["n"], res["rounds"][-1]
        rows.append([n, res["variant"], res["startup"], last["round"], last["query"], last["query"] / n * 1000,
                     last["train"], last["evaluate"], last["evaluate"] / n * 1000, last["server+grid"],
                     last["server+grid"] / n * 1000, res["peak_mb"], res["peak_mb"] - res["baseline_mb"]])
    print(table(["N", "variant", "round 0 s", "round s", "query s", "query ms/node", "train s", "evaluate s",
                 "evaluate ms/node", "server+grid s", "server+grid ms/node", "peak RSS MB", "RSS growth MB"], rows))


def main(
    sizes: Annotated[list[int], typer.Option(
        help="Population sizes (one or more).")] = [10, 100, 1000],  # noqa: B006 - never mutated
    cohort: Annotated[int, typer.Option(help="Workspaces trained per round.")] = 10,
    rounds: Annotated[int, typer.Option(help="Rounds after round 0.")] = 1,
    messages: Messages = (40, 80),
    local_steps: LocalSteps = 5,
    sample_rate: SampleRate = 0.25,
    batch_size: BatchSize = 12,
    evaluate_all: Annotated[bool, typer.Option(
        "--evaluate-all",
        help="Also run each size with fraction-evaluate = 1 (every consenting node evaluates).")] = False,
    against: Annotated[Path | None, typer.Option(
        metavar="DIR", help="Also run each size with the code in the source tree DIR.")] = None,
    repeats: Repeats = 1,
    seed: Seed = 0,
    threads: Threads = None,
    child_root: Annotated[Path | None, typer.Option("--child", hidden=True)] = None,
    variant: Annotated[str, typer.Option(hidden=True)] = "sampled",
    fraction_evaluate: Annotated[float | None, typer.Option(hidden=True)] = None,
) -> None:
    apply_threads(threads)
    options = ChildOptions(rounds, cohort, local_steps, sample_rate, batch_size, seed, threads, fraction_evaluate)
    if child_root is not None:
        print(json.dumps(child(child_root, variant, options)))
        return

    work = Path(tempfile.mkdtemp(prefix="optin-bench-scale-"))
    print(header("Scale: population 10 / 100 / 1000, cohort of 10",
                 f"{messages[0]}-{messages[1]} messages per workspace, {local_steps} DP-SGD steps at "
                 f"sample rate {sample_rate:g} (normalizer {batch_size}), {rounds} round(s) after round 0; "
                 "one subprocess per run"))
    results = []
    for n in sizes:
        spec = SyntheticSpec(num_workspaces=n, seed=seed, min_messages=messages[0], max_messages=messages[1])
        for rep in range(repeats):
            variants = ["sampled"] + ["all"] * evaluate_all + ["against"] * bool(against)
            for run_variant in variants if rep % 2 == 0 else variants[::-1]:
                root = work / f"{n}-{run_variant}-{rep}" / "workspaces"
                make_synthetic_federation(root, spec, opted_out=[])
                results.append(run_child(root, run_variant, options, against))
                print(f"  N={n} {run_variant}: round {results[-1]['rounds'][-1]['round']:.1f} s", flush=True)
    print()
    report(results)


app = bench_app(main, __doc__)

if __name__ == "__main__":
    app()
