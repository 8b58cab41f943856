"""Canary formats, exposure (exact and estimated), canary plans and their in-memory injection."""

from __future__ import annotations

import hashlib
import json
import math

import logging

import numpy as np
import pytest
from flwr.app import ArrayRecord, Context, RecordDict
from scipy import stats

from clients.workspace_node import CANARIES_KEY, CANARY_CHANNEL, WorkspaceNode
from experiments.research.canary_audit import AuditSpec, audit_model, plan_canaries
from federated.config import RunConfig
from federated.errors import ConfigError
from federated.privacy.canaries import CanaryFormat, chance_exposure, estimated_exposure, exact_exposure
from federated.privacy.policy import Policy
from federated.tasks.nextchar import NextCharTask

FOUR_DIGITS = CanaryFormat(length=4)


def _hashed_normal(texts: list[str]) -> np.ndarray:
    """A fixed pseudo-random standard-normal score per text (a stand-in model with no memory of anything)."""
    uniform = [(int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little") + 0.5) / 2.0**64 for t in texts]
    return stats.norm.ppf(uniform)


def test_format_text_space_and_validation() -> None:
    assert FOUR_DIGITS.space_size == 10_000
    assert FOUR_DIGITS.text((4, 9, 1, 7)) == "my pin is 4 9 1 7"
    assert len(set(FOUR_DIGITS.all_texts())) == 10_000
    with pytest.raises(ConfigError, match="template"):
        CanaryFormat(template="no slot here")
    with pytest.raises(ConfigError, match="alphabet"):
        CanaryFormat(alphabet="00")
    with pytest.raises(ConfigError, match="only 100"):
        CanaryFormat(length=2).random_secrets(101, np.random.default_rng(0))


def test_chance_exposure_is_the_mean_exposure_of_a_uniform_rank() -> None:
    for size in (10, 1000):
        brute = float(np.mean([math.log2(size) - math.log2(rank) for rank in range(1, size + 1)]))
        assert chance_exposure(size) == pytest.approx(brute, rel=1e-9)
    assert chance_exposure(10**12) == pytest.approx(1 / math.log(2), abs=1e-3)


def test_exact_exposure_ranks_the_canary_among_all_candidates() -> None:
    canary = FOUR_DIGITS.text((1, 2, 3, 4))
    favourite = exact_exposure([canary], FOUR_DIGITS,
                               lambda texts: np.array([0.0 if t == canary else 1.0 for t in texts]))[0]
    assert (favourite.rank, favourite.bits, favourite.method) == (1.0, pytest.approx(math.log2(10_000)), "exact")
    indifferent = exact_exposure([canary], FOUR_DIGITS, lambda texts: np.zeros(len(texts)))[0]
    assert indifferent.rank == pytest.approx(5000.5)
    scores = _hashed_normal([canary])
    expected_rank = 1 + int(np.sum(_hashed_normal(FOUR_DIGITS.all_texts()) < scores[0]))
    assert exact_exposure([canary], FOUR_DIGITS, _hashed_normal)[0].rank == expected_rank


def test_estimated_exposure_agrees_with_exact_on_a_space_small_enough_to_check() -> None:
    planted = {FOUR_DIGITS.text((0, 0, 0, i)): -2.5 + 0.25 * i for i in range(4)}

    def score(texts: list[str]) -> np.ndarray:
        base = _hashed_normal(texts)
        return np.array([planted.get(t, b) for t, b in zip(texts, base)])

    exact = exact_exposure(list(planted), FOUR_DIGITS, score)
    estimated = estimated_exposure(list(planted), FOUR_DIGITS, score, 3000, np.random.default_rng(1))
    for e, x in zip(estimated, exact):
        assert e.method == "skew-normal fit of 3000 samples"
        assert e.bits == pytest.approx(x.bits, abs=0.6)
    assert exact[0].bits > 6


def test_plan_places_exposure_canaries_in_one_workspace_and_flips_a_coin_for_each_one_run_canary() -> None:
    spec = AuditSpec(repeats=(1, 4), one_run_canaries=300, guesses=40)
    names = ["a", "b", "c"]
    plan = plan_canaries(spec, names, seed=5)
    assert plan == plan_canaries(spec, names, seed=5)
    assert plan != plan_canaries(spec, names, seed=6)
    assert (plan.exposure_workspace, plan.receiver) == ("a", "b")
    assert [copies for copies, _ in plan.exposure] == [1, 4]
    included = [c for c in plan.one_run if c.included]
    assert 110 < len(included) < 190
    assert {c.workspace for c in plan.one_run} == set(names)
    injected = plan.injected("a")
    assert len(injected) == 5 + sum(1 for c in included if c.workspace == "a")
    assert all(c.text not in plan.injected(c.workspace) for c in plan.one_run if not c.included)
    assert not set(plan.injected("b")) & {text for _, text in plan.exposure}
    with pytest.raises(ValueError, match="index below 3"):
        plan_canaries(AuditSpec(workspace=3), names, seed=0)


def test_canaries_join_only_the_training_split_in_memory(small_federation) -> None:
    folder = small_federation.folders[0]
    WorkspaceNode(folder).secret()  # the node secret is made on first use; the files after that must not change
    files_before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    config = RunConfig(seq_len=64)
    task = NextCharTask(seq_len=64)
    plain = WorkspaceNode(folder)
    canaries = ("my pin is 1 2 3 4", "my pin is 1 2 3 4", "audit word abcdefghij")
    context = Context(1, 100, {"workspace": str(folder), CANARIES_KEY: json.dumps(canaries)}, RecordDict(), {})
    node = WorkspaceNode.from_context(context)
    assert node.canaries == canaries
    policy = Policy(consent=True)
    assert len(node.training_samples(task, config, policy)) == len(plain.training_samples(task, config, policy)) + 3
    member = Policy(consent=True, privacy_unit="member", max_messages_per_member=2)
    assert len(node.training_samples(task, config, member)) == len(plain.training_samples(task, config, member)) + 3
    assert _held_texts(node, config, policy) == _held_texts(plain, config, policy)
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == files_before
    assert CANARY_CHANNEL not in {m.channel for m in plain._split(config, policy)[0]}
    bad = Context(1, 100, {"workspace": str(folder), CANARIES_KEY: "[1, 2]"}, RecordDict(), {})
    with pytest.raises(ConfigError, match=CANARIES_KEY):
        WorkspaceNode.from_context(bad)


def test_score_texts_is_the_summed_next_byte_loss() -> None:
    task = NextCharTask(seq_len=32)
    model = task.build_model(0)
    texts = ["my pin is 1 2 3 4", "hello"]
    scores = task.score_texts(model, texts)
    for text, value in zip(texts, scores):
        mean_loss = task.evaluate(model, task.encode_texts([text]))["loss"]
        assert value == pytest.approx(mean_loss * len(text.encode()), rel=1e-5)
    with pytest.raises(ValueError, match="seq_len=32"):
        task.score_texts(model, ["x" * 33])


def test_an_audit_that_learns_nothing_without_dp_warns_that_it_has_no_power(caplog: pytest.LogCaptureFixture) -> None:
    spec = AuditSpec(canary_format=CanaryFormat(length=3), repeats=(1,), one_run_canaries=64, guesses=16)
    config = RunConfig(seq_len=64)
    plan = plan_canaries(spec, ["a", "b"], seed=0)
    untrained = ArrayRecord(NextCharTask(seq_len=64).build_model(config.seed).state_dict())
    with caplog.at_level(logging.WARNING, logger="optin.canary_audit"):
        audit = audit_model(spec, plan, config, untrained, 1e-5, (1.0, "a DP claim"))
    assert audit["one_run"]["epsilon_lower_bound"] == 0 and not caplog.records
    with caplog.at_level(logging.WARNING, logger="optin.canary_audit"):
        audit = audit_model(spec, plan, config, untrained, 1e-5, (math.inf, "no DP"))
    assert audit["one_run"]["epsilon_lower_bound"] == 0 and not audit["violation"]
    assert "without power" in caplog.text


def _held_texts(node: WorkspaceNode, config: RunConfig, policy: Policy) -> list[str]:
    return [m.text for m in node.held_out_messages(config, policy)]
