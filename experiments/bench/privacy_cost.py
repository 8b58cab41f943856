"""Accountant, ledger and audit cost of one round on a node, vs that round's DP-SGD compute.

What is measured, per scenario (how many releases the workspace's ledger already holds, and how
many distinct ``(noise multiplier, sampling rate)`` pairs they use), side by side in this process:

- **bookkeeping**: the privacy work a node does in one round, through the same library calls as the
  ClientApp: for the query, open the ledger (its open-time soundness check recomputes the lifetime ε),
  ``spent``, ``check_unit``, ``plan_round`` (projected ε); for the train message, take the workspace
  lock, open the ledger again, ``check_not_released``, ``check_unit``, ``plan_round``, ``record``
  (one SQLite transaction, ``synchronous=FULL``, which re-checks the budget and the replay inside
  it); and the two audit-log appends (consent answer, release; each ``fsync``-ed under the log's lock).
  Each repetition starts from a fresh copy of the scenario's ledger and audit log.
- **warm** / **cold**: with the accountant's per-(z, q) RDP-curve memo as a long-lived process has it
  (in-process grid, a Ray actor), and emptied first, as a fresh process has it (a Deployment
  Engine SuperNode starts a ``flwr-clientapp`` process per message): cold pays one RDP curve (~40 ms
  of numerics) per distinct (z, q) in the history.
- **compute**: ``train_dp_sgd`` for ``--local-steps`` steps on the same workspace's training set, at the
  public ``--sample-rate``.

The figure is bookkeeping / compute (median of per-repetition ratios; sides interleaved). Target: negligible.

Run: ``.venv/bin/python -m experiments.bench.privacy_cost`` (``--help`` for options).
"""

from __future__ import annotations

import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from clients.dp_training import DPSGDSettings, privacy_generator, train_dp_sgd
from clients.round_plan import plan_round
from clients.workspace_node import WorkspaceNode
from experiments.bench.common import (
    BatchSize,
    LocalSteps,
    Paired,
    Repeats,
    SampleRate,
    Seed,
    Threads,
    apply_threads,
    bench_app,
    header,
    interleaved,
    median,
    table,
)
from federated import audit
from federated.config import RunConfig
from federated.data import SyntheticSpec, generate_federation
from federated.privacy import accounting
from federated.privacy.ledger import LEDGER_FILE, Ledger
from federated.privacy.policy import Policy, write_policy
from federated.tasks import get_task

warnings.filterwarnings("ignore", message="Optimal order is the smallest alpha")

PARTS = ("lock", "ledger open+check", "spent+plan", "record", "audit")
DIGEST = "0" * 64
"""The model hash the bench's releases record (no model is sent)."""


@dataclass(frozen=True)
class Scenario:
    """A workspace whose ledger holds ``releases`` earlier releases using ``distinct`` (z, q) pairs."""

    releases: int
    distinct: int

    @property
    def label(self) -> str:
        return f"{self.releases} releases, {self.distinct} distinct (z, q)"


def clear_rdp_memo() -> None:
    """Empty the accountant's per-(z, q) memo, if it has one (as in a freshly started process)."""
    memo = getattr(accounting, "_rdp_per_step", None)
    if memo is not None:
        memo.cache_clear()


def prepare(template: Path, scenario: Scenario, settings: DPSGDSettings, policy: Policy) -> Path:
    """A copy of ``template`` whose ledger and audit log hold the scenario's earlier releases."""
    folder = template.parent / f"{template.name}-{scenario.releases}-{scenario.distinct}"
    shutil.copytree(template, folder)
    rate = settings.sample_rate
    log = audit.AuditLog(folder / audit.AUDIT_FILE)
    with Ledger(folder / LEDGER_FILE) as ledger:
        for i in range(scenario.releases):
            q = rate * (1 + (i % scenario.distinct) * 1e-3) if scenario.distinct else rate
            release = ledger.record("earlier", i, settings.noise_multiplier, q, settings.local_steps, policy.delta,
                                    max_epsilon=policy.max_epsilon, privacy_unit=policy.privacy_unit, group_size=1,
                                    sha256=DIGEST)
            log.append("consent", run_id="earlier", round=str(i), consent=True)
            # As the node logs it: the ledger's open-time check matches each release entry to its row.
            log.append("release", run_id="earlier", round=i, sha256=DIGEST, epsilon_total=release.epsilon_total,
                       steps=settings.local_steps)
    return folder


def bookkeeping(folder: Path, work: Path, config: RunConfig, settings: DPSGDSettings,
                cold: bool) -> dict[str, float]:
    """One round's privacy bookkeeping on a fresh copy of ``folder``; seconds per part."""
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(folder, work)
    node = WorkspaceNode(work)
    policy = node.consent(config).policy
    assert policy is not None
    if cold:
        clear_rdp_memo()
    else:  # what the process computed in earlier rounds: the history's curves and this round's
        with node.open_ledger() as ledger:
            plan_round(settings, policy, ledger)
    parts = dict.fromkeys(PARTS, 0.0)

    def clock(part: str, fn: Callable[[], object]) -> object:
        start = time.perf_counter()
        result = fn()
        parts[part] += time.perf_counter() - start
        return result

    ledger = clock("ledger open+check", node.open_ledger)
    clock("spent+plan", lambda: (ledger.spent(policy.delta), ledger.check_unit(policy.privacy_unit),
                                 plan_round(settings, policy, ledger)))
    ledger.close()
    clock("audit", lambda: node.audit().append("consent", run_id="bench", round="1", consent=True))
    lock = node.lock()
    clock("lock", lock.__enter__)
    try:
        ledger = clock("ledger open+check", node.open_ledger)
        plan = clock("spent+plan", lambda: (ledger.check_not_released("bench", 1),
                                            ledger.check_unit(policy.privacy_unit),
                                            plan_round(settings, policy, ledger))[-1])
        release = clock("record", lambda: ledger.record(
            "bench", 1, settings.noise_multiplier, plan.settings.sample_rate, settings.local_steps, policy.delta,
            max_epsilon=policy.max_epsilon, privacy_unit=policy.privacy_unit, group_size=1, sha256=DIGEST))
        ledger.close()
        clock("audit", lambda: node.audit().append("release", run_id="bench", round=1, sha256=DIGEST,
                                                   epsilon_total=release.epsilon_total, steps=settings.local_steps))
    finally:
        clock("lock", lambda: lock.__exit__(None, None, None))
    return parts


def main(
    releases: Annotated[list[int], typer.Option(help="Earlier releases in the ledger, one scenario each (one or "
                                                     "more).")] = [0, 10, 100],  # noqa: B006 - never mutated
    local_steps: LocalSteps = 10,
    sample_rate: SampleRate = 0.08,
    batch_size: BatchSize = 32,
    repeats: Repeats = 5,
    seed: Seed = 0,
    threads: Threads = None,
) -> None:
    apply_threads(threads)

    work = Path(tempfile.mkdtemp(prefix="optin-bench-"))
    template = generate_federation(work / "ws", SyntheticSpec(num_workspaces=1, seed=seed, min_messages=500,
                                                              max_messages=500))[0]
    write_policy(template, Policy(consent=True, max_epsilon=1e9))
    config = RunConfig(local_steps=local_steps, sample_rate=sample_rate, batch_size=batch_size,
                       seed=seed)
    settings = DPSGDSettings(noise_multiplier=config.noise_multiplier, max_grad_norm=config.max_grad_norm,
                             sample_rate=config.sample_rate, expected_batch_size=config.batch_size,
                             local_steps=config.local_steps, lr=config.lr)
    task = get_task(config.task, config.seq_len)
    policy = WorkspaceNode(template).consent(config).policy
    assert policy is not None
    data = WorkspaceNode(template).training_samples(task, config, policy)
    scenarios = [Scenario(r, 1 if r else 0) for r in releases]
    if max(releases) > 1:
        scenarios.append(Scenario(max(releases), max(releases)))
    folders = {s: prepare(template, s, settings, policy) for s in scenarios}
    print(header("Privacy bookkeeping per round vs the round's compute",
                 f"one workspace, {len(data)} training samples, {local_steps} DP-SGD steps at sample rate "
                 f"{sample_rate:g} (normalizer {batch_size}); ledger with SQLite synchronous=FULL, audit "
                 "appends fsync-ed"))

    results: dict[tuple[Scenario, bool], list[dict[str, float]]] = {(s, c): [] for s in scenarios for c in (False, True)}
    compute: list[float] = []

    def compute_side() -> float:
        start = time.perf_counter()
        train_dp_sgd(task, task.build_model(config.seed), data, settings, privacy_generator())
        compute.append(time.perf_counter() - start)
        return compute[-1]

    def bookkeeping_side() -> float:
        total = 0.0
        for (scenario, cold), runs in results.items():
            runs.append(bookkeeping(folders[scenario], work / "run", config, settings, cold))
            total += sum(runs[-1].values())
        return total

    interleaved({"compute": compute_side, "bookkeeping": bookkeeping_side}, repeats)
    rows = []
    for (scenario, cold), runs in results.items():
        totals = [sum(r.values()) for r in runs]
        rows.append([scenario.label, "cold" if cold else "warm",
                     *(median([r[part] for r in runs]) * 1000 for part in PARTS), median(totals) * 1000,
                     f"{Paired(totals, compute).ratio:.2%}"])
    print(f"compute: {median(compute):.2f} s per round (median)\n")
    print(table(["ledger", "memo", *(f"{part} ms" for part in PARTS), "total ms", "total / compute"], rows))


app = bench_app(main, __doc__)

if __name__ == "__main__":
    app()
