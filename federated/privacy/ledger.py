"""The workspace's privacy ledger: every DP release the node ever made, in SQLite.

Guarantees:

- One row per release, written in one transaction *before* the release leaves the node, so a
  crash at any point leaves either no row (nothing was sent) or a complete row (it may or may not
  have been sent; the budget counts it either way, the safe side).
- The budget spans the workspace's lifetime: the accountant's history is every release of every
  run, so a new run starts from what was already spent.
- A ledger that cannot be read, has the wrong schema, or whose rows are inconsistent (a stored
  cumulative ε that does not match the accountant over the rows before it) raises ``LedgerError``;
  the node then refuses to train. It is never reset or repaired silently.
- ``record`` re-checks, inside its write transaction (``BEGIN IMMEDIATE``: one writer at a time across
  processes), everything a release must satisfy: the new lifetime ε is within ``max_epsilon``
  (``BudgetError``), no release exists for the same ``(run_id, round, kind)`` (``ReplayError``), and the
  privacy unit does not weaken what earlier releases were accounted under (``UnitChangeError``). When it
  refuses, the transaction is rolled back and nothing is written. A check made before training (the round
  plan) can go stale while training runs; this one cannot.
- Each row records the privacy unit it was accounted under (``"message"``, or ``"member"`` with
  ``group_size`` = the most messages one member contributes) and the SHA-256 of what was released (the
  same ``federated.audit.fingerprint`` the audit log's ``release`` entry carries, so the two can be
  cross-checked: ``federated.privacy.ledger_check``), and whether it was private (``private`` 0: the
  operator's repeatable seed drove its sampling and noise, so the noise is not secret).
- A release that cannot be stored (disk full, I/O error, read-only file) raises ``LedgerWriteError``
  (a ``LedgerError``) after its transaction is rolled back; the caller must then not send it. SQLite
  may still find the row committed after a failure reported at the very end of the commit (its
  frames were durable, the error came after): the budget then counts a release that was not sent,
  the safe side.

Schema version 2. A version-1 ledger (no unit, group size or hash) is migrated when opened, in one
transaction: its rows become unit ``"message"``, group size 1, kind ``"train"``, hash NULL, private
(version 1 accounted every release per message).

Assumptions: the RDP accountant over the stored ``(noise_multiplier, sample_rate, steps)`` history (see
``federated.privacy.accounting``); ε is the guarantee for the row's privacy unit (one DP sample is one
message, or one member's group of at most ``group_size`` messages).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from federated.errors import BudgetError, LedgerError, ReplayError, UnitChangeError
from federated.privacy.accounting import Step, epsilon
from federated.privacy.policy import PRIVACY_UNITS

LEDGER_FILE = "ledger.sqlite"
SCHEMA_VERSION = 2
_V1_COLUMNS = """
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    round INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    accountant TEXT NOT NULL,
    noise_multiplier REAL NOT NULL,
    sample_rate REAL NOT NULL,
    steps INTEGER NOT NULL,
    delta REAL NOT NULL,
    epsilon_total REAL NOT NULL,
    accountant_state TEXT NOT NULL"""
# Version 2 adds these columns, in this order, both to a new ledger and (via ALTER TABLE) to a migrated one.
# The defaults are what a version-1 row means; every insert names every column.
_V2_COLUMNS = (
    "privacy_unit TEXT NOT NULL DEFAULT 'message'",
    "group_size INTEGER NOT NULL DEFAULT 1",
    "sha256 TEXT",
    "kind TEXT NOT NULL DEFAULT 'train'",
    "private INTEGER NOT NULL DEFAULT 1",
)
_INDEX = "CREATE INDEX releases_by_round ON releases (run_id, round, kind)"
SCHEMA = f"CREATE TABLE releases ({_V1_COLUMNS},\n    " + ",\n    ".join(_V2_COLUMNS) + "\n)"
_COLUMNS = ("run_id, round, created_at, accountant, noise_multiplier, sample_rate, steps, delta, epsilon_total, "
            "privacy_unit, group_size, sha256, kind, private")


@dataclass(frozen=True)
class Release:
    """One DP release as recorded."""

    run_id: str
    round: int
    created_at: str
    accountant: str
    noise_multiplier: float
    sample_rate: float
    steps: int
    delta: float
    epsilon_total: float
    privacy_unit: str
    """``"message"`` or ``"member"``: what one DP sample was when this release was accounted."""
    group_size: int
    """The most messages one sample holds: ``max_messages_per_member`` for ``"member"``, 1 for ``"message"``."""
    sha256: str | None
    """SHA-256 of what was released (``federated.audit.fingerprint``); None for rows migrated from version 1."""
    kind: str
    """What was released (``"train"``: a model update); ``(run_id, round, kind)`` is released at most once."""
    private: bool = True
    """False for a release whose sampling and noise came from the operator's repeatable seed (research runs):
    its ε describes the mechanism, but the noise is not secret."""


class LedgerWriteError(LedgerError):
    """A release could not be stored in the ledger (the storage failed, the ledger itself may be sound)."""

    code = "ledger-write-failed"


def inspect_hint(path: Path) -> str:
    return f"inspect it with `optin ledger show --workspace {path.parent}` or `sqlite3 {path} .dump`"


class Ledger:
    """A workspace's ledger file; opening it migrates a version-1 ledger and checks it (``LedgerError`` if it is
    not sound). Any number of ``Ledger`` objects, in any processes, may use one file at once: each write is
    one ``BEGIN IMMEDIATE`` transaction that re-reads the rows it depends on."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._db = sqlite3.connect(path, isolation_level=None, timeout=30)
        except sqlite3.Error as exc:
            raise LedgerError(f"{path}: not a readable ledger ({exc}); {inspect_hint(path)}") from exc
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            if self._version() == 1 or self._blank():
                with self._transaction():
                    # Decided again inside the write transaction: two processes opening a new or version-1 ledger
                    # at once create or migrate it once (the second waits for the first, then finds it done).
                    version = self._version()
                    if version == 0 and self._blank():
                        self._db.execute(SCHEMA)
                        self._db.execute(_INDEX)
                        self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                    elif version == 1:
                        self._migrate_v1()
            self._check()
        except sqlite3.Error as exc:
            self._db.close()
            raise LedgerError(f"{path}: not a readable ledger ({exc}); {inspect_hint(path)}") from exc
        except BaseException:
            self._db.close()
            raise

    def _blank(self) -> bool:
        """No schema at all: a new file (possibly just created by a concurrent opener that has not committed yet).
        A file with other tables is not a ledger and fails the check instead."""
        return self._version() == 0 and self._db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0

    def _version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def _migrate_v1(self) -> None:
        """Version 1 -> 2 inside the caller's transaction: every existing row was accounted per message, its
        hash was never stored, and it released a model update."""
        for column in _V2_COLUMNS:
            self._db.execute(f"ALTER TABLE releases ADD COLUMN {column}")
        self._db.execute(_INDEX)
        self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def releases(self) -> list[Release]:
        """Every release, oldest first; ``LedgerError`` if the file cannot be read now (an I/O error)."""
        try:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM releases ORDER BY id").fetchall()
        except sqlite3.Error as exc:
            raise LedgerError(f"{self.path}: the ledger could not be read ({exc}); {inspect_hint(self.path)}") from exc
        return [Release(*row[:-1], private=bool(row[-1])) for row in rows]

    def history(self) -> list[Step]:
        """Every step the workspace ever released, in order: the accountant's full history."""
        return [(r.noise_multiplier, r.sample_rate, r.steps) for r in self.releases()]

    def spent(self, delta: float) -> float:
        """Lifetime ε at ``delta`` under the RDP accountant."""
        return epsilon(self.history(), delta)

    def check_not_released(self, run_id: str, server_round: int, kind: str = "train") -> None:
        """``ReplayError`` if ``(run_id, server_round, kind)`` was already released (the node calls this before
        training; ``record`` checks it again in its transaction)."""
        try:
            found = self._released(run_id, server_round, kind)
        except sqlite3.Error as exc:
            raise LedgerError(f"{self.path}: the ledger could not be read ({exc}); {inspect_hint(self.path)}") from exc
        if found:
            raise ReplayError(_replay_message(self.path, run_id, server_round, kind))

    def check_unit(self, privacy_unit: str) -> None:
        """``UnitChangeError`` if releasing under ``privacy_unit`` cannot be accounted with the releases so far.

        Switching to ``"member"`` after any ``"message"``-level release is refused: a message-level ε bounds what
        one message changes, not what one member's messages together change, so the earlier releases would
        not count (soundly) towards a member-level budget. ``"member"`` -> ``"message"`` is allowed: removing
        one message changes at most one member's group, so a member-level guarantee implies the message-level
        one at the same ε and the lifetime ε stays an upper bound. ``record`` checks this again.
        """
        _check_unit_name(privacy_unit)
        try:
            count = self._message_level_releases() if privacy_unit == "member" else 0
        except sqlite3.Error as exc:
            raise LedgerError(f"{self.path}: the ledger could not be read ({exc}); {inspect_hint(self.path)}") from exc
        if count:
            raise UnitChangeError(_unit_message(self.path, count))

    def record(self, run_id: str, server_round: int, noise_multiplier: float, sample_rate: float, steps: int,
               delta: float, *, max_epsilon: float, privacy_unit: str, group_size: int, sha256: str,
               kind: str = "train", private: bool = True) -> Release:
        """Append one release in one transaction; returns it with the lifetime ε it brings the workspace to.

        Inside the transaction (which excludes every other writer of the file until it ends), before writing:
        ``ReplayError`` if ``(run_id, server_round, kind)`` is already recorded, ``UnitChangeError`` as in
        ``check_unit``, ``BudgetError`` if the lifetime ε over every recorded release plus this one, at
        ``delta``, would exceed ``max_epsilon``. Any of these rolls the transaction back: nothing is written,
        and the caller must not send the release. ``sha256`` is the fingerprint of exactly what is released
        (``federated.audit.fingerprint``); ``group_size`` is the most messages in one sample (1 for
        ``"message"``). ``LedgerWriteError`` if the storage fails.
        """
        _check_unit_name(privacy_unit)
        if not (isinstance(group_size, int) and group_size >= 1 and (privacy_unit == "member" or group_size == 1)):
            raise ValueError(f"group_size {group_size!r}: expected 1 for 'message', an integer >= 1 for 'member'")
        if not _is_sha256(sha256):
            raise ValueError(f"sha256 {sha256!r}: expected 64 lowercase hexadecimal digits")
        created_at = dt.datetime.now(dt.timezone.utc).isoformat()
        try:
            with self._transaction():
                if self._released(run_id, server_round, kind):
                    raise ReplayError(_replay_message(self.path, run_id, server_round, kind))
                if privacy_unit == "member" and (count := self._message_level_releases()):
                    raise UnitChangeError(_unit_message(self.path, count))
                # The history is re-read here, under the write lock: a release another process recorded while
                # this one trained is counted.
                history = self.history() + [(noise_multiplier, sample_rate, steps)]
                total = epsilon(history, delta)
                if not total <= max_epsilon:
                    spent = epsilon(history[:-1], delta)
                    raise BudgetError(
                        f"{self.path}: recording run {run_id} round {server_round} would bring lifetime ε to "
                        f"{total:.3f} (δ={delta:g}), over the budget max_epsilon={max_epsilon:g}; already spent "
                        f"{spent:.3f}. Nothing was recorded; the release must not be sent")
                self._db.execute(
                    f"INSERT INTO releases ({_COLUMNS}, accountant_state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
                    "?, ?, ?, ?)",
                    (run_id, server_round, created_at, "rdp", noise_multiplier, sample_rate, steps, delta, total,
                     privacy_unit, group_size, sha256, kind, int(private), json.dumps({"history": history})))
        except sqlite3.Error as exc:
            raise LedgerWriteError(
                f"{self.path}: could not record the release of run {run_id} round {server_round} ({exc}); it must "
                f"not be sent. Check the free space and permissions of {self.path.parent}; {inspect_hint(self.path)}"
            ) from exc
        return Release(run_id, server_round, created_at, "rdp", noise_multiplier, sample_rate, steps, delta, total,
                       privacy_unit, group_size, sha256, kind, private)

    def _released(self, run_id: str, server_round: int, kind: str) -> bool:
        return self._db.execute("SELECT 1 FROM releases WHERE run_id = ? AND round = ? AND kind = ? LIMIT 1",
                                (run_id, server_round, kind)).fetchone() is not None

    def _message_level_releases(self) -> int:
        return self._db.execute("SELECT count(*) FROM releases WHERE privacy_unit = 'message'").fetchone()[0]

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction; rolled back if its body or its COMMIT fails (a COMMIT that fails for a full
        disk or an I/O error leaves the transaction open unless SQLite already rolled it back)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    def _check(self) -> None:
        hint = inspect_hint(self.path)
        if self._db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
            raise LedgerError(f"{self.path}: SQLite integrity check failed; {hint}")
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            raise LedgerError(f"{self.path}: schema version {version}, expected {SCHEMA_VERSION}; {hint}")
        history: list[Step] = []
        last: tuple[int, float, float] | None = None
        for row_id, z, q, t, delta, total, state, unit, group_size, sha256, kind in self._db.execute(
                "SELECT id, noise_multiplier, sample_rate, steps, delta, epsilon_total, accountant_state, "
                "privacy_unit, group_size, sha256, kind FROM releases ORDER BY id"):
            history.append((z, q, t))
            if not (z >= 0 and 0 < q <= 1 and t > 0 and 0 < delta < 1):
                raise LedgerError(f"{self.path}: release {row_id} has impossible values; {hint}")
            if not (unit in PRIVACY_UNITS and isinstance(group_size, int) and group_size >= 1
                    and (unit == "member" or group_size == 1) and (sha256 is None or _is_sha256(sha256))
                    and isinstance(kind, str) and kind):
                raise LedgerError(f"{self.path}: release {row_id} has an impossible privacy unit, group size, hash "
                                  f"or kind; {hint}")
            try:
                stored_history = [tuple(step) for step in json.loads(state)["history"]]
            except (ValueError, KeyError, TypeError) as exc:
                raise LedgerError(f"{self.path}: release {row_id} has an unreadable accountant state; {hint}") from exc
            if stored_history != history:
                raise LedgerError(f"{self.path}: release {row_id} does not match the releases before it; {hint}")
            last = (row_id, delta, total)
        # Each row's stored state repeats the whole history, so checking the chain and the last ε suffices.
        if last is not None and not _same(epsilon(history, last[1]), last[2]):
            raise LedgerError(f"{self.path}: release {last[0]} states an ε the accountant does not give; {hint}")


def _check_unit_name(privacy_unit: str) -> None:
    if privacy_unit not in PRIVACY_UNITS:
        raise ValueError(f"privacy_unit {privacy_unit!r}: expected one of {list(PRIVACY_UNITS)}")


def _is_sha256(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _replay_message(path: Path, run_id: str, server_round: int, kind: str) -> str:
    return (f"{path}: run {run_id} round {server_round} ({kind}) was already released; a second answer would "
            "give the server two noisy views of one round")


def _unit_message(path: Path, count: int) -> str:
    return (f"{path}: the policy's privacy unit is 'member' but {count} earlier release(s) were accounted per "
            "message; message-level releases do not bound member-level privacy, so the ledger cannot account "
            "this soundly (keep privacy_unit = \"message\" for this workspace)")


def _same(a: float, b: float) -> bool:
    return (math.isinf(a) and math.isinf(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
