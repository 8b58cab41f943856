"""What a node will actually run in a round: the stricter of the server's request and the policy,
and the lifetime ε the round would bring the workspace to, checked *before* training.

Guarantee: ``plan_round`` refuses (``BudgetError``) any round whose projected lifetime ε under
the RDP accountant, over every release in the ledger plus this round, exceeds the policy's
``max_epsilon`` at the policy's ``delta``. The projection uses the sampling rate and step count
that training then uses, so the recorded release equals the projection. Nothing in the plan
depends on the workspace's messages (the sampling rate is a public setting, not derived from the
number of training samples), so neither the answer to a ``query`` nor a refusal reveals them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from clients.dp_training import DPSGDSettings
from federated.errors import BudgetError
from federated.privacy.accounting import epsilon
from federated.privacy.ledger import Ledger
from federated.privacy.policy import Policy


@dataclass(frozen=True)
class RoundPlan:
    settings: DPSGDSettings
    spent: float
    projected: float


def stricter(requested: DPSGDSettings, policy: Policy) -> DPSGDSettings:
    """More noise and a smaller clipping norm win; the server can ask for more privacy, never less."""
    clip = requested.max_grad_norm if policy.max_grad_norm is None else min(requested.max_grad_norm,
                                                                            policy.max_grad_norm)
    return replace(requested, noise_multiplier=max(requested.noise_multiplier, policy.noise_multiplier),
                   max_grad_norm=clip)


def plan_round(requested: DPSGDSettings, policy: Policy, ledger: Ledger) -> RoundPlan:
    """The settings to run and the projected lifetime ε; ``BudgetError`` if that would exceed the budget."""
    settings = stricter(requested, policy)
    history = ledger.history()
    spent = epsilon(history, policy.delta)
    projected = epsilon(history + [(settings.noise_multiplier, settings.sample_rate, settings.local_steps)],
                        policy.delta)
    if not projected <= policy.max_epsilon:
        raise BudgetError(f"this round would bring lifetime ε to {projected:.3f} (δ={policy.delta:g}), over the "
                          f"budget max_epsilon={policy.max_epsilon:g}; already spent {spent:.3f}")
    return RoundPlan(settings, spent, projected)
