"""``AuditLog.append_many``: a batch chains exactly like single appends, ``verify`` accepts it and catches any
tampering inside it, and a batch that cannot be written whole is not written at all."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from federated.audit import AuditLog, read_entries, verify

BATCH = [("consent", {"round": 1, "node": n, "reason": "consent-on"}) for n in range(5)]


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def _rewrite(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def test_a_batch_chains_like_single_appends_and_verifies(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    log.append("run-start", run=1)
    written = log.append_many(BATCH)
    log.append("skip", round=1, node=7, reason="not-sampled")
    log.append_many(BATCH[:1])

    entries = list(read_entries(log.path))
    assert [e["seq"] for e in entries] == list(range(8))
    assert [e["prev"] for e in entries[1:]] == [e["hash"] for e in entries[:-1]]
    assert entries[1:6] == written
    assert [(e["kind"], e["node"], e["reason"]) for e in written] == [(k, f["node"], f["reason"]) for k, f in BATCH]
    result = verify(log.path)
    assert result.ok, result.problems
    assert result.entries == 8
    assert json.loads(log.path.with_name("audit.jsonl.head").read_text())["seq"] == 7


def test_an_empty_batch_writes_nothing(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    assert log.append_many([]) == []
    assert not log.path.exists()


def test_an_edited_or_removed_entry_inside_a_batch_is_caught(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    log.append_many(BATCH)
    original = _lines(log.path)

    edited = list(original)
    entry = json.loads(edited[2])
    entry["reason"] = "consent-off"
    edited[2] = json.dumps(entry, sort_keys=True)
    _rewrite(log.path, edited)
    assert any("entry 2 was edited" in p for p in verify(log.path).problems)

    _rewrite(log.path, original[:2] + original[3:])
    assert any("expected entry 2, found 3" in p for p in verify(log.path).problems)

    _rewrite(log.path, original[:-1])
    assert any("the log should end at entry 4" in p for p in verify(log.path).problems)


def test_fields_may_not_overwrite_the_chain(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    with pytest.raises(ValueError, match=r"\['seq'\]"):
        log.append_many([("skip", {"seq": 0})])
    assert not log.path.exists()


WORKER = """
import resource, signal, sys
from pathlib import Path
from federated.audit import AuditError, AuditLog

log = AuditLog(Path(sys.argv[1]))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG, as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (log.path.stat().st_size + 300, resource.RLIM_INFINITY))
try:
    log.append_many([("consent", {"round": 2, "node": n, "reason": "consent-on"}) for n in range(20)])
except AuditError as exc:
    print(exc)
"""


def test_a_batch_that_does_not_fit_on_disk_leaves_the_log_as_it_was(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    log.append_many(BATCH)
    before = log.path.read_bytes()
    done = subprocess.run([sys.executable, "-c", WORKER, str(log.path)], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2], timeout=120, check=True)
    assert "could not append 20 entries" in done.stdout and "the log is left as it was" in done.stdout
    assert log.path.read_bytes() == before
    assert verify(log.path).ok
    assert log.append_many(BATCH[:1])[0]["seq"] == len(BATCH)
