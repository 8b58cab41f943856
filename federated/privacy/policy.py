"""A workspace's policy file (``policy.toml``) and the consent decision derived from it.

Guarantee: consent is opt-in. Only a readable, valid policy file that says
``consent = true``, has not expired, and whose scope names the task and
federation, yields consent. A missing, unreadable or malformed file (unknown
keys, wrong types, values out of range) yields consent off, with the reason
logged on the node. The file is re-read on every message, so an operator's
change takes effect from the next message the node answers: a revocation
made during round r stops the workspace's participation from round r + 1 at
the latest (round r itself if its ``train`` message has not arrived yet).

Fields (all optional; a missing file is the same as an empty one, except for the reason logged):

- ``consent`` (bool, default false)
- ``max_epsilon`` (float > 0, default 8.0; ``inf`` only when written explicitly, e.g. for a no-DP
  baseline) and ``delta`` (0 < δ < 1, default 1e-5): the lifetime budget of the workspace, over every
  run it ever joins.
- ``privacy_unit``: ``"message"`` (default) or ``"member"`` (one DP sample is up to
  ``max_messages_per_member`` messages of one member, default 8).
- ``noise_multiplier`` (float ≥ 0, default 0): a floor; the node uses max(server's, this).
- ``held_out_fraction`` (0 < f < 1, default 0.2): the share of messages the node holds out for evaluation,
  never trained on. Each message's side is drawn on its own from the node secret (``split_messages``), so
  the server cannot choose or shift the split; changing this field re-draws which messages are held out.
- ``max_grad_norm`` (float > 0, optional): a ceiling; the node uses min(server's, this).
- ``expires`` (TOML date or datetime, optional): from then on consent is off.
- ``label`` (optional; up to 64 letters, digits, ``.``, ``_``, ``-``): a name for this workspace that its
  node sends with every consent answer, so the federation's results (``metrics.json``) can name it beside
  its random node id. Empty or absent: no name is sent. It is the operator's own text, never derived from
  the messages; set it only if the federation may know which workspace this is.
- ``[scope]`` ``tasks`` and ``federations`` (lists of names, ``"*"`` for any; default ``["*"]``).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from federated.errors import PolicyError
from federated.limits import POLICY_MAX_BYTES, shown
from federated.protocol import LABEL
from federated.safe_files import read_text

log = logging.getLogger("optin.privacy.policy")

POLICY_FILE = "policy.toml"
PRIVACY_UNITS = ("message", "member")


@dataclass(frozen=True)
class Scope:
    """Which tasks and federations may train on this workspace (``"*"`` matches any)."""

    tasks: tuple[str, ...] = ("*",)
    federations: tuple[str, ...] = ("*",)

    def allows(self, task: str, federation: str) -> bool:
        return ("*" in self.tasks or task in self.tasks) and ("*" in self.federations or federation in self.federations)


@dataclass(frozen=True)
class Policy:
    """What a workspace's operator decided."""

    consent: bool = False
    max_epsilon: float = 8.0
    delta: float = 1e-5
    privacy_unit: str = "message"
    max_messages_per_member: int = 8
    noise_multiplier: float = 0.0
    held_out_fraction: float = 0.2
    max_grad_norm: float | None = None
    expires: dt.datetime | None = None
    scope: Scope = field(default_factory=Scope)
    label: str = ""

    def expired(self, now: dt.datetime) -> bool:
        return self.expires is not None and now >= self.expires


@dataclass(frozen=True)
class ConsentDecision:
    """Consent and a short, fixed reason code; ``detail`` (paths, parse errors) stays in the node's log.

    Codes: ``consent-on``, ``consent-off``, ``policy-missing``, ``policy-invalid``, ``policy-expired``,
    ``scope-mismatch``.
    """

    consent: bool
    reason: str
    detail: str
    policy: Policy | None = None


def read_policy(path: Path) -> Policy:
    """Parse a policy file; ``PolicyError`` names the file and the field on any problem.

    Only a regular file of at most ``POLICY_MAX_BYTES`` is read (``federated.safe_files``): a FIFO or a link to
    a device is refused at once instead of stalling the node, which re-reads the policy at every message.
    """
    try:
        text = read_text(path, POLICY_MAX_BYTES, error=PolicyError)
    except FileNotFoundError as exc:
        raise PolicyError(f"{path}: policy file not found") from exc
    try:
        raw = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, ValueError) as exc:  # ValueError: an integer past Python's digit limit
        raise PolicyError(f"{path}: not a valid TOML file ({exc})") from exc
    return parse_policy(raw, str(path))


def parse_policy(raw: Mapping[str, Any], source: str) -> Policy:
    """Validate a parsed policy table; ``PolicyError`` names ``source``, the field, the value and what was expected."""
    allowed = {"consent", "max_epsilon", "delta", "privacy_unit", "max_messages_per_member", "noise_multiplier",
               "held_out_fraction", "max_grad_norm", "expires", "scope", "label"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise PolicyError(f"{source}: unknown key(s) {shown(unknown)}; expected only {sorted(allowed)}")

    def get(name: str, check: Any, expected: str, default: Any) -> Any:
        value = raw.get(name, default)
        if name in raw and not check(value):
            raise PolicyError(f"{source}: field '{name}' must be {expected}, got {shown(value)}")
        return value

    def number(v: Any) -> bool:
        return _as_float(v) is not None and math.isfinite(_as_float(v))

    consent = get("consent", lambda v: isinstance(v, bool), "true or false", False)
    # inf is an explicit "no budget" (e.g. for no-DP baselines); it must be written out, never a default.
    max_epsilon = get("max_epsilon", lambda v: (_as_float(v) or 0.0) > 0, "a number > 0 (or inf)", 8.0)
    delta = get("delta", lambda v: number(v) and 0 < v < 1, "a number in (0, 1)", 1e-5)
    unit = get("privacy_unit", lambda v: v in PRIVACY_UNITS, f"one of {list(PRIVACY_UNITS)}", "message")
    per_member = get("max_messages_per_member", lambda v: isinstance(v, int) and not isinstance(v, bool) and
                     1 <= v <= 64, "an integer in [1, 64]", 8)
    noise = get("noise_multiplier", lambda v: number(v) and v >= 0, "a number >= 0", 0.0)
    held_out = get("held_out_fraction", lambda v: number(v) and 0 < v < 1, "a number in (0, 1)", 0.2)
    clip = get("max_grad_norm", lambda v: number(v) and v > 0, "a number > 0", None)
    expires = get("expires", lambda v: isinstance(v, (dt.date, dt.datetime)), "a TOML date or date-time", None)
    label = get("label", lambda v: isinstance(v, str) and LABEL.fullmatch(v) is not None,
                "up to 64 letters, digits, '.', '_' or '-' (starting with a letter or digit)", "")
    return Policy(consent=consent, max_epsilon=float(max_epsilon), delta=float(delta), privacy_unit=unit,
                  max_messages_per_member=per_member, noise_multiplier=float(noise),
                  held_out_fraction=float(held_out),
                  max_grad_norm=None if clip is None else float(clip), expires=_as_utc(expires),
                  scope=_scope(raw.get("scope", {}), source), label=label)


def decide_consent(path: Path, task: str, federation: str, now: dt.datetime | None = None) -> ConsentDecision:
    """Consent from the policy at ``path`` for ``task`` in ``federation``, failing closed on any problem."""
    try:
        policy = read_policy(path)
    except PolicyError as exc:
        reason = "policy-missing" if not path.exists() else "policy-invalid"
        log.warning("consent off (%s): %s", reason, exc)
        return ConsentDecision(False, reason, str(exc))
    now = now or dt.datetime.now(dt.timezone.utc)
    if not policy.consent:
        return ConsentDecision(False, "consent-off", f"{path}: consent = false", policy)
    if policy.expired(now):
        return ConsentDecision(False, "policy-expired", f"{path}: expired at {policy.expires}", policy)
    if not policy.scope.allows(task, federation):
        return ConsentDecision(False, "scope-mismatch",
                               f"{path}: scope does not allow task {task!r} in federation {federation!r}", policy)
    return ConsentDecision(True, "consent-on", f"{path}: consent = true", policy)


def render_policy(policy: Policy) -> str:
    """``policy`` as the text of a policy file (every field explicit, so an operator sees the defaults)."""
    lines = [
        f"consent = {_toml(policy.consent)}",
        f"max_epsilon = {_toml(policy.max_epsilon)}",
        f"delta = {_toml(policy.delta)}",
        f"privacy_unit = {_toml(policy.privacy_unit)}",
        f"max_messages_per_member = {policy.max_messages_per_member}",
        f"noise_multiplier = {_toml(policy.noise_multiplier)}",
        f"held_out_fraction = {_toml(policy.held_out_fraction)}",
    ]
    if policy.max_grad_norm is not None:
        lines.append(f"max_grad_norm = {_toml(policy.max_grad_norm)}")
    if policy.expires is not None:
        lines.append(f"expires = {policy.expires.isoformat()}")
    if policy.label:
        lines.append(f"label = {_toml(policy.label)}")
    lines += ["", "[scope]", f"tasks = {_toml(list(policy.scope.tasks))}",
              f"federations = {_toml(list(policy.scope.federations))}"]
    return "\n".join(lines) + "\n"


def write_policy(folder: Path, policy: Policy) -> Path:
    """Write ``policy`` as the workspace's policy file, atomically (a reader never sees half a file)."""
    path = folder / POLICY_FILE
    tmp = path.with_suffix(".toml.tmp")
    tmp.write_text(render_policy(policy), encoding="utf-8")
    tmp.replace(path)
    return path


def _scope(raw: Any, source: str) -> Scope:
    if not isinstance(raw, dict):
        raise PolicyError(f"{source}: field 'scope' must be a table with 'tasks' and 'federations', got {shown(raw)}")
    unknown = sorted(set(raw) - {"tasks", "federations"})
    if unknown:
        raise PolicyError(f"{source}: unknown key(s) {shown(unknown)} in [scope]; expected only ['federations', 'tasks']")
    values = {}
    for name in ("tasks", "federations"):
        value = raw.get(name, ["*"])
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
            raise PolicyError(f"{source}: field 'scope.{name}' must be a non-empty list of names, got {shown(value)}")
        values[name] = tuple(value)
    return Scope(**values)


def _as_float(value: Any) -> float | None:
    """``value`` as a float if it is a TOML number that has one (an integer of 400 digits has none), else None."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    try:
        return float(value)
    except OverflowError:
        return None


def _as_utc(value: dt.date | dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    if not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day)
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)
