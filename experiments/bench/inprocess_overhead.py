"""In-process overhead: one federated round through Optin's apps vs a plain DP-SGD loop doing the same steps.

What is measured, side by side in this process (sides interleaved, rotating order):

- **optin**: one round of Optin's ServerApp and ClientApp on the in-process grid (as
  ``experiments.runners.in_process.run_federation`` runs them; ``num-rounds=1``, every workspace
  consenting, ``results-dir`` set as the demo does). Phase times come from the grid's observer, called when each ``send_and_receive`` returns:
  *query* = end of the round-0 evaluation to the end of the round-1 queries (every node answers
  consent and budget); *train* = end of the queries to the last train reply (message creation,
  delivery with its deep copy, and the ClientApp's train handler: policy, ledger open and budget
  check, data load and encoding, model build, DP-SGD, ledger record, audit append, reply arrays);
  *evaluate* = last train reply to the last evaluate reply (FedAvg, evaluate messages, each node's
  data load and held-out evaluation); *round* = the three together. Set-up, ServerApp start and
  round 0 (the initial model's evaluation) are not counted.
- **plain**: for the same nodes, the same training tensors (encoded before the clock starts), initial
  weights, Opacus settings (``grad_sample_mode``, flat clipping, secure-mode noise, the public
  ``sample-rate`` and ``batch-size``), generators and number of steps, a plain loop: build the model,
  wrap it and its optimizer with Opacus, the DP-SGD steps (Poisson batches drawn at the public rate).
  It leaves out what Optin adds around the mechanism (the check for non-finite per-sample gradients
  among them), so that cost counts as overhead. *plain+eval* adds ``task.evaluate`` on each node's
  held-out tensors (the compute the evaluate phase does).

The *in-run* ratios divide a phase by the time spent, within that same phase of that same run, in
DP-SGD proper (``train_dp_sgd``) and evaluation proper (``task.evaluate``): the overhead with the
machine's noise mostly cancelled (both are measured in the same seconds).

Before timing, one round is run and each node's reply is checked to be bitwise equal to the plain
loop's weights: both sides ran identical DP-SGD steps. For that the nodes run with the operator's
``repeatable-seed`` node setting (``clients.workspace_node``) and a fixed run id, so both sides draw
the same sampling and noise; such releases are marked not private, which costs the same. Every
repetition starts from fresh copies of the workspaces (empty ledgers and audit logs). Ratios: *train / plain* (target <= 1.10) and
*round / plain+eval*, as the median over repetitions of the ratio within a repetition, and the ratio
of each side's fastest repetition.

Run: ``.venv/bin/python -m experiments.bench.inprocess_overhead`` (``--help`` for options).
"""

from __future__ import annotations

import cProfile
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar

import torch
import typer
from flwr.app import ArrayRecord, Message, MessageType
from opacus.grad_sample.utils import prepare_module
from opacus.optimizers import get_optimizer_class
from torch.utils.data import TensorDataset

import clients.app
from clients.app import app as client_app
from clients.dp_training import DPSGDSettings, grad_sample_mode
from clients.round_plan import stricter
from clients.workspace_node import REPEATABLE_SEED_KEY, WorkspaceNode
from experiments.bench.common import (
    BatchSize,
    LocalSteps,
    Messages,
    Paired,
    Repeats,
    SampleRate,
    Seed,
    Threads,
    Workspaces,
    apply_threads,
    bench_app,
    copy_workspaces,
    header,
    interleaved,
    median,
    profile_report,
    quiet_logging,
    table,
)
from experiments.runners.in_process import make_synthetic_federation
from federated.config import RunConfig
from federated.data import SyntheticSpec
from federated.inprocess import FIRST_NODE_ID, run_in_process
from federated.privacy.policy import POLICY_FILE, read_policy
from federated.tasks import NextCharTask, Task, get_task
from server.app import app as server_app

warnings.filterwarnings("ignore", message="Full backward hook is firing when gradients are computed")
warnings.filterwarnings("ignore", message="Optimal order is the smallest alpha")

PHASES = ("query", "train", "evaluate")
RUN_ID = 1
"""The run id of every timed run: with the repeatable seed, it fixes each node's generator (fresh copies of the
workspaces each time, so no node is asked to release the same round twice)."""
T = TypeVar("T")


@dataclass(frozen=True)
class NodeInputs:
    """What the plain loop needs for one node, prepared before any clock starts."""

    train: TensorDataset
    held_out: TensorDataset
    settings: DPSGDSettings
    node: WorkspaceNode
    """With the bench's repeatable seed: ``node.generator(RUN_ID, 1)`` is the generator the node trains with."""


@dataclass
class PhaseClock:
    """The grid's observer: when each phase of round 1 ended, the train replies, and the time spent in
    DP-SGD and in evaluation proper (``train_dp_sgd``, ``task.evaluate``) during round 1. With a
    ``profiler``, it is enabled when round 1 starts (the caller disables it after the run)."""

    marks: dict[tuple[str, str], float] = field(default_factory=dict)
    train_replies: list[Message] = field(default_factory=list)
    compute: dict[str, float] = field(default_factory=lambda: {"dp-sgd": 0.0, "evaluate": 0.0})
    profiler: cProfile.Profile | None = None

    def __call__(self, message_type: str, group_id: str, replies: Sequence[Message]) -> None:
        self.marks[(message_type, group_id)] = time.perf_counter()
        if (message_type, group_id) == (MessageType.EVALUATE, "0"):
            self.compute = {key: 0.0 for key in self.compute}
            if self.profiler is not None:
                self.profiler.enable()
        if message_type == MessageType.TRAIN:
            self.train_replies = list(replies)

    def timing(self, key: str, fn: Callable[..., T]) -> Callable[..., T]:
        """``fn``, adding the seconds each call takes to ``compute[key]``."""
        def wrapper(*args: Any, **kwargs: Any) -> T:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.compute[key] += time.perf_counter() - start
        return wrapper

    def phases(self) -> dict[str, float]:
        start = self.marks[(MessageType.EVALUATE, "0")]
        query, train, evaluate = (self.marks[(t, "1")] for t in (MessageType.QUERY, MessageType.TRAIN,
                                                                 MessageType.EVALUATE))
        return {"query": query - start, "train": train - query, "evaluate": evaluate - train,
                "round": evaluate - start, "dp-sgd": self.compute["dp-sgd"],
                "compute": self.compute["dp-sgd"] + self.compute["evaluate"]}


def plain_dp_sgd(task: Task, state: dict[str, torch.Tensor], data: TensorDataset, settings: DPSGDSettings,
                 generator: torch.Generator) -> dict[str, torch.Tensor]:
    """The plain PyTorch + Opacus loop: the DP-SGD steps a node takes (Poisson batches at the public rate, flat
    clipping, secure-mode noise, the sum divided by the public batch size), and nothing else."""
    model = task.build_model(0)
    model.load_state_dict(state)
    model.train()
    mode = grad_sample_mode(model)
    private = prepare_module(model, grad_sample_mode=mode, batch_first=True, loss_reduction="mean")
    optimizer = get_optimizer_class(clipping="flat", distributed=False, grad_sample_mode=mode)(
        torch.optim.SGD(private.parameters(), lr=settings.lr, momentum=0.9),
        noise_multiplier=settings.noise_multiplier, max_grad_norm=settings.max_grad_norm,
        expected_batch_size=settings.expected_batch_size, loss_reduction="mean", generator=generator,
        secure_mode=True)
    inputs, targets = data.tensors
    for _ in range(settings.local_steps):
        optimizer.zero_grad(set_to_none=True)
        chosen = (torch.rand(len(inputs), generator=generator) < settings.sample_rate).nonzero().squeeze(1)
        if len(chosen):
            task.loss(private(inputs[chosen]), targets[chosen]).backward()
        else:  # ExpandedWeights cannot run an empty Poisson batch: step on no gradients
            for param in optimizer.params:
                param.grad_sample = torch.zeros((0, *param.shape), dtype=param.dtype)
        optimizer.step()
    return model.state_dict()


def node_inputs(folder: Path, task: Task, config: RunConfig, seed: int) -> NodeInputs:
    node = WorkspaceNode(folder, repeatable_seed=seed)
    policy = read_policy(folder / POLICY_FILE)
    requested = DPSGDSettings(noise_multiplier=config.noise_multiplier, max_grad_norm=config.max_grad_norm,
                              sample_rate=config.sample_rate, expected_batch_size=config.batch_size,
                              local_steps=config.local_steps, lr=config.lr)
    return NodeInputs(node.training_samples(task, config, policy), task.encode(node.held_out_messages(config, policy)),
                      stricter(requested, policy), node)


def main(
    workspaces: Workspaces = 4,
    messages: Messages = (300, 600),
    local_steps: LocalSteps = 10,
    sample_rate: SampleRate = 0.07,
    batch_size: BatchSize = 32,
    profile: Annotated[bool, typer.Option(
        "--profile", help="Print cProfile's top entries of round 1 of one more run.")] = False,
    repeats: Repeats = 5,
    seed: Seed = 0,
    threads: Threads = None,
) -> None:
    apply_threads(threads)

    work = Path(tempfile.mkdtemp(prefix="optin-bench-"))
    spec = SyntheticSpec(num_workspaces=workspaces, seed=seed, min_messages=messages[0],
                         max_messages=messages[1])
    template = make_synthetic_federation(work / "template", spec, opted_out=[]).folders
    config = RunConfig(num_rounds=1, local_steps=local_steps, sample_rate=sample_rate,
                       batch_size=batch_size, seed=seed, results_dir=str(work / "results"))
    task = get_task(config.task, config.seq_len)
    initial = task.build_model(config.seed).state_dict()
    # The secret (which keys the split) is created in the template, so every copy splits as the plain side does.
    inputs = [node_inputs(folder, task, config, seed) for folder in template]
    print(header("In-process overhead: one federated round vs the plain DP-SGD loop",
                 f"{workspaces} workspaces ({sum(len(i.train) for i in inputs)} training samples), "
                 f"{local_steps} DP-SGD steps each at sample rate {sample_rate:g} "
                 f"(normalizer {batch_size}), "
                 f"grad_sample_mode={grad_sample_mode(task.build_model(0))!r}"))

    def run_optin(profiler: cProfile.Profile | None = None) -> PhaseClock:
        folders = copy_workspaces(template, work / "run")
        clock = PhaseClock(profiler=profiler)
        with ExitStack() as stack:
            if profiler is not None:
                stack.callback(profiler.disable)
            for owner, name, key in ((clients.app, "train_dp_sgd", "dp-sgd"), (NextCharTask, "evaluate", "evaluate")):
                original = getattr(owner, name)
                setattr(owner, name, clock.timing(key, original))
                stack.callback(setattr, owner, name, original)
            run_in_process(server_app, client_app,
                           [{"workspace": str(f), REPEATABLE_SEED_KEY: str(seed)} for f in folders],
                           config.to_mapping(), run_id=RUN_ID, observer=clock)
        return clock

    def plain() -> dict[int, dict[str, torch.Tensor]]:
        """Every node's DP-SGD as the plain loop, by node id."""
        return {node_id: plain_dp_sgd(task, initial, node.train, node.settings, node.node.generator(str(RUN_ID), 1))
                for node_id, node in enumerate(inputs, start=FIRST_NODE_ID)}

    with quiet_logging():
        clock, expected = run_optin(), plain()
        for reply in clock.train_replies:
            got = reply.content["arrays"].to_torch_state_dict()
            want = ArrayRecord(expected[reply.metadata.src_node_id]).to_torch_state_dict()
            if not all(torch.equal(got[k], want[k]) for k in want):
                raise SystemExit(f"node {reply.metadata.src_node_id}: Optin's DP-SGD and the plain loop differ")
        print(f"check: {len(clock.train_replies)} nodes' updates are bitwise equal to the plain loop's\n")

        phases: list[dict[str, float]] = []
        plain_times: dict[str, list[float]] = {"plain": [], "plain+eval": []}

        def optin_side() -> float:
            phases.append(run_optin().phases())
            return phases[-1]["round"]

        def plain_side() -> float:
            start = time.perf_counter()
            plain()
            middle = time.perf_counter()
            for node in inputs:
                task.evaluate(task.build_model(config.seed), node.held_out)
            end = time.perf_counter()
            plain_times["plain"].append(middle - start)
            plain_times["plain+eval"].append(end - start)
            return end - start

        interleaved({"optin": optin_side, "plain": plain_side}, repeats)

        rows = [["optin", *(median([ph[k] for ph in phases]) for k in (*PHASES, "round"))],
                ["plain DP-SGD", "", median(plain_times["plain"]), "", ""],
                ["plain DP-SGD + eval", "", "", "", median(plain_times["plain+eval"])]]
        print(table(["side (median s)", "query", "train", "evaluate", "round"], rows))

        col = {k: [ph[k] for ph in phases] for k in ("train", "round", "dp-sgd", "compute")}
        ratios = [["train phase / plain DP-SGD", Paired(col["train"], plain_times["plain"]).describe(),
                   f"{median([t / c for t, c in zip(col['train'], col['dp-sgd'])]):.3f}x"],
                  ["round / plain DP-SGD + eval", Paired(col["round"], plain_times["plain+eval"]).describe(),
                   f"{median([t / c for t, c in zip(col['round'], col['compute'])]):.3f}x"]]
        print()
        print(table(["ratio", "side by side", "in-run: phase / its own DP-SGD (+eval) time"], ratios))
        train = Paired(col["train"], plain_times["plain"])
        print(f"\ntrain phase vs plain DP-SGD: {train.describe()} (target <= 1.10: "
              f"{'met' if train.ratio <= 1.10 else 'MISSED'})")
        if profile:
            profiler = cProfile.Profile()
            run_optin(profiler)
            print("\ncProfile of round 1 of one more run (optin side, as timed above; cumulative):")
            print(profile_report(profiler, limit=70))


app = bench_app(main, __doc__)

if __name__ == "__main__":
    app()
