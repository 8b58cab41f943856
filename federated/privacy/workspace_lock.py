"""The workspace's exclusive lock: one train (budget check, training, ledger, audit) at a time per workspace.

Guarantee: while ``workspace_lock(folder)`` is held, no other holder of it exists, whether in another process
(another SuperNode, a second federation's node, ``optin`` commands on the same folder) or in another thread of
this process. With it held from the budget check to the audit entry, two train calls cannot both plan against
the same spent ε; the ledger's own re-check inside its write transaction (``Ledger.record``) is the second line.

Assumptions: see ``federated.locking`` (every writer takes the lock; a local filesystem). The lock file
``.optin.lock`` in the workspace folder is created on first use and never removed; it holds no data.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from federated.locking import file_lock

WORKSPACE_LOCK_FILE = ".optin.lock"
WORKSPACE_LOCK_TIMEOUT_S = 900.0
"""How long a train call waits for another to finish before refusing with ``LockError`` (``workspace-busy``):
long enough for a slow round of local DP-SGD, short enough that a stuck holder is reported."""


@contextmanager
def workspace_lock(folder: Path, timeout: float = WORKSPACE_LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold the workspace's exclusive lock for the block; ``LockError`` after ``timeout`` seconds of waiting."""
    with file_lock(folder / WORKSPACE_LOCK_FILE, timeout, f"workspace {folder.name}"):
        yield
