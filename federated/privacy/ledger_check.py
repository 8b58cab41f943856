"""Open a workspace's ledger only if it agrees with the workspace's audit log: a ledger rolled back, emptied,
edited or replaced (by another workspace's) is refused, never trusted with a smaller ε.

Guarantee: ``open_checked_ledger`` returns the ledger only when

- the audit log verifies (``federated.audit.verify_log``: every hash, the ``seq``/``prev`` chain, and the head
  file; a log with entries but no head, or a head whose log is gone, is a problem). The one head problem
  accepted is a head *behind* a sound chain, the state a crash between an append's write and its head update
  leaves (the next append moves it forward); nothing was removed then;
- every ``release`` entry of the log matches a ledger row (same ``run_id``, ``round``, ``sha256``,
  ``epsilon_total``, and ``release_kind`` when the entry has one, else ``"train"``), in order: the audit
  releases are a subsequence of the ledger rows. The ledger may hold extra rows (a release recorded whose
  audit append then failed, or was cut short by a crash: the safe side, it only costs budget), never fewer.
  Rows migrated from a version-1 ledger have no hash; they match on the other fields.

Anything else raises ``LedgerError`` (code ``ledger-unsound``) naming the file and what differs; the node then
refuses to train and to answer that it can afford a round.

Limits: a workspace whose ledger, audit log and head file are all absent is a fresh workspace; removing all
three together cannot be detected locally, nor can rewriting all three consistently. Publishing the head
(``<log>.head``: last ``seq`` and hash) somewhere the workspace cannot rewrite is the defence against that.

Order (why there is no race with a concurrent train in another process): the audit log is read first, then the
ledger. The node records a release in the ledger before it appends its audit entry, so every release the log
holds when it is read already has its committed row when the ledger is read after it.

Cost: each call reads the whole log and hashes it (SHA-256, milliseconds per MB), but parses and verifies only
the entries appended since the last call in this process: the verified prefix is cached per log path (a
``federated.audit.Checkpoint``: inode, size, SHA-256 of the prefix, the chain state), and used only if the
file's first ``size`` bytes still hash the same. An edit anywhere is still caught at the next open.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from federated.audit import Checkpoint, head_exists, verify_log
from federated.errors import LedgerError
from federated.privacy.ledger import Ledger, Release, inspect_hint

RELEASE_KIND = "release"
"""The audit entry kind the node writes for each release (fields ``run_id``, ``round``, ``sha256``,
``epsilon_total``, optionally ``release_kind``)."""

_checkpoints: dict[Path, Checkpoint] = {}
_checkpoints_guard = threading.Lock()


@dataclass(frozen=True)
class AuditRelease:
    """One ``release`` entry of a verified audit log, as the cross-check reads it."""

    line: int
    run_id: str
    round: Any
    sha256: Any
    epsilon_total: Any
    kind: Any

    def describe(self) -> str:
        digest = f"{self.sha256[:12]}…" if isinstance(self.sha256, str) else repr(self.sha256)
        eps = f"{self.epsilon_total:.4f}" if isinstance(self.epsilon_total, (int, float)) else repr(self.epsilon_total)
        return f"run {self.run_id} round {self.round} ({self.kind}, sha256 {digest}, lifetime ε {eps})"


def open_checked_ledger(ledger_path: Path, audit_path: Path) -> Ledger:
    """The ledger at ``ledger_path`` once it agrees with the audit log at ``audit_path`` (see the module
    docstring); ``LedgerError`` otherwise. A missing ledger is created only when the audit log records no
    release (a fresh workspace, or one that only ever answered queries)."""
    releases = audit_releases(audit_path)  # before the ledger: see "Order" above
    if releases and not ledger_path.exists():
        raise LedgerError(f"{ledger_path}: ledger missing but the audit log {audit_path} records {len(releases)} "
                          f"release(s); refusing to start from an empty budget; {inspect_hint(ledger_path)}")
    ledger = Ledger(ledger_path)
    try:
        match_releases(ledger_path, ledger.releases(), audit_path, releases)
    except BaseException:
        ledger.close()
        raise
    return ledger


def audit_releases(audit_path: Path) -> list[AuditRelease]:
    """The ``release`` entries of the verified audit log (empty if neither the log nor its head exists);
    ``LedgerError`` if the log does not verify, or its head file survives without it."""
    if not audit_path.exists():
        if head_exists(audit_path):
            raise LedgerError(f"{audit_path}: the audit log is missing but its head file "
                              f"{audit_path.name}.head remains (deleted, with the ledger rolled back?); refusing to "
                              "trust the ledger. `optin audit verify` shows the state")
        return []
    key = audit_path.resolve()
    with _checkpoints_guard:
        since = _checkpoints.get(key)
    checked = verify_log(audit_path, frozenset({RELEASE_KIND}), since)
    with _checkpoints_guard:
        if checked.checkpoint is not None:
            _checkpoints[key] = checked.checkpoint
        else:
            _checkpoints.pop(key, None)
    verification = checked.verification
    if not verification.ok and not (verification.head_behind and len(verification.problems) == 1):
        shown = "; ".join(verification.problems[:3]) + ("; …" if len(verification.problems) > 3 else "")
        raise LedgerError(f"{audit_path}: the audit log does not verify, so the ledger cannot be checked against it "
                          f"({shown}); check it with `optin audit verify {audit_path}` (`optin audit repair` "
                          "recovers a crash mid-append, nothing else)")
    return [AuditRelease(line, str(entry.get("run_id")), entry.get("round"), entry.get("sha256"),
                         entry.get("epsilon_total"), entry.get("release_kind", "train"))
            for line, entry in checked.collected]


def match_releases(ledger_path: Path, rows: Sequence[Release], audit_path: Path,
                   releases: Sequence[AuditRelease]) -> None:
    """``LedgerError`` unless ``releases`` (from the audit log) are a subsequence of ``rows`` (the ledger's)."""
    hint = inspect_hint(ledger_path)
    if len(rows) < len(releases):
        raise LedgerError(f"{ledger_path}: the ledger holds {len(rows)} release(s) but the audit log {audit_path} "
                          f"records {len(releases)}: it was rolled back, emptied or replaced; refusing to train "
                          f"from a smaller ε; {hint}")
    index = 0
    for release in releases:
        # Greedy matching finds a subsequence whenever one exists: skipping a row that matches never helps.
        while index < len(rows) and not _matches(release, rows[index]):
            index += 1
        if index == len(rows):
            raise LedgerError(f"{ledger_path}: no ledger row matches the audit log's release at {audit_path}:"
                              f"{release.line}, {release.describe()}, in order (the ledger holds {len(rows)} "
                              f"row(s), the log {len(releases)} release(s)): the ledger was rolled back, edited "
                              f"or replaced; refusing to train from a smaller ε; {hint}")
        index += 1


def _matches(release: AuditRelease, row: Release) -> bool:
    same_round = isinstance(release.round, int) and not isinstance(release.round, bool) and release.round == row.round
    same_epsilon = (isinstance(release.epsilon_total, (int, float)) and not isinstance(release.epsilon_total, bool)
                    and _same(float(release.epsilon_total), row.epsilon_total))
    same_hash = row.sha256 is None or release.sha256 == row.sha256  # None: a row migrated from version 1
    return release.run_id == row.run_id and same_round and same_epsilon and same_hash and release.kind == row.kind


def _same(a: float, b: float) -> bool:
    return (math.isinf(a) and math.isinf(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def forget_checkpoints() -> None:
    """Drop this process's cached verifications (the next open verifies every log from its first line)."""
    with _checkpoints_guard:
        _checkpoints.clear()
