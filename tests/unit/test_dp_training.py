"""Local DP-SGD: the accountant sees exactly the mechanism that ran, across calls."""

import math

import pytest
import torch
from opacus.accountants import RDPAccountant

from clients.dp_training import DPSGDSettings, train_dp_sgd
from federated.privacy.accounting import epsilon
from federated.tasks import get_task

TEXTS = [f"message number {i} about the build server" for i in range(90)]


def test_history_accumulates_and_epsilon_matches_an_independent_accountant() -> None:
    task = get_task("nextchar", seq_len=24)
    data = task.encode(TEXTS)
    settings = DPSGDSettings(noise_multiplier=1.3, max_grad_norm=0.7, expected_batch_size=10, local_steps=7, lr=0.1)
    generator = torch.Generator().manual_seed(0)
    first = train_dp_sgd(task, task.build_model(0), data, settings, [], generator)
    second = train_dp_sgd(task, task.build_model(0), data, settings, first.history, generator)

    expected_rate = 1 / math.ceil(len(TEXTS) / 10)
    assert first.steps == second.steps == 7
    assert second.sample_rate == pytest.approx(expected_rate)
    independent = RDPAccountant()
    for _ in range(14):
        independent.step(noise_multiplier=1.3, sample_rate=expected_rate)
    assert epsilon(second.history, 1e-5) == pytest.approx(independent.get_epsilon(delta=1e-5), rel=1e-12)
    assert epsilon(second.history, 1e-5) > epsilon(first.history, 1e-5) > 0


def test_training_changes_the_model_and_survives_empty_poisson_batches() -> None:
    task = get_task("nextchar", seq_len=24)
    data = task.encode(TEXTS[:4])
    settings = DPSGDSettings(noise_multiplier=1.0, max_grad_norm=1.0, expected_batch_size=1, local_steps=20, lr=0.05)
    model = task.build_model(0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    outcome = train_dp_sgd(task, model, data, settings, [], torch.Generator().manual_seed(1))
    # q = 1/4 over 20 steps: some Poisson batches are empty (probability 0.75**4 each); every step still counts.
    assert outcome.steps == 20 and outcome.history == [(1.0, 0.25, 20)]
    assert any(not torch.equal(before[k], outcome.state_dict[k]) for k in before)
    assert all(torch.isfinite(v).all() for v in outcome.state_dict.values())



def test_a_round_whose_poisson_batches_all_came_out_empty_still_reports_a_finite_loss() -> None:
    task = get_task("nextchar", seq_len=24)
    data = task.encode(TEXTS[:4])
    # No noise: a step on an empty Poisson batch leaves the model exactly as it was.
    settings = DPSGDSettings(noise_multiplier=0.0, max_grad_norm=1.0, expected_batch_size=1, local_steps=1, lr=0.05)
    initial = task.build_model(0).state_dict()
    outcomes = [train_dp_sgd(task, task.build_model(0), data, settings, [], torch.Generator().manual_seed(s))
                for s in range(12)]
    empty = [o for o in outcomes if all(torch.equal(o.state_dict[k], initial[k]) for k in initial)]
    assert 0 < len(empty) < len(outcomes)
    assert all(math.isfinite(o.mean_loss) and o.mean_loss > 0 for o in outcomes)
