"""DP overhead: one DP-SGD step vs one non-private step of the flagship model, per Opacus mode.

What is measured: the wall time of one optimizer step (zero grad, forward, loss, backward, step) of
the next-character transformer (``NextCharTask``, seq-len 64, default shape) on one fixed batch of
``--batch-size`` encoded synthetic messages. The non-private side is plain SGD (momentum 0.9, as
the node uses) on the same model and batch. Each DP side is Opacus' ``PrivacyEngine.make_private``
(noise multiplier 1, clipping norm 1, Poisson sampling, as the node uses) with one
``grad_sample_mode``:

- ``hooks``: per-sample gradients from forward/backward hooks (Opacus' default);
- ``functorch``: per-sample gradients from ``torch.func`` (vmap over the per-sample loss);
- ``ew``: PyTorch's ExpandedWeights (per-sample gradients computed inside autograd);
- ``ghost``: ghost clipping (per-sample gradient *norms* only, then a second backward pass); it
  needs a per-sample criterion.

A last side, ``node``, is the node's own step (``clients.dp_training.make_private`` and ``dp_step``): the
node's mode with Opacus' secure-mode Gaussian (four draws per coordinate, against floating-point
attacks), a generator seeded from the OS, and non-finite per-sample gradients zeroed before clipping.
Its ratio to its mode's plain Opacus side is the cost of those defences.

Sides run interleaved: each repetition times one step of every side, in rotating order, after one
untimed warm-up step each; the figure is the median over repetitions of (DP step time /
non-private step time) measured in the same repetition, a second apart, and the ratio of the
fastest repetitions (each side's cost when the shared machine left it alone). Target: at most 2x for the mode the node uses.

Before timing, each DP mode takes one step with noise 0 from the same weights on the same batch; its
update is compared with the ``hooks`` mode's (largest difference relative to the largest update),
so a fast mode that computed wrong per-sample gradients would show here.

Run: ``.venv/bin/python -m experiments.bench.dp_overhead`` (``--help`` for options).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Annotated

import torch
import typer
from opacus import PrivacyEngine
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from clients.dp_training import DPSGDSettings, dp_step, grad_sample_mode, make_private, privacy_generator
from experiments.bench.common import (
    Paired,
    Repeats,
    Seed,
    Threads,
    apply_threads,
    bench_app,
    header,
    interleaved,
    median,
    profile_top,
    table,
    timed,
)
from federated.data import SyntheticSpec, generate_workspace
from federated.tasks.nextchar import IGNORE, NextCharTask

MODES = ("hooks", "functorch", "ew", "ghost")
PLAIN = "non-private"
NODE = "node"

warnings.filterwarnings("ignore", message="Secure RNG turned off")
warnings.filterwarnings("ignore", message="Full backward hook is firing when gradients are computed")
warnings.filterwarnings("ignore", message="In CPU autocast, but the target dtype is not supported")


class PerSampleLoss(nn.Module):
    """The task's loss as a criterion ghost clipping can use: each message's mean token loss.

    With ``reduction = "none"`` it returns one loss per sample (what Opacus' ghost clipping asks
    for); with ``"mean"`` it equals ``NextCharTask.loss``.
    """

    reduction = "mean"

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        per_token = nn.functional.cross_entropy(logits.transpose(1, 2), targets, ignore_index=IGNORE,
                                                reduction="none")
        per_sample = per_token.sum(dim=1) / (targets != IGNORE).sum(dim=1).clamp(min=1)
        return per_sample if self.reduction == "none" else per_sample.mean()


@dataclass
class Side:
    """One way of taking a step: the step itself, and the model it updates."""

    step: Callable[[], None]
    model: nn.Module


def make_side(mode: str, task: NextCharTask, data: TensorDataset, batch: tuple[torch.Tensor, torch.Tensor],
              seed: int, noise_multiplier: float = 1.0) -> Side:
    """A step function for ``mode`` (``PLAIN`` or an Opacus ``grad_sample_mode``) on a fresh model."""
    model = task.build_model(seed)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    inputs, targets = batch
    if mode == PLAIN:
        def plain_step() -> None:
            optimizer.zero_grad(set_to_none=True)
            task.loss(model(inputs), targets).backward()
            optimizer.step()
        return Side(plain_step, model)
    if mode == NODE:
        # Opacus' make_private divides by len(data) / ceil(len(data) / batch), rounded down: the same normalizer
        # makes the updates comparable.
        expected = int(len(data) / math.ceil(len(data) / len(inputs)))
        settings = DPSGDSettings(noise_multiplier=noise_multiplier, max_grad_norm=1.0, sample_rate=1.0,
                                 expected_batch_size=expected, local_steps=1, lr=0.1)
        node_model, node_optimizer = make_private(model, settings, privacy_generator())

        def node_step() -> None:
            dp_step(task, node_model, node_optimizer, inputs, targets)
        return Side(node_step, model)

    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(data, batch_size=len(inputs), generator=generator)
    common = {"optimizer": optimizer, "data_loader": loader, "noise_multiplier": noise_multiplier,
              "max_grad_norm": 1.0, "poisson_sampling": True, "noise_generator": generator, "grad_sample_mode": mode}
    engine = PrivacyEngine(accountant="rdp")
    if mode == "ghost":
        private, private_optimizer, criterion, _ = engine.make_private(module=model, criterion=PerSampleLoss(),
                                                                       **common)
    else:
        private, private_optimizer, _ = engine.make_private(module=model, **common)
        criterion = task.loss

    def opacus_step() -> None:
        private_optimizer.zero_grad(set_to_none=True)
        criterion(private(inputs), targets).backward()
        private_optimizer.step()
    return Side(opacus_step, model)


def agreement(task: NextCharTask, data: TensorDataset, batch: tuple[torch.Tensor, torch.Tensor], seed: int,
              modes: list[str]) -> dict[str, str]:
    """Per mode: largest |update - hooks update| / largest |hooks update| after one noiseless step."""
    before = {n: p.detach().clone() for n, p in task.build_model(seed).named_parameters()}

    def update(mode: str) -> dict[str, torch.Tensor]:
        side = make_side(mode, task, data, batch, seed, noise_multiplier=0.0)
        side.step()
        return {n: p.detach() - before[n] for n, p in side.model.named_parameters()}

    reference = update("hooks")
    scale = max(float(d.abs().max()) for d in reference.values())
    result = {}
    for mode in modes:
        try:
            got = update(mode)
        except Exception as exc:  # noqa: BLE001 - a mode that cannot run this model is a finding, not a crash
            result[mode] = f"fails: {type(exc).__name__}: {str(exc).splitlines()[0][:90]}"
            continue
        result[mode] = f"{max(float((got[n] - reference[n]).abs().max()) for n in reference) / scale:.1e}"
    return result


def main(
    batch_size: Annotated[int, typer.Option(help="Samples per step.")] = 32,
    profile: Annotated[bool, typer.Option("--profile",
                                          help="Print cProfile's top entries of the node's DP mode.")] = False,
    repeats: Repeats = 20,
    seed: Seed = 0,
    threads: Threads = None,
) -> None:
    apply_threads(threads)

    task = NextCharTask(seq_len=64)
    messages = generate_workspace(0, SyntheticSpec(num_workspaces=1, seed=seed, min_messages=400,
                                                   max_messages=400)).messages
    data = task.encode(messages)
    batch = (data.tensors[0][:batch_size], data.tensors[1][:batch_size])
    node_mode = grad_sample_mode(task.build_model(seed))
    print(header("DP overhead: one DP-SGD step vs one non-private step",
                 f"NextCharTask seq-len 64, batch {batch_size}, "
                 f"{sum(p.numel() for p in task.build_model(0).parameters())} "
                 f"parameters; the node's DP-SGD uses grad_sample_mode={node_mode!r}"))

    agree = agreement(task, data, batch, seed, [m for m in (*MODES, NODE) if m != "hooks"])
    sides: dict[str, Side] = {PLAIN: make_side(PLAIN, task, data, batch, seed)}
    for mode in (*MODES, NODE):
        if agree.get(mode, "").startswith("fails"):
            continue
        sides[mode] = make_side(mode, task, data, batch, seed)
    for side in sides.values():
        side.step()  # warm-up: allocations, lazy initialisation

    times = interleaved({name: partial(timed, side.step) for name, side in sides.items()}, repeats)
    rows = []
    for name in sides:
        ratio = Paired(times[name], times[PLAIN])
        rows.append([name + (" (the node's mode)" if name == node_mode else ""), median(times[name]) * 1000,
                     min(times[name]) * 1000,
                     "1" if name == PLAIN else ratio.describe(),
                     "reference" if name == "hooks" else agree.get(name, "-")])
    rows += [[mode, "-", "-", agree[mode], "-"] for mode in (*MODES, NODE) if agree.get(mode, "").startswith("fails")]
    print(table(["side", "ms/step median", "ms/step best", "vs non-private", "update vs hooks (rel.)"], rows))
    node = Paired(times[NODE], times[PLAIN])
    print(f"\nthe node's step ({node_mode!r}, secure noise, non-finite gradients zeroed): {node.describe()} a "
          f"non-private step (target <= 2x: {'met' if node.ratio <= 2 else 'MISSED'}); "
          f"{Paired(times[NODE], times[node_mode]).describe()} Opacus' plain {node_mode!r} step")
    if profile:
        print(f"\ncProfile, 10 steps of mode {node_mode!r}:")
        side = sides[node_mode]
        print(profile_top(lambda: [side.step() for _ in range(10)], sort="tottime",
                          pattern=r"opacus|torch|nextchar"))


app = bench_app(main, __doc__)

if __name__ == "__main__":
    app()
