"""Local DP-SGD: Poisson sampling at the public rate, OS noise, and bounded sensitivity under a hostile model."""

import math

import torch

from clients.dp_training import (DPSGDSettings, dp_step, make_private, privacy_generator, repeatable_generator,
                                 train_dp_sgd, zero_non_finite_samples)
from federated.tasks import get_task
from federated.tasks.nextchar import NextCharTask

TEXTS = [f"message number {i} about the build server" for i in range(90)]


def settings(**overrides: float | int) -> DPSGDSettings:
    values = dict(noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=0.1, expected_batch_size=9, local_steps=5,
                  lr=0.1)
    values.update(overrides)
    return DPSGDSettings(**values)


class CountingTask(NextCharTask):
    """Records the size of every batch the loss is computed on."""

    def __init__(self) -> None:
        super().__init__(seq_len=24)
        self.batches: list[int] = []

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        self.batches.append(len(targets))
        return super().loss(logits, targets)


def test_batches_are_poisson_at_the_public_rate_whatever_the_workspace_size() -> None:
    task = CountingTask()
    outcome = train_dp_sgd(task, task.build_model(0), task.encode_texts(TEXTS), settings(local_steps=100),
                           privacy_generator())
    assert outcome.steps == 100 and outcome.sample_rate == 0.1
    sizes = task.batches + [0] * (100 - len(task.batches))  # empty batches skip the forward pass
    mean = sum(sizes) / len(sizes)
    # Binomial(90, 0.1) per step: mean 9, std of the mean over 100 steps about 0.3.
    assert 8.0 < mean < 10.0
    assert len(set(sizes)) > 4  # sizes vary, as Poisson sampling gives


def test_an_empty_workspace_releases_noise_only_and_a_finite_model() -> None:
    task = get_task("nextchar", seq_len=24)
    model = task.build_model(0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    outcome = train_dp_sgd(task, model, task.encode_texts([]), settings(), privacy_generator())
    assert outcome.steps == 5 and outcome.mean_loss is None
    assert any(not torch.equal(before[k], outcome.state_dict[k]) for k in before)
    assert all(torch.isfinite(v).all() for v in outcome.state_dict.values())


def test_the_same_inputs_twice_give_different_releases_unless_the_operator_seeds_them() -> None:
    task = get_task("nextchar", seq_len=24)
    data = task.encode_texts(TEXTS)

    def release(generator: torch.Generator) -> dict[str, torch.Tensor]:
        return train_dp_sgd(task, task.build_model(0), data, settings(), generator).state_dict

    first, second = release(privacy_generator()), release(privacy_generator())
    assert all(not torch.equal(first[k], second[k]) for k in first)
    seeded_a, seeded_b = release(repeatable_generator(7)), release(repeatable_generator(7))
    assert all(torch.equal(seeded_a[k], seeded_b[k]) for k in seeded_a)


def _nan_row_model(task: NextCharTask, byte: int) -> torch.nn.Module:
    model = task.build_model(0)
    with torch.no_grad():
        model.tok.weight[byte] = float("nan")
    return model


def test_a_nan_embedding_row_cannot_turn_the_release_into_a_membership_signal() -> None:
    """The attack: a model whose embedding row for a byte the workspace lacks is NaN. A message containing that
    byte used to make the whole release NaN. Now its per-sample gradient is zeroed: without noise and with every
    sample in the batch, the release with that message equals the release without it."""
    task = NextCharTask(seq_len=24)
    plain = task.encode_texts(TEXTS[:20])
    with_member = task.encode_texts(TEXTS[:20] + ["a ~ inside"])
    exact = settings(noise_multiplier=0.0, sample_rate=1.0, local_steps=3)
    without = train_dp_sgd(task, _nan_row_model(task, ord("~")), plain, exact, privacy_generator())
    with_it = train_dp_sgd(task, _nan_row_model(task, ord("~")), with_member, exact, privacy_generator())
    assert with_it.dropped_samples == 3 and without.dropped_samples == 0
    for key, value in without.state_dict.items():
        if key == "tok.weight":
            value, other = value[:ord("~")], with_it.state_dict[key][:ord("~")]
        else:
            other = with_it.state_dict[key]
        assert torch.allclose(value, other, atol=1e-6), key

    noisy = train_dp_sgd(task, _nan_row_model(task, ord("~")), with_member, settings(), privacy_generator())
    finite = [torch.isfinite(v).all() for k, v in noisy.state_dict.items() if k != "tok.weight"]
    assert all(finite)


def test_zeroing_depends_on_each_sample_alone() -> None:
    class FakeOptimizer:
        def __init__(self, grads: list[torch.Tensor]) -> None:
            self.grad_samples = grads

    grads = [torch.ones(4, 3), torch.ones(4, 2, 2)]
    grads[0][1, 2] = math.nan
    grads[1][3, 0, 1] = math.inf
    assert zero_non_finite_samples(FakeOptimizer(grads)) == 2
    assert grads[0][[0, 2]].eq(1).all() and grads[1][[0, 2]].eq(1).all()
    assert grads[0][[1, 3]].eq(0).all() and grads[1][[1, 3]].eq(0).all()


def test_a_batch_in_physical_chunks_is_the_same_step_with_noise_added_once() -> None:
    task = CountingTask()
    inputs, targets = task.encode_texts(TEXTS).tensors

    def step(physical_batch: int) -> dict[str, torch.Tensor]:
        private_model, optimizer = make_private(task.build_model(0), settings(expected_batch_size=90),
                                                repeatable_generator(11))
        dp_step(task, private_model, optimizer, inputs, targets, physical_batch=physical_batch)
        return {k: v.detach().clone() for k, v in private_model._module.state_dict().items()}

    whole = step(len(TEXTS))
    task.batches.clear()
    chunked = step(16)
    assert max(task.batches) == 16 and sum(task.batches) == len(TEXTS)  # memory bounded by the chunk
    # Same clipped sum and the same single noise draw (the generator is seeded alike): the same release.
    assert all(torch.allclose(whole[k], chunked[k], atol=1e-5) for k in whole)
