import datetime as dt
import logging
import tomllib
from pathlib import Path

import pytest

from federated.errors import PolicyError
from federated.privacy.policy import Policy, Scope, decide_consent, read_policy, render_policy, write_policy

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.timezone.utc)


def decide(path: Path, task: str = "nextchar", federation: str = "optin"):
    return decide_consent(path, task, federation, now=NOW)


def test_missing_policy_means_no_consent_with_logged_reason(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="optin.privacy.policy"):
        decision = decide(tmp_path / "policy.toml")
    assert (decision.consent, decision.reason) == (False, "policy-missing")
    assert str(tmp_path / "policy.toml") in caplog.text


@pytest.mark.parametrize("text, fragment", [
    ("consent = tru", "not a valid TOML file"),
    ('consent = "yes"', "field 'consent' must be true or false, got 'yes'"),
    ("consent = 1", "field 'consent' must be true or false"),
    ("consent = true\nconsnet = true", "unknown key(s) ['consnet']"),
    ("consent = true\nmax_epsilon = 0", "field 'max_epsilon' must be a number > 0 (or inf), got 0"),
    ("consent = true\nmax_epsilon = nan", "field 'max_epsilon' must be a number > 0"),
    ("consent = true\ndelta = 1.5", "field 'delta' must be a number in (0, 1), got 1.5"),
    ('consent = true\nprivacy_unit = "person"', "field 'privacy_unit' must be one of ['message', 'member']"),
    ("consent = true\nnoise_multiplier = -1", "field 'noise_multiplier' must be a number >= 0"),
    ("consent = true\nheld_out_fraction = 1.0", "field 'held_out_fraction' must be a number in (0, 1), got 1.0"),
    ("consent = true\nheld_out_fraction = 0", "field 'held_out_fraction' must be a number in (0, 1), got 0"),
    ('consent = true\nexpires = "soon"', "field 'expires' must be a TOML date or date-time"),
    ('consent = true\nscope = "all"', "field 'scope' must be a table"),
    ('consent = true\n[scope]\ntasks = []', "field 'scope.tasks' must be a non-empty list of names"),
    ('consent = true\n[scope]\nteams = ["x"]', "unknown key(s) ['teams'] in [scope]"),
])
def test_malformed_policy_means_no_consent_naming_the_field(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                            text: str, fragment: str) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    with caplog.at_level(logging.WARNING, logger="optin.privacy.policy"):
        decision = decide(path)
    assert (decision.consent, decision.reason) == (False, "policy-invalid")
    assert fragment in decision.detail and fragment in caplog.text
    with pytest.raises(PolicyError, match=str(path)):
        read_policy(path)


def test_consent_defaults_to_false_and_is_reread_each_time(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text("# nothing decided yet\n")
    assert decide(path).reason == "consent-off"
    write_policy(tmp_path, Policy(consent=True))
    assert decide(path).consent is True
    write_policy(tmp_path, Policy(consent=False))
    assert (decide(path).consent, decide(path).reason) == (False, "consent-off")


def test_expiry_and_scope_turn_consent_off(tmp_path: Path) -> None:
    write_policy(tmp_path, Policy(consent=True, expires=dt.datetime(2026, 5, 31, tzinfo=dt.timezone.utc)))
    assert decide(tmp_path / "policy.toml").reason == "policy-expired"
    (tmp_path / "policy.toml").write_text("consent = true\nexpires = 2026-06-02\n")
    assert decide(tmp_path / "policy.toml").consent is True
    write_policy(tmp_path, Policy(consent=True, scope=Scope(tasks=("classifier",))))
    assert decide(tmp_path / "policy.toml").reason == "scope-mismatch"
    write_policy(tmp_path, Policy(consent=True, scope=Scope(federations=("acme",))))
    assert decide(tmp_path / "policy.toml", federation="acme").consent is True
    assert decide(tmp_path / "policy.toml", federation="other").reason == "scope-mismatch"


def test_rendered_policy_reads_back_identically() -> None:
    policy = Policy(consent=True, max_epsilon=3.5, delta=1e-6, privacy_unit="member", max_messages_per_member=4,
                    noise_multiplier=1.2, held_out_fraction=0.35, max_grad_norm=0.5,
                    expires=dt.datetime(2027, 1, 1, 12, tzinfo=dt.timezone.utc),
                    scope=Scope(tasks=("nextchar",), federations=("acme", "beta")))
    from federated.privacy.policy import parse_policy
    assert parse_policy(tomllib.loads(render_policy(policy)), "x") == policy
