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

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flwr.app import Context, Message, MessageType

from clients.app import app as client_app
from experiments.bench.common import apply_threads, header, parser, quiet_logging, table
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


def child(args: argparse.Namespace) -> dict[str, Any]:
    """Run the federation under ``args.root`` and return the measurements (the subprocess's side)."""
    folders = sorted(p for p in Path(args.root).iterdir() if p.is_dir())
    n = len(folders)
    cohort_fraction = min(1.0, args.cohort / n)
    config = RunConfig(num_rounds=args.rounds, local_steps=args.local_steps, sample_rate=args.sample_rate,
                       batch_size=args.batch_size,
                       fraction_train=cohort_fraction, min_train_nodes=min(args.cohort, n),
                       fraction_evaluate=args.fraction_evaluate or cohort_fraction, seed=args.seed,
                       results_dir=str(Path(args.root).parent / f"results-{n}-{args.variant}"))
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
    for r in map(str, range(1, args.rounds + 1)):
        end = end_of[(MessageType.EVALUATE, r)]
        parts = {t: handler[(t, r)] for t in (MessageType.QUERY, MessageType.TRAIN, MessageType.EVALUATE)}
        rounds.append({"round": end - previous, **parts, "server+grid": end - previous - sum(parts.values())})
        previous = end
    return {"n": n, "variant": args.variant, "startup": end_of[(MessageType.EVALUATE, "0")] - start,
            "rounds": rounds, "baseline_mb": baseline_mb,
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_child(root: Path, variant: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, "-m", "experiments.bench.scale", "--child", str(root), "--variant", variant,
               "--rounds", str(args.rounds), "--cohort", str(args.cohort), "--local-steps", str(args.local_steps),
               "--batch-size", str(args.batch_size), "--seed", str(args.seed)]
    if args.threads is not None:
        command += ["--threads", str(args.threads)]
    if variant != "against":  # a source tree from before the public sampling rate has no such option
        command += ["--sample-rate", str(args.sample_rate)]
    if variant == "all":
        command += ["--fraction-evaluate", "1"]
    done = subprocess.run(command, capture_output=True, text=True, check=False,
                          cwd=args.against if variant == "against" else None)
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


def main() -> None:
    p = parser(__doc__.split("\n\n")[0], repeats=1)
    p.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000],
                   help="population sizes (default: %(default)s)")
    p.add_argument("--cohort", type=int, default=10, help="workspaces trained per round (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=1, help="rounds after round 0 (default: %(default)s)")
    p.add_argument("--messages", type=int, nargs=2, default=(40, 80), metavar=("MIN", "MAX"),
                   help="messages per workspace (default: %(default)s)")
    p.add_argument("--local-steps", type=int, default=5, help="DP-SGD steps per node (default: %(default)s)")
    p.add_argument("--sample-rate", type=float, default=0.25,
                   help="public Poisson sampling rate (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=12,
                   help="public normalizer of the noisy gradient sum (default: %(default)s)")
    p.add_argument("--evaluate-all", action="store_true",
                   help="also run each size with fraction-evaluate = 1 (every consenting node evaluates)")
    p.add_argument("--against", metavar="DIR", help="also run each size with the code in the source tree DIR")
    p.add_argument("--child", metavar="ROOT", help=argparse.SUPPRESS)
    p.add_argument("--variant", default="sampled", help=argparse.SUPPRESS)
    p.add_argument("--fraction-evaluate", type=float, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    apply_threads(args.threads)
    if args.child:
        args.root = args.child
        print(json.dumps(child(args)))
        return

    work = Path(tempfile.mkdtemp(prefix="optin-bench-scale-"))
    print(header("Scale: population 10 / 100 / 1000, cohort of 10",
                 f"{args.messages[0]}-{args.messages[1]} messages per workspace, {args.local_steps} DP-SGD steps at "
                 f"sample rate {args.sample_rate:g} (normalizer {args.batch_size}), {args.rounds} round(s) after round 0; one subprocess per run"))
    results = []
    for n in args.sizes:
        spec = SyntheticSpec(num_workspaces=n, seed=args.seed, min_messages=args.messages[0],
                             max_messages=args.messages[1])
        for rep in range(args.repeats):
            variants = ["sampled"] + ["all"] * args.evaluate_all + ["against"] * bool(args.against)
            for variant in variants if rep % 2 == 0 else variants[::-1]:
                root = work / f"{n}-{variant}-{rep}" / "workspaces"
                make_synthetic_federation(root, spec, opted_out=[])
                results.append(run_child(root, variant, args))
                print(f"  N={n} {variant}: round {results[-1]['rounds'][-1]['round']:.1f} s", flush=True)
    print()
    report(results)


if __name__ == "__main__":
    main()
