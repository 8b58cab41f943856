"""A node killed with SIGKILL in the middle of a round leaves a consistent ledger: no half-written
release, and no release that was sent but not recorded."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from experiments.runners.in_process import make_synthetic_federation
from federated.audit import AUDIT_FILE, verify
from federated.data import SyntheticSpec
from federated.privacy.ledger import LEDGER_FILE, Ledger
from federated.privacy.policy import Policy, write_policy

WORKER = """
import sys
from pathlib import Path
from dataclasses import replace
from federated.privacy.ledger import Ledger
from tests.conftest import SMALL_CONFIG
from tests.node_calls import send_train
folder = Path(sys.argv[1])
with Ledger(folder / "ledger.sqlite") as ledger:
    start = len(ledger.releases()) + 1
for r in range(start, 10_000):
    reply = send_train(folder, SMALL_CONFIG, server_round=r, **{"local-steps": 6})
    assert not reply.has_error(), reply.error.reason
    print(f"SENT {r}", flush=True)
"""


def _start(folder: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WORKER, str(folder)], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[2], start_new_session=True)


def _sent_until_killed(proc: subprocess.Popen, wait_rounds: int, fraction: float) -> list[int]:
    """Read SENT lines until ``wait_rounds`` arrived, then SIGKILL ``fraction`` of a round later."""
    sent, stamps = [], []
    deadline = time.monotonic() + 120
    while len(sent) < wait_rounds and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        sent.append(int(line.split()[1]))
        stamps.append(time.monotonic())
    assert len(sent) == wait_rounds, "worker did not train"
    time.sleep(fraction * (stamps[-1] - stamps[-2]))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    sent += [int(line.split()[1]) for line in proc.stdout.read().splitlines() if line.startswith("SENT")]
    return sent


@pytest.mark.slow
def test_sigkill_mid_round_leaves_a_consistent_ledger(tmp_path: Path) -> None:
    spec = SyntheticSpec(num_workspaces=1, seed=5, min_messages=150, max_messages=150)
    (folder,) = make_synthetic_federation(tmp_path, spec, opted_out=[]).folders
    write_policy(folder, Policy(consent=True, max_epsilon=1000.0))
    all_sent: list[int] = []
    for fraction in (0.1, 0.5, 0.9):
        proc = _start(folder)
        try:
            all_sent += _sent_until_killed(proc, wait_rounds=2, fraction=fraction)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        with Ledger(folder / LEDGER_FILE) as ledger:  # opening re-checks every row and the stated ε
            recorded = [r.round for r in ledger.releases()]
        assert set(all_sent) <= set(recorded)  # nothing sent is missing
        assert len(recorded) - len(all_sent) <= 1  # at most the release being sent when killed
        assert recorded == list(range(1, len(recorded) + 1))
        assert verify(folder / AUDIT_FILE).ok
    proc = _start(folder)  # and the node trains on after all that
    try:
        assert proc.stdout.readline().startswith("SENT")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
