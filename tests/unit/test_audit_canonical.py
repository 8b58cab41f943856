"""An audit log's lines must be exactly what the writer writes (``federated.audit.entry_line``): a duplicate key,
an escaped character or other spacing fails ``verify`` even when every hash matches; appended values are capped
so a hostile string or list cannot blow up the log; a FIFO in place of the log or its head is refused at once."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from federated.audit import (
    AUDIT_FILE,
    LOGGED_LIST_MAX_ITEMS,
    NOT_CANONICAL,
    AuditError,
    AuditLog,
    _digest,
    read_entries,
    repair,
    verify,
)
from federated.errors import LedgerError
from federated.limits import LOGGED_STRING_MAX_CHARS
from federated.privacy.ledger_check import audit_releases


@pytest.fixture
def deadline() -> Iterator[None]:
    """Fail (instead of hanging the suite) if the test blocks, e.g. on opening or reading a FIFO."""

    def expire(signum: int, frame: object) -> None:
        raise TimeoutError("blocked for over 10 s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(10)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _log(folder: Path, entries: int = 3) -> Path:
    path = folder / AUDIT_FILE
    log = AuditLog(path)
    for i in range(entries):
        log.append("consent", run_id="run", round=str(i + 1), consent=True, reason="consent-on")
    return path


def _replace_line(path: Path, index: int, line: str) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[index] = line
    path.write_text("".join(text + "\n" for text in lines), encoding="utf-8")


def _forged(path: Path, index: int, kind: str) -> dict[str, object]:
    """Entry ``index`` of the log with ``kind`` changed and its hash recomputed over the parsed entry, the later
    entries re-hashed onto it and the head moved: the chain check alone cannot tell the forgery from the
    writer's log. Returns the forged entry (the caller writes its line)."""
    entries = list(read_entries(path))
    lines = path.read_text(encoding="utf-8").splitlines()
    prev = entries[index - 1]["hash"] if index else "0" * 64
    for at in range(index, len(entries)):
        changed = dict(entries[at], prev=prev, **({"kind": kind} if at == index else {}))
        changed["hash"] = prev = _digest(changed)
        lines[at] = json.dumps(changed, sort_keys=True)
        entries[at] = changed
    path.write_text("".join(text + "\n" for text in lines), encoding="utf-8")
    path.with_name(path.name + ".head").write_text(json.dumps({"seq": len(entries) - 1, "hash": prev}))
    assert verify(path).ok  # so far the writer's own form: only the line the caller writes differs
    return entries[index]


def test_an_honest_log_verifies_and_its_lines_are_the_writers_bytes(tmp_path: Path) -> None:
    path = _log(tmp_path)
    AuditLog(path).append("refusal", reason="bad-request", detail="caf\u00e9 \u2014 r\u00e9sum\u00e9",
                          nested={"a": [1, 2.5]})
    result = verify(path)
    assert result.ok, result.problems
    assert result.entries == 4
    assert b"\\u00e9" in path.read_bytes()  # non-ASCII is escaped: that is the canonical form


def test_a_duplicate_key_line_with_a_valid_chain_fails_verify(tmp_path: Path) -> None:
    path = _log(tmp_path)
    entry = _forged(path, 1, "release")
    body = json.dumps(entry, sort_keys=True)
    # The first "kind" is what grep and a naive reader see; the parser keeps the last one, which the hash covers.
    _replace_line(path, 1, '{"kind": "consent", ' + body[1:])
    assert [e["kind"] for e in read_entries(path)] == ["consent", "release", "consent"]

    problems = verify(path).problems
    assert len(problems) == 1, problems
    assert f"{path}:2: entry 1 is {NOT_CANONICAL}: duplicate key 'kind'" == problems[0]
    with pytest.raises(AuditError, match="not repaired"):
        repair(path)


def test_an_escaped_kind_fails_verify(tmp_path: Path) -> None:
    path = _log(tmp_path)
    entry = _forged(path, 2, "release")
    line = json.dumps(entry, sort_keys=True).replace('"release"', '"rel\\u0065ase"')
    assert "release" not in line  # hidden from grep
    _replace_line(path, 2, line)

    problems = verify(path).problems
    assert problems == [f"{path}:3: entry 2 is {NOT_CANONICAL}"]
    # The writer refuses to extend a log whose last line is not its own.
    with pytest.raises(AuditError, match="last entry is damaged.*not in canonical form"):
        AuditLog(path).append("consent", consent=False)


def test_extra_spaces_fail_verify(tmp_path: Path) -> None:
    path = _log(tmp_path)
    lines = path.read_text(encoding="utf-8").splitlines()
    _replace_line(path, 0, lines[0].replace(": ", ":  ", 1))
    assert verify(path).problems == [f"{path}:1: entry 0 is {NOT_CANONICAL}"]


def test_a_blank_line_or_a_missing_final_newline_fails_verify(tmp_path: Path) -> None:
    path = _log(tmp_path)
    honest = path.read_bytes()
    first_end = honest.index(b"\n") + 1
    path.write_bytes(honest[:first_end] + b"\n" + honest[first_end:])
    assert verify(path).problems == [f"{path}:2: a blank line (the log's writer writes none)"]

    path.write_bytes(honest[:-1])
    (problem,) = verify(path).problems
    assert problem.startswith(f"{path}:3: entry 2 has no newline at its end")


def test_a_canonical_problem_fails_the_ledger_check(tmp_path: Path) -> None:
    path = _log(tmp_path)
    lines = path.read_text(encoding="utf-8").splitlines()
    _replace_line(path, 1, lines[1].replace(", ", ",", 1))
    with pytest.raises(LedgerError, match="not in canonical form"):
        audit_releases(path)


def test_a_long_string_and_a_long_list_are_capped_and_the_log_verifies(tmp_path: Path) -> None:
    path = tmp_path / AUDIT_FILE
    written = AuditLog(path).append("refusal", round="g" * 1_000_000, violations=[f"v{i}" for i in range(10_000)],
                                    kept_local={"detail": ["x" * 300]}, count=7, ok=True)

    assert path.stat().st_size < 4_000
    data = path.read_bytes()
    assert b"[cut 999744 chars]" in data and b"[cut 9936 items]" in data
    (entry,) = read_entries(path)
    assert entry == written
    assert entry["round"] == "g" * LOGGED_STRING_MAX_CHARS + "\u2026[cut 999744 chars]"
    assert len(entry["violations"]) == LOGGED_LIST_MAX_ITEMS + 1
    assert entry["violations"][-1] == "\u2026[cut 9936 items]"
    assert entry["kept_local"]["detail"] == ["x" * LOGGED_STRING_MAX_CHARS + "\u2026[cut 44 chars]"]
    assert (entry["count"], entry["ok"]) == (7, True)
    assert verify(path).ok


@pytest.mark.parametrize("fifo", [AUDIT_FILE, AUDIT_FILE + ".head"])
def test_a_fifo_log_or_head_is_refused_at_once(tmp_path: Path, fifo: str, deadline: None) -> None:
    path = tmp_path / AUDIT_FILE
    if fifo != AUDIT_FILE:
        _log(tmp_path, entries=1)
        (tmp_path / fifo).unlink()
    os.mkfifo(tmp_path / fifo)

    with pytest.raises(AuditError, match=f"{tmp_path / fifo}: is a FIFO; expected a regular file"):
        AuditLog(path).append("consent", consent=True)
    result = verify(path)
    assert not result.ok
    assert any(p.startswith(f"{tmp_path / fifo}: is a FIFO; expected a regular file") for p in result.problems)
    if fifo == AUDIT_FILE:
        with pytest.raises(AuditError, match="is a FIFO"):
            list(read_entries(path))
        with pytest.raises(AuditError, match="is a FIFO"):
            repair(path)
