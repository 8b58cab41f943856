"""The node's executor keeps going when a prestarted worker fails: it starts another, and a ready one serves."""

from __future__ import annotations

import time
from pathlib import Path

from clients.node_executor import Worker, replace_failed

START_TIMEOUT_S = 300  # a worker forks from a server that imports torch and Opacus first: slow on a loaded machine


def _wait(condition, timeout: float = START_TIMEOUT_S) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


def test_a_worker_that_dies_is_replaced_by_one_that_becomes_ready(tmp_path: Path) -> None:
    broken = Worker(tmp_path, tmp_path / "curves")
    broken.process.kill()  # as the kernel's OOM killer would
    assert _wait(lambda: broken.failed)
    replacement = replace_failed(broken, tmp_path, tmp_path / "curves")
    try:
        assert replacement is not broken and not broken.process.is_alive()
        assert _wait(lambda: replacement.ready), "the new worker never became ready"
        assert replace_failed(replacement, tmp_path, tmp_path / "curves") is replacement  # a ready one is kept
    finally:
        replacement.stop()
