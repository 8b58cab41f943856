"""A workspace's policy file and the consent decision derived from it.

Guarantee: consent is opt-in. Only a readable, valid policy file that says
``consent = true`` yields consent; a missing, unreadable or malformed file
(including unknown keys or a non-boolean value) yields consent off, with the
reason logged on the node. The file is re-read on every call, so an operator's
change takes effect at the next message the node answers.
"""

from __future__ import annotations

import logging
import tomllib
from dataclasses import dataclass
from pathlib import Path

from federated.errors import PolicyError

log = logging.getLogger("optin.privacy.policy")

POLICY_FILE = "policy.toml"


@dataclass(frozen=True)
class Policy:
    """What a workspace's operator decided."""

    consent: bool = False


@dataclass(frozen=True)
class ConsentDecision:
    """Consent and a short, fixed reason code (``consent-on``, ``consent-off``, ``policy-missing``, ``policy-invalid``).

    Only the code leaves the workspace; ``detail`` (paths, parse errors) stays in the node's log.
    """

    consent: bool
    reason: str
    detail: str


def read_policy(path: Path) -> Policy:
    """Parse a policy file; ``PolicyError`` names the file and the field on any problem."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise PolicyError(f"{path}: policy file not found") from exc
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PolicyError(f"{path}: not a readable TOML file ({exc})") from exc
    fields = {"consent"}
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise PolicyError(f"{path}: unknown key(s) {unknown}; expected only {sorted(fields)}")
    consent = raw.get("consent", False)
    if not isinstance(consent, bool):
        raise PolicyError(f"{path}: field 'consent' must be true or false, got {consent!r}")
    return Policy(consent=consent)


def decide_consent(path: Path) -> ConsentDecision:
    """Consent from the policy at ``path``, failing closed on any problem with the file."""
    try:
        policy = read_policy(path)
    except PolicyError as exc:
        reason = "policy-missing" if not path.exists() else "policy-invalid"
        log.warning("consent off (%s): %s", reason, exc)
        return ConsentDecision(False, reason, str(exc))
    if policy.consent:
        return ConsentDecision(True, "consent-on", f"{path}: consent = true")
    return ConsentDecision(False, "consent-off", f"{path}: consent = false")


def write_policy(folder: Path, policy: Policy) -> Path:
    """Write ``policy`` as the policy file of the workspace in ``folder``."""
    path = folder / POLICY_FILE
    path.write_text(f"consent = {'true' if policy.consent else 'false'}\n", encoding="utf-8")
    return path
