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
- A release that cannot be stored (disk full, I/O error, read-only file) raises ``LedgerWriteError``
  (a ``LedgerError``) after its transaction is rolled back; the caller must then not send it. SQLite
  may still find the row committed after a failure reported at the very end of the commit (its
  frames were durable, the error came after): the budget then counts a release that was not sent,
  the safe side.

Assumption: the RDP accountant over the stored ``(noise_multiplier, sample_rate, steps)`` history;
see ``federated.privacy.accounting``.
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

from federated.errors import LedgerError
from federated.privacy.accounting import Step, epsilon

LEDGER_FILE = "ledger.sqlite"
SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE releases (
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
    accountant_state TEXT NOT NULL
);
"""


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


class LedgerWriteError(LedgerError):
    """A release could not be stored in the ledger (the storage failed, the ledger itself may be sound)."""

    code = "ledger-write-failed"


def inspect_hint(path: Path) -> str:
    return f"inspect it with `optin ledger show --workspace {path.parent}` or `sqlite3 {path} .dump`"


class Ledger:
    """A workspace's ledger file; opening it checks it (``LedgerError`` if it is not sound)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        existed = path.exists()
        try:
            self._db = sqlite3.connect(path, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            if not existed:
                with self._transaction():
                    self._db.execute(SCHEMA)
                    self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            self._check()
        except sqlite3.Error as exc:
            raise LedgerError(f"{path}: not a readable ledger ({exc}); {inspect_hint(path)}") from exc

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def releases(self) -> list[Release]:
        """Every release, oldest first; ``LedgerError`` if the file cannot be read now (an I/O error)."""
        try:
            rows = self._db.execute(
                "SELECT run_id, round, created_at, accountant, noise_multiplier, sample_rate, steps, delta, "
                "epsilon_total FROM releases ORDER BY id").fetchall()
        except sqlite3.Error as exc:
            raise LedgerError(f"{self.path}: the ledger could not be read ({exc}); {inspect_hint(self.path)}") from exc
        return [Release(*row) for row in rows]

    def history(self) -> list[Step]:
        """Every step the workspace ever released, in order: the accountant's full history."""
        return [(r.noise_multiplier, r.sample_rate, r.steps) for r in self.releases()]

    def spent(self, delta: float) -> float:
        """Lifetime ε at ``delta`` under the RDP accountant."""
        return epsilon(self.history(), delta)

    def record(self, run_id: str, server_round: int, noise_multiplier: float, sample_rate: float, steps: int,
               delta: float) -> Release:
        """Append one release in one transaction; returns it with the lifetime ε it brings the workspace to."""
        history = self.history() + [(noise_multiplier, sample_rate, steps)]
        total = epsilon(history, delta)
        release = Release(run_id, server_round, dt.datetime.now(dt.timezone.utc).isoformat(), "rdp",
                          noise_multiplier, sample_rate, steps, delta, total)
        try:
            with self._transaction():
                self._db.execute(
                    "INSERT INTO releases (run_id, round, created_at, accountant, noise_multiplier, sample_rate, "
                    "steps, delta, epsilon_total, accountant_state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (release.run_id, release.round, release.created_at, release.accountant, noise_multiplier,
                     sample_rate, steps, delta, total, json.dumps({"history": history})))
        except sqlite3.Error as exc:
            raise LedgerWriteError(
                f"{self.path}: could not record the release of run {run_id} round {server_round} ({exc}); it must "
                f"not be sent. Check the free space and permissions of {self.path.parent}; {inspect_hint(self.path)}"
            ) from exc
        return release

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
        for row_id, z, q, t, delta, total, state in self._db.execute(
                "SELECT id, noise_multiplier, sample_rate, steps, delta, epsilon_total, accountant_state "
                "FROM releases ORDER BY id"):
            history.append((z, q, t))
            if not (z >= 0 and 0 < q <= 1 and t > 0 and 0 < delta < 1):
                raise LedgerError(f"{self.path}: release {row_id} has impossible values; {hint}")
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


def _same(a: float, b: float) -> bool:
    return (math.isinf(a) and math.isinf(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
