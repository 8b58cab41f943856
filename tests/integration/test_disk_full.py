"""A node whose disk fills up mid-round never sends a release it did not record, and trains again once
there is space.

The full disk is real: the node runs in a subprocess whose file-size limit (``RLIMIT_FSIZE``, with
``SIGXFSZ`` ignored) makes the OS refuse the write (``EFBIG``) exactly as it refuses one on a full
disk (``ENOSPC``): a short write, then an error. No root, no mounted filesystem.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from experiments.runners.in_process import make_synthetic_federation
from federated.audit import AUDIT_FILE, AuditLog, read_entries, verify
from federated.data import SyntheticSpec
from federated.privacy.ledger import LEDGER_FILE, Ledger
from federated.privacy.policy import Policy, write_policy
from tests.conftest import SMALL_CONFIG
from tests.node_calls import send_train

WORKER = """
import json, resource, signal, sqlite3, sys
from pathlib import Path
from flwr.app import RecordDict
from tests.conftest import SMALL_CONFIG
from tests.node_calls import send, send_train, train_config

folder, limit, kind = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]

def call(server_round):
    if kind == "query":
        return send(folder, "query", SMALL_CONFIG, RecordDict({"config": train_config()}))
    return send_train(folder, SMALL_CONFIG, server_round=server_round)
# A second connection (as `optin ledger show` running alongside would hold) keeps the ledger's WAL index
# open, so the limit falls on the release's own write to the write-ahead log, not on opening the ledger.
reader = sqlite3.connect(folder / "ledger.sqlite")
reader.execute("SELECT count(*) FROM releases").fetchone()

def seen(reply):
    if reply.has_error():
        return {"error": reply.error.reason, "records": []}
    return {"error": None, "records": sorted(reply.content.keys())}

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
full = seen(call(2))
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # space is back
again = seen(call(3))
reader.close()
print(json.dumps({"full": full, "again": again}))
"""


def _workspace(tmp_path: Path) -> Path:
    """One consenting workspace that has made one release (round 1), so its ledger and audit log exist."""
    spec = SyntheticSpec(num_workspaces=1, seed=7, min_messages=120, max_messages=120)
    (folder,) = make_synthetic_federation(tmp_path, spec, opted_out=[]).folders
    write_policy(folder, Policy(consent=True, max_epsilon=1000.0))
    assert not send_train(folder, SMALL_CONFIG, server_round=1).has_error()
    return folder


def _run_node_with_file_size_limit(folder: Path, limit: int, kind: str = "train") -> dict[str, dict]:
    """Round 2's ``kind`` message with writes limited to ``limit`` bytes per file, then round 3's without; what
    each reply carried."""
    done = subprocess.run([sys.executable, "-c", WORKER, str(folder), str(limit), kind], check=False,
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2], timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _rounds(folder: Path) -> list[int]:
    with Ledger(folder / LEDGER_FILE) as ledger:  # opening re-checks every row and the stated ε
        return [r.round for r in ledger.releases()]


@pytest.mark.slow
def test_a_full_disk_while_recording_the_release_refuses_and_records_nothing(tmp_path: Path) -> None:
    folder = _workspace(tmp_path)
    with closing(sqlite3.connect(folder / LEDGER_FILE)) as db:
        page = db.execute("PRAGMA page_size").fetchone()[0]
    # The write-ahead log's first write is its 32-byte header, a 24-byte frame header and one page: it cannot
    # fit in one page. The audit log (one entry so far) still has room for the refusal entry.
    limit = page
    assert (folder / AUDIT_FILE).stat().st_size + 2000 < limit

    replies = _run_node_with_file_size_limit(folder, limit)

    assert replies["full"] == {"error": "refused: ledger-write-failed", "records": []}  # no model left
    assert replies["again"] == {"error": None, "records": ["arrays", "metrics"]}
    assert _rounds(folder) == [1, 3]  # round 2 was neither recorded nor sent
    assert verify(folder / AUDIT_FILE).ok
    entries = list(read_entries(folder / AUDIT_FILE))
    assert [(e["kind"], e["round"]) for e in entries] == [("release", 1), ("refusal", "2"), ("release", 3)]
    refusal = entries[1]
    assert refusal["reason"] == "ledger-write-failed"
    assert "could not record the release of run 1 round 2" in refusal["detail"]
    assert str(folder / LEDGER_FILE) in refusal["detail"]


@pytest.mark.slow
def test_a_full_disk_while_auditing_the_release_refuses_and_leaves_the_log_whole(tmp_path: Path) -> None:
    folder = _workspace(tmp_path)
    log = AuditLog(folder / AUDIT_FILE)
    while (folder / AUDIT_FILE).stat().st_size < 20_000:  # room for the ledger's write-ahead log below the limit
        log.append("consent", run_id="1", round="1", consent=True, reason="consent-on", **{"can-afford": True})
    before = (folder / AUDIT_FILE).read_bytes()
    # The limit falls 100 bytes into the release entry's line: a short write, then the error.
    limit = len(before) + 100

    replies = _run_node_with_file_size_limit(folder, limit)

    assert replies["full"] == {"error": "refused: audit-unwritable", "records": []}  # no model left unlogged
    assert replies["again"] == {"error": None, "records": ["arrays", "metrics"]}
    # The ledger recorded round 2 before the audit write failed: its budget stays spent (the safe side).
    assert _rounds(folder) == [1, 2, 3]
    after = (folder / AUDIT_FILE).read_bytes()
    assert after.startswith(before)  # the torn line was cut off again; nothing was lost
    assert verify(folder / AUDIT_FILE).ok
    added = list(read_entries(folder / AUDIT_FILE))[len(before.splitlines()):]
    assert [(e["kind"], e["round"]) for e in added] == [("release", 3)]


@pytest.mark.slow
def test_a_full_disk_while_auditing_the_consent_answer_refuses_and_leaves_the_log_whole(tmp_path: Path) -> None:
    folder = _workspace(tmp_path)
    before = (folder / AUDIT_FILE).read_bytes()

    replies = _run_node_with_file_size_limit(folder, len(before) + 50, kind="query")

    # An answer the node cannot log is not given: the server reads the refusal as no consent.
    assert replies["full"] == {"error": "refused: audit-unwritable", "records": []}
    assert replies["again"] == {"error": None, "records": ["consent"]}
    after = (folder / AUDIT_FILE).read_bytes()
    assert after.startswith(before)
    assert verify(folder / AUDIT_FILE).ok
    added = list(read_entries(folder / AUDIT_FILE))[len(before.splitlines()):]
    assert [(e["kind"], e["reason"]) for e in added] == [("consent", "consent-on")]
