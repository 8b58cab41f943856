"""Property tests: policy parsing fails only with PolicyError; ledger ε never decreases and the
node's plan never lets the lifetime budget be exceeded."""

from __future__ import annotations

import datetime as dt
import tempfile
import tomllib
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clients.dp_training import DPSGDSettings
from clients.round_plan import plan_round
from federated.errors import BudgetError, PolicyError
from federated.privacy.ledger import Ledger
from federated.privacy.policy import PRIVACY_UNITS, Policy, Scope, parse_policy, render_policy

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=8), st.dates())
values = st.one_of(scalars, st.lists(scalars, max_size=3), st.dictionaries(st.text(max_size=8), scalars, max_size=3))
keys = st.sampled_from(["consent", "max_epsilon", "delta", "privacy_unit", "max_messages_per_member",
                        "noise_multiplier", "max_grad_norm", "expires", "scope", "other"])


RELAXED = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@RELAXED
@given(st.dictionaries(keys, values, max_size=6))
def test_any_policy_table_parses_or_fails_with_policy_error(raw: dict) -> None:
    raw = {k: (v if v is not None else 0) for k, v in raw.items()}
    try:
        policy = parse_policy(raw, "p.toml")
    except PolicyError as exc:
        assert str(exc).startswith("p.toml: ")
        return
    assert isinstance(policy.consent, bool) and policy.max_epsilon > 0 and 0 < policy.delta < 1
    assert policy.privacy_unit in PRIVACY_UNITS and policy.noise_multiplier >= 0


valid_policies = st.builds(
    Policy,
    consent=st.booleans(),
    max_epsilon=st.floats(0.01, 100),
    delta=st.floats(1e-12, 0.5),
    privacy_unit=st.sampled_from(PRIVACY_UNITS),
    max_messages_per_member=st.integers(1, 64),
    noise_multiplier=st.floats(0, 10),
    held_out_fraction=st.floats(0.01, 0.99),
    max_grad_norm=st.one_of(st.none(), st.floats(0.01, 10)),
    expires=st.one_of(st.none(), st.datetimes(dt.datetime(2000, 1, 1), dt.datetime(2100, 1, 1),
                                              timezones=st.just(dt.timezone.utc))),
    scope=st.builds(Scope, tasks=st.lists(st.text("abc*", min_size=1, max_size=4), min_size=1, max_size=3).map(tuple),
                    federations=st.lists(st.text("xyz*", min_size=1, max_size=4), min_size=1, max_size=3).map(tuple)),
)


@RELAXED
@given(valid_policies)
def test_rendered_policies_read_back_identically(policy: Policy) -> None:
    assert parse_policy(tomllib.loads(render_policy(policy)), "p.toml") == policy


rounds = st.lists(st.tuples(st.floats(0.5, 5.0), st.floats(0.001, 1.0), st.integers(1, 64), st.integers(1, 40)),
                  min_size=1, max_size=6)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rounds, st.floats(0.5, 20.0), st.floats(0.0, 3.0))
def test_ledger_epsilon_never_decreases_and_budget_is_never_exceeded(plans, budget: float, floor: float) -> None:
    policy = Policy(consent=True, max_epsilon=budget, noise_multiplier=floor)
    with tempfile.TemporaryDirectory() as tmp, Ledger(Path(tmp) / "ledger.sqlite") as ledger:
        previous = 0.0
        for server_round, (noise, rate, batch, steps) in enumerate(plans, start=1):
            requested = DPSGDSettings(noise_multiplier=noise, max_grad_norm=1.0, sample_rate=rate,
                                      expected_batch_size=batch, local_steps=steps, lr=0.1)
            try:
                plan = plan_round(requested, policy, ledger)
            except BudgetError:
                continue
            assert plan.settings.noise_multiplier >= max(noise, floor)
            release = ledger.record("run", server_round, plan.settings.noise_multiplier, plan.settings.sample_rate,
                                    plan.settings.local_steps, policy.delta, max_epsilon=policy.max_epsilon,
                                    privacy_unit="message", group_size=1, sha256="0" * 64)
            assert release.epsilon_total >= previous
            assert release.epsilon_total == plan.projected
            previous = release.epsilon_total
        assert ledger.spent(policy.delta) <= budget
