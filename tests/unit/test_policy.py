import logging
from pathlib import Path

import pytest

from federated.errors import PolicyError
from federated.privacy.policy import Policy, decide_consent, read_policy, write_policy


def test_missing_policy_means_no_consent_with_logged_reason(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="optin.privacy.policy"):
        decision = decide_consent(tmp_path / "policy.toml")
    assert (decision.consent, decision.reason) == (False, "policy-missing")
    assert str(tmp_path / "policy.toml") in caplog.text


@pytest.mark.parametrize("text, fragment", [
    ("consent = tru", "not a readable TOML file"),
    ('consent = "yes"', "field 'consent' must be true or false"),
    ("consent = 1", "field 'consent' must be true or false"),
    ("consent = true\nconsnet = true", "unknown key(s) ['consnet']"),
])
def test_malformed_policy_means_no_consent(tmp_path: Path, caplog: pytest.LogCaptureFixture, text: str,
                                           fragment: str) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    with caplog.at_level(logging.WARNING, logger="optin.privacy.policy"):
        decision = decide_consent(path)
    assert (decision.consent, decision.reason) == (False, "policy-invalid")
    assert fragment in decision.detail and fragment in caplog.text
    with pytest.raises(PolicyError, match=str(path)):
        read_policy(path)


def test_consent_defaults_to_false_and_is_reread_each_time(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text("# nothing decided yet\n")
    assert decide_consent(path).reason == "consent-off"
    write_policy(tmp_path, Policy(consent=True))
    assert decide_consent(path).consent is True
    write_policy(tmp_path, Policy(consent=False))
    assert (decide_consent(path).consent, decide_consent(path).reason) == (False, "consent-off")
