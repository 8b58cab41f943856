"""Local DP-SGD on one workspace's messages with Opacus.

Guarantee (per call): each optimizer step clips every sample's gradient to L2
norm ``max_grad_norm`` and adds Gaussian noise of std
``noise_multiplier * max_grad_norm`` to their sum; batches are drawn by Poisson
sampling (each sample independently with probability ``sample_rate``), so
batches vary in size and may be empty. The Opacus RDP accountant is restored
from ``history`` before training and records every step taken, so ε covers all
earlier releases of the run, not this call alone.
Assumption: one dataset row is one privacy unit (a message). Noise and
sampling come from a seeded ``torch.Generator`` (Opacus' ``secure_mode`` off):
fine for research runs, not a defence against floating-point attacks.

Per-sample gradients come from PyTorch's ExpandedWeights (Opacus
``grad_sample_mode="ew"``) when every layer with parameters is one it computes
exact per-sample gradients for (``EW_LAYERS``) and no parameter is tied, else
from Opacus' hooks. Both give the same per-sample gradients (up to float
rounding; ``experiments/bench/dp_overhead.py`` checks it), and clipping, noise
and accounting are the same ``DPOptimizer`` either way; on the flagship model a
step costs about 1.3x a non-private step with ExpandedWeights, 1.7x with hooks
(BENCHMARKS.md). ExpandedWeights cannot run an empty batch, so an empty Poisson
batch skips the forward pass and steps on zero per-sample gradients: exactly
what hooks produce for it (nothing to clip, noise only).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from opacus import PrivacyEngine
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from federated.privacy.accounting import Step, make_accountant
from federated.tasks import Task

# Both are expected here: secure_mode is off by design (see above), and the first
# layer's input is token ids, which never require gradients.
warnings.filterwarnings("ignore", message="Secure RNG turned off")
warnings.filterwarnings("ignore", message="Full backward hook is firing when gradients are computed")


EW_LAYERS = (nn.Linear, nn.Embedding, nn.LayerNorm)
"""Layers whose per-sample gradients ExpandedWeights computes (the others fall back to hooks)."""


@dataclass(frozen=True)
class DPSGDSettings:
    """What one round of local DP-SGD runs with (already the stricter of server and node)."""

    noise_multiplier: float
    max_grad_norm: float
    expected_batch_size: int
    local_steps: int
    lr: float


@dataclass(frozen=True)
class DPSGDOutcome:
    """What actually ran: the state dict after training and the accountant's full history."""

    state_dict: dict[str, torch.Tensor]
    history: list[Step]
    steps: int
    sample_rate: float
    mean_loss: float


def grad_sample_mode(model: nn.Module) -> str:
    """``"ew"`` if every module that owns parameters is one of ``EW_LAYERS`` and no parameter is shared
    (tied) between modules, else ``"hooks"``."""
    owners = [m for m in model.modules() if next(m.parameters(recurse=False), None) is not None]
    owned = [id(p) for m in owners for p in m.parameters(recurse=False)]
    return "ew" if len(owned) == len(set(owned)) and all(type(m) in EW_LAYERS for m in owners) else "hooks"


def train_dp_sgd(
    task: Task,
    model: nn.Module,
    data: TensorDataset,
    settings: DPSGDSettings,
    history: list[Step],
    generator: torch.Generator,
) -> DPSGDOutcome:
    """Run ``settings.local_steps`` DP-SGD steps on ``data``; ``model`` must be a plain (unwrapped) module."""
    model.train()
    engine = PrivacyEngine(accountant="rdp")
    engine.accountant = make_accountant("rdp", history)
    # Opacus sets the Poisson rate to 1/len(loader); this batch size makes it expected_batch_size/N.
    batch_size = max(1, min(settings.expected_batch_size, len(data)))
    loader = DataLoader(data, batch_size=batch_size, generator=generator)
    optimizer = torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=0.9)
    mode = grad_sample_mode(model)
    private_model, private_optimizer, private_loader = engine.make_private(
        module=model,
        optimizer=optimizer,
        data_loader=loader,
        noise_multiplier=settings.noise_multiplier,
        max_grad_norm=settings.max_grad_norm,
        poisson_sampling=True,
        noise_generator=generator,
        grad_sample_mode=mode,
    )
    losses: list[float] = []
    steps = 0
    while steps < settings.local_steps:
        for inputs, targets in private_loader:
            private_optimizer.zero_grad(set_to_none=True)
            if len(inputs):
                loss = task.loss(private_model(inputs), targets)
                loss.backward()
                if math.isfinite(loss.item()):
                    losses.append(loss.item())
            else:
                for param in private_optimizer.params:
                    param.grad_sample = torch.zeros((0, *param.shape), dtype=param.dtype)
            private_optimizer.step()
            steps += 1
            if steps == settings.local_steps:
                break
    sample_rate = 1.0 / len(loader)
    state = {k: v.detach().clone() for k, v in private_model._module.state_dict().items()}
    return DPSGDOutcome(
        state_dict=state,
        history=list(engine.accountant.history),
        steps=steps,
        sample_rate=sample_rate,
        mean_loss=sum(losses) / len(losses) if losses else _full_loss(task, private_model._module, data),
    )


@torch.no_grad()
def _full_loss(task: Task, model: nn.Module, data: TensorDataset) -> float:
    """The trained model's loss on all of ``data``: the training loss when every Poisson batch came out empty
    (small workspaces), so the reply stays finite and the release it paid for is not dropped."""
    inputs, targets = data.tensors
    return float(task.loss(model(inputs), targets)) if len(inputs) else 0.0
