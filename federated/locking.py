"""Advisory file locks (``fcntl.flock``) that exclude other processes *and* other threads of this one.

Guarantee: while ``file_lock(path)`` is held exclusively, no other ``file_lock`` on the same path (in any
process on this machine, or any thread of this process) holds it, shared or exclusive; shared holders
exclude only exclusive ones. The lock is released when the block exits or the process dies (the kernel drops
it with the file description), so a crashed holder never leaves a stale lock behind.

Assumptions: every party that must be excluded takes the lock through this module (``flock`` is advisory;
a process that writes without it is not stopped), and the files live on a local filesystem (``flock`` over
NFS is emulated with byte-range locks on some systems and not at all on others).

Each acquisition opens its own file description: ``flock`` locks belong to the description, so two threads
sharing one descriptor would both "hold" it. The lock file is never deleted: deleting it while another party
waits on the old inode would let a third lock a new file at the same path and both go ahead.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from federated.errors import LockError


@contextmanager
def file_lock(path: Path, timeout: float, what: str, shared: bool = False,
              best_effort: bool = False) -> Iterator[None]:
    """Hold ``flock`` on ``path`` (created if missing) for the block; ``LockError`` naming ``what`` and the file
    if it is still held by another party after ``timeout`` seconds, or if the lock file cannot be opened.

    ``best_effort`` (for readers only): when the lock file cannot be opened or created (a read-only folder,
    where no writer can work either), run the block without a lock instead of raising.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if best_effort:
            yield
            return
        raise LockError(f"{path}: cannot open the lock file of {what} ({exc.strerror or exc})") from exc
    try:
        _acquire(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX, timeout, path, what)
        yield
    finally:
        os.close(fd)  # closing the last descriptor of the description releases the lock


def _acquire(fd: int, operation: int, timeout: float, path: Path, what: str) -> None:
    """Poll a non-blocking ``flock`` (a blocking one cannot time out without signals, which threads cannot use)."""
    deadline = time.monotonic() + timeout
    pause = 0.001
    while True:
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        except OSError as exc:
            raise LockError(f"{path}: cannot lock {what} ({exc.strerror or exc})") from exc
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise LockError(f"{path}: {what} is held by another process or thread for over {timeout:g} s; "
                            "is another node serving this workspace?")
        time.sleep(min(pause, remaining))
        pause = min(pause * 2, 0.05)
