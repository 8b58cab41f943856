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
    private_model, private_optimizer, private_loader = engine.make_private(
        module=model,
        optimizer=optimizer,
        data_loader=loader,
        noise_multiplier=settings.noise_multiplier,
        max_grad_norm=settings.max_grad_norm,
        poisson_sampling=True,
        noise_generator=generator,
    )
    losses: list[float] = []
    steps = 0
    while steps < settings.local_steps:
        for inputs, targets in private_loader:
            private_optimizer.zero_grad(set_to_none=True)
            loss = task.loss(private_model(inputs), targets)
            loss.backward()
            private_optimizer.step()
            steps += 1
            if len(inputs) and math.isfinite(loss.item()):
                losses.append(loss.item())
            if steps == settings.local_steps:
                break
    sample_rate = 1.0 / len(loader)
    state = {k: v.detach().clone() for k, v in private_model._module.state_dict().items()}
    return DPSGDOutcome(
        state_dict=state,
        history=list(engine.accountant.history),
        steps=steps,
        sample_rate=sample_rate,
        mean_loss=sum(losses) / len(losses) if losses else float("nan"),
    )
