"""What a node will actually run in a round: the stricter of the server's request and the policy,
and the lifetime ε the round would bring the workspace to, checked *before* training.

Guarantee: ``plan_round`` refuses (``BudgetError``) any round whose projected lifetime ε under
the RDP accountant, over every release in the ledger plus this round, exceeds the policy's
``max_epsilon`` at the policy's ``delta``. The projection uses the same sampling rate and step
count that training then uses, so the recorded release equals the projection.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from clients.dp_training import DPSGDSettings
from federated.errors import BudgetError
from federated.privacy.accounting import epsilon
from federated.privacy.ledger import Ledger
from federated.privacy.policy import Policy


@dataclass(frozen=True)
class RoundPlan:
    settings: DPSGDSettings
    sample_rate: float
    spent: float
    projected: float


def stricter(requested: DPSGDSettings, policy: Policy) -> DPSGDSettings:
    """More noise and a smaller clipping norm win; the server can ask for more privacy, never less."""
    clip = requested.max_grad_norm if policy.max_grad_norm is None else min(requested.max_grad_norm,
                                                                            policy.max_grad_norm)
    return replace(requested, noise_multiplier=max(requested.noise_multiplier, policy.noise_multiplier),
                   max_grad_norm=clip)


def poisson_rate(num_samples: int, expected_batch_size: int) -> float:
    """The Poisson sampling rate local DP-SGD runs with: 1 / (number of batches of the base loader)."""
    return 1.0 / math.ceil(num_samples / max(1, min(expected_batch_size, num_samples)))


def plan_round(requested: DPSGDSettings, policy: Policy, ledger: Ledger, num_samples: int) -> RoundPlan:
    """The settings to run and the projected lifetime ε; ``BudgetError`` if that would exceed the budget."""
    if num_samples == 0:
        raise BudgetError("no training samples in this workspace")
    settings = stricter(requested, policy)
    rate = poisson_rate(num_samples, settings.expected_batch_size)
    history = ledger.history()
    spent = epsilon(history, policy.delta)
    projected = epsilon(history + [(settings.noise_multiplier, rate, settings.local_steps)], policy.delta)
    if not projected <= policy.max_epsilon:
        raise BudgetError(f"this round would bring lifetime ε to {projected:.3f} (δ={policy.delta:g}), over the "
                          f"budget max_epsilon={policy.max_epsilon:g}; already spent {spent:.3f}")
    return RoundPlan(settings, rate, spent, projected)
