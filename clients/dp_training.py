"""Local DP-SGD on one workspace's messages with Opacus.

Guarantee (per call): ``local_steps`` steps, each of which

- draws its batch by **Poisson sampling**: every training sample joins independently with probability
  ``sample_rate`` (a public setting, never derived from the number of samples), so batches vary in size
  and may be empty;
- computes every sample's gradient, **zeroes any per-sample gradient that is not finite** (a hostile model
  can make one sample's gradient NaN or Inf, which clipping cannot bound: zeroed, that sample contributes
  nothing, so one sample still moves the sum by at most ``max_grad_norm``), clips each to L2 norm
  ``max_grad_norm`` (Opacus' flat clipping) and sums them;
- adds Gaussian noise of std ``noise_multiplier * max_grad_norm`` to the sum and divides by
  ``expected_batch_size``, a public constant (dividing by the real batch size would make the step depend
  on it).

So each step is the Poisson-subsampled Gaussian mechanism with noise multiplier ``noise_multiplier`` and
rate ``sample_rate`` on one sample's contribution (neighbouring relation: add or remove one sample; the
node makes one sample per privacy unit); ``clients.round_plan`` accounts it.

**Randomness**: sampling and noise come from a fresh ``torch.Generator`` per call, seeded with 64 bits from
``os.urandom`` (``privacy_generator``). Nothing the server sends or knows enters it, so the server cannot
replay the noise and subtract it; two calls on the same inputs give different releases. The noise uses
Opacus' secure-mode sampling (each Gaussian is the scaled sum of four draws, against floating-point
attacks on a single Gaussian sample, Mironov 2012 / Jin et al. 2021). Limits: torch's CPU generator is a
Mersenne Twister, not a cryptographic generator: the defence is that its 64-bit seed is secret and fresh,
and that its outputs are never released except added to gradients. A node-local operator setting can
instead seed it for repeatable research runs (``repeatable_generator``); such releases are not private
and are marked so by the caller.

Per-sample gradients come from PyTorch's ExpandedWeights (Opacus ``grad_sample_mode="ew"``) when every
layer with parameters is one it computes exact per-sample gradients for (``EW_LAYERS``) and no parameter is
tied, else from Opacus' hooks; clipping and noise are the same ``DPOptimizer`` either way. ExpandedWeights
cannot run an empty batch, so an empty Poisson batch skips the forward pass and steps on zero per-sample
gradients: exactly what hooks produce for it (nothing to clip, noise only).
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from dataclasses import dataclass

import torch
from opacus.grad_sample.utils import prepare_module
from opacus.optimizers import DPOptimizer, get_optimizer_class
from torch import nn
from torch.utils.data import TensorDataset

from federated.limits import PHYSICAL_BATCH
from federated.tasks import Task

log = logging.getLogger("optin.node.dp")

# Expected: the first layer's input is token ids, which never require gradients.
warnings.filterwarnings("ignore", message="Full backward hook is firing when gradients are computed")


EW_LAYERS = (nn.Linear, nn.Embedding, nn.LayerNorm)
"""Layers whose per-sample gradients ExpandedWeights computes (the others fall back to hooks)."""


@dataclass(frozen=True)
class DPSGDSettings:
    """What one round of local DP-SGD runs with (already the stricter of server and node).

    ``sample_rate`` is the Poisson rate ``q``; ``expected_batch_size`` only scales the step (the noisy sum of
    clipped gradients is divided by it), like a learning rate: it is public and does not affect privacy.
    """

    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float
    expected_batch_size: int
    local_steps: int
    lr: float


@dataclass(frozen=True)
class DPSGDOutcome:
    """What actually ran: the state dict after training, the steps and sampling rate, and node-local figures
    (``mean_loss``, ``dropped_samples``) that stay on the node."""

    state_dict: dict[str, torch.Tensor]
    steps: int
    sample_rate: float
    mean_loss: float | None
    dropped_samples: int


def privacy_generator() -> torch.Generator:
    """A generator for DP sampling and noise, seeded with 64 fresh bits from the OS."""
    return torch.Generator().manual_seed(int.from_bytes(os.urandom(8), "little"))


def repeatable_generator(seed: int) -> torch.Generator:
    """A generator seeded by a node-local operator setting, for repeatable research runs: not private."""
    return torch.Generator().manual_seed(seed)


def grad_sample_mode(model: nn.Module) -> str:
    """``"ew"`` if every module that owns parameters is one of ``EW_LAYERS`` and no parameter is shared
    (tied) between modules, else ``"hooks"``."""
    owners = [m for m in model.modules() if next(m.parameters(recurse=False), None) is not None]
    owned = [id(p) for m in owners for p in m.parameters(recurse=False)]
    return "ew" if len(owned) == len(set(owned)) and all(type(m) in EW_LAYERS for m in owners) else "hooks"


def train_dp_sgd(task: Task, model: nn.Module, data: TensorDataset, settings: DPSGDSettings,
                 generator: torch.Generator) -> DPSGDOutcome:
    """Run ``settings.local_steps`` DP-SGD steps on ``data``; ``model`` must be a plain (unwrapped) module.

    ``data`` may be empty: every batch is then empty and each step releases noise only.
    """
    if not 0 < settings.sample_rate <= 1:
        raise ValueError(f"sample_rate: expected a value in (0, 1], got {settings.sample_rate}")
    private_model, optimizer = make_private(model, settings, generator)
    inputs_all, targets_all = data.tensors
    losses: list[float] = []
    dropped = 0
    for _ in range(settings.local_steps):
        chosen = (torch.rand(len(inputs_all), generator=generator) < settings.sample_rate).nonzero().squeeze(1)
        loss, zeroed = dp_step(task, private_model, optimizer, inputs_all[chosen], targets_all[chosen])
        if loss is not None and math.isfinite(loss):
            losses.append(loss)
        dropped += zeroed
    if dropped:
        log.warning("zeroed %d non-finite per-sample gradient(s): the model sent is likely hostile", dropped)
    state = {k: v.detach().clone() for k, v in private_model.to_standard_module().state_dict().items()}
    return DPSGDOutcome(state_dict=state, steps=settings.local_steps, sample_rate=settings.sample_rate,
                        mean_loss=sum(losses) / len(losses) if losses else None, dropped_samples=dropped)


def make_private(model: nn.Module, settings: DPSGDSettings,
                 generator: torch.Generator) -> tuple[nn.Module, DPOptimizer]:
    """``model`` wrapped for per-sample gradients and its DP optimizer (SGD with momentum 0.9; flat clipping to
    ``max_grad_norm``; secure-mode Gaussian noise of std ``noise_multiplier * max_grad_norm`` from ``generator``;
    the sum divided by ``expected_batch_size``)."""
    model.train()
    mode = grad_sample_mode(model)
    private_model = prepare_module(model, grad_sample_mode=mode, batch_first=True, loss_reduction="mean")
    optimizer_class = get_optimizer_class(clipping="flat", distributed=False, grad_sample_mode=mode)
    optimizer: DPOptimizer = optimizer_class(
        torch.optim.SGD(private_model.parameters(), lr=settings.lr, momentum=0.9),
        noise_multiplier=settings.noise_multiplier,
        max_grad_norm=settings.max_grad_norm,
        expected_batch_size=settings.expected_batch_size,
        loss_reduction="mean",
        generator=generator,
        secure_mode=True,
    )
    return private_model, optimizer


def dp_step(task: Task, private_model: nn.Module, optimizer: DPOptimizer, inputs: torch.Tensor,
            targets: torch.Tensor, physical_batch: int = PHYSICAL_BATCH) -> tuple[float | None, int]:
    """One DP-SGD step on one (Poisson) batch, which may be empty; returns the batch's loss (None when empty,
    node-local) and how many non-finite per-sample gradients were zeroed.

    Per-sample gradients are computed for at most ``physical_batch`` samples at a time: each chunk's are
    checked and clipped and added to the running sum (Opacus' skipped steps), and the noise is added once, to
    the sum over the whole batch. So the step is the same mechanism whatever the chunking, while memory is
    bounded by the chunk, not by the batch size a server's sampling rate implies.
    """
    if not len(inputs):
        optimizer.zero_grad(set_to_none=True)
        for param in optimizer.params:
            param.grad_sample = torch.zeros((0, *param.shape), dtype=param.dtype)
        optimizer.step()
        return None, 0
    total_loss, zeroed = 0.0, 0
    for start in range(0, len(inputs), physical_batch):
        stop = min(start + physical_batch, len(inputs))
        optimizer.zero_grad(set_to_none=True)
        value = task.loss(private_model(inputs[start:stop]), targets[start:stop])
        value.backward()
        total_loss += value.item() * (stop - start)
        zeroed += zero_non_finite_samples(optimizer)
        optimizer.signal_skip_step(do_skip=stop < len(inputs))
        optimizer.step()
    return total_loss / len(inputs), zeroed


@torch.no_grad()
def zero_non_finite_samples(optimizer: DPOptimizer) -> int:
    """Zero every sample's gradient (in all parameters) whose squared L2 norm is not finite (a NaN or Inf entry,
    or entries too large to square); returns how many samples were zeroed. Whether a sample is zeroed depends
    on that sample alone."""
    grads = [g for g in optimizer.grad_samples if g is not None]
    if not grads:
        return 0
    samples = grads[0].shape[0]
    squared = sum(grad.reshape(samples, -1).square().sum(dim=1) for grad in grads)
    finite = torch.isfinite(squared)
    if finite.all():
        return 0
    for grad in grads:
        grad[~finite] = 0
    return int((~finite).sum())
