"""Recovering an audit log from a crash mid-append (``federated.audit.repair``, ``optin audit repair``):
a torn last line is moved aside and recorded, a head one entry behind is moved forward, and any other
problem (tampering) is refused with the log left untouched."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from experiments.cli.app import app
from federated.audit import AUDIT_FILE, AuditError, AuditLog, read_entries, repair, verify

runner = CliRunner()


def _log(folder: Path, entries: int = 3) -> Path:
    path = folder / AUDIT_FILE
    log = AuditLog(path)
    for i in range(entries):
        log.append("consent", run_id="run", round=str(i + 1), consent=True, reason="consent-on")
    return path


def _head(path: Path) -> Path:
    return path.with_name(path.name + ".head")


def _torn_files(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f"{path.name}.torn-*"))


def _append_torn(path: Path, cut: int) -> bytes:
    """What a crash leaves after ``cut`` bytes of the next entry's line: the line's start, no head update."""
    probe = path.with_name("probe.jsonl")
    probe.write_bytes(path.read_bytes())
    _head(probe).write_bytes(_head(path).read_bytes())
    AuditLog(probe).append("release", run_id="run", round=9, bytes=1234, sha256="ab" * 32)
    line = probe.read_bytes()[len(path.read_bytes()):]
    torn = line[:cut]
    with path.open("ab") as f:
        f.write(torn)
    return torn


def test_a_torn_last_line_blocks_appends_until_repair_moves_it_aside(tmp_path: Path) -> None:
    path = _log(tmp_path)
    complete = path.read_bytes()
    torn = _append_torn(path, cut=57)
    with pytest.raises(AuditError, match="incomplete.*optin audit repair"):
        AuditLog(path).append("consent", consent=False)
    assert path.read_bytes() == complete + torn  # the refused append wrote nothing

    done = repair(path)

    (aside,) = _torn_files(path)
    assert done.torn_file == aside and aside.read_bytes() == torn  # moved, not deleted
    assert (done.torn_bytes, done.torn_sha256, done.head_fixed) == (57, hashlib.sha256(torn).hexdigest(), False)
    assert path.read_bytes().startswith(complete)
    entries = list(read_entries(path))
    assert [e["seq"] for e in entries] == [0, 1, 2, 3]
    assert {k: entries[-1][k] for k in ("kind", "torn_bytes", "torn_sha256", "torn_file", "head_fixed")} == {
        "kind": "repair", "torn_bytes": 57, "torn_sha256": hashlib.sha256(torn).hexdigest(),
        "torn_file": aside.name, "head_fixed": False}
    assert entries[-1] == done.entry
    assert verify(path).ok
    AuditLog(path).append("consent", consent=True)  # the node can log again
    assert verify(path).ok and verify(path).entries == 5


def test_a_complete_line_whose_bytes_were_lost_is_torn_too(tmp_path: Path) -> None:
    """The newline survived but the blocks before it did not (zeros): not JSON, so it is torn."""
    path = _log(tmp_path)
    lost = b"\0" * 80 + b"\n"
    with path.open("ab") as f:
        f.write(lost)
    done = repair(path)
    assert done.torn_bytes == len(lost) and done.torn_file is not None and done.torn_file.read_bytes() == lost
    assert verify(path).ok


def test_a_whole_entry_without_its_newline_is_set_aside_not_kept(tmp_path: Path) -> None:
    """A line is complete only with its newline; the entry's bytes stay available in the torn file."""
    path = _log(tmp_path)
    line = _append_torn(path, cut=10_000)
    whole = line.rstrip(b"\n")
    path.write_bytes(path.read_bytes()[:-1])  # only the newline missing
    done = repair(path)
    assert done.torn_file is not None and done.torn_file.read_bytes() == whole
    assert [e["kind"] for e in read_entries(path)] == ["consent"] * 3 + ["repair"]
    assert verify(path).ok


@pytest.mark.parametrize("behind", [1, 3])
def test_a_head_behind_the_log_is_moved_forward(tmp_path: Path, behind: int) -> None:
    """The crash came after the lines were written but before the head was replaced."""
    path = _log(tmp_path, entries=2)
    stale = _head(path).read_bytes()
    for _ in range(behind):
        AuditLog(path).append("consent", consent=True)
    _head(path).write_bytes(stale)
    assert "optin audit repair" in " ".join(verify(path).problems)

    done = repair(path)

    assert (done.torn_file, done.torn_bytes, done.head_fixed) == (None, 0, True)
    assert done.entry is not None and done.entry["seq"] == 2 + behind and done.entry["torn_file"] is None
    assert verify(path).ok and _torn_files(path) == []


def test_a_stale_head_and_a_torn_line_together(tmp_path: Path) -> None:
    """One crash left the head behind; the next append was torn by a second crash."""
    path = _log(tmp_path, entries=2)
    stale = _head(path).read_bytes()
    AuditLog(path).append("consent", consent=True)
    _head(path).write_bytes(stale)
    torn = _append_torn(path, cut=30)
    done = repair(path)
    assert (done.torn_bytes, done.head_fixed) == (len(torn), True)
    assert verify(path).ok and [e["seq"] for e in read_entries(path)] == [0, 1, 2, 3]


def test_a_torn_first_entry(tmp_path: Path) -> None:
    path = tmp_path / AUDIT_FILE
    path.write_bytes(b'{"hash": "12')  # the very first append, cut short: no head file yet
    done = repair(path)
    assert done.torn_bytes == 12
    (entry,) = read_entries(path)
    assert entry["seq"] == 0 and entry["kind"] == "repair" and verify(path).ok


def test_a_first_entry_whose_head_was_never_written(tmp_path: Path) -> None:
    path = _log(tmp_path, entries=1)
    _head(path).unlink()
    assert repair(path).head_fixed and verify(path).ok


def test_a_sound_log_is_left_as_it_is(tmp_path: Path) -> None:
    path = _log(tmp_path)
    before = (path.read_bytes(), _head(path).read_bytes())
    done = repair(path)
    assert done.entry is None and done.torn_file is None and not done.head_fixed
    assert (path.read_bytes(), _head(path).read_bytes()) == before


def _edit_middle(path: Path) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1].replace(b'"round": "2"', b'"round": "5"')
    path.write_bytes(b"".join(lines))


def _swap(path: Path) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    lines[0], lines[1] = lines[1], lines[0]
    path.write_bytes(b"".join(lines))


def _delete_middle(path: Path) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:1] + lines[2:]))


def _delete_last_two(path: Path) -> None:
    """The head names entry 2; entries 1 and 2 are gone (beyond what one torn append can lose)."""
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:1]))


def _delete_last(path: Path) -> None:
    """The head names entry 2, which is gone: a complete entry removed, not a torn append."""
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:2]))


def _tear_the_entry_the_head_names(path: Path) -> None:
    """The head names entry 2, yet its line is cut short: the head moves only after the line is synced."""
    path.write_bytes(path.read_bytes()[:-40])


def _edit_last(path: Path) -> None:
    """A complete, parseable last line whose hash does not match: an edit, not a torn write."""
    lines = path.read_bytes().splitlines(keepends=True)
    lines[-1] = lines[-1].replace(b'"round": "3"', b'"round": "7"')
    path.write_bytes(b"".join(lines))


def _garble_middle(path: Path) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    lines[1] = b"\0" * 20 + b"\n"
    path.write_bytes(b"".join(lines))


def _no_head(path: Path) -> None:
    _head(path).unlink()


def _head_names_a_forged_entry(path: Path) -> None:
    """The head names entry 1 with another hash: not an entry of this log."""
    _head(path).write_text(json.dumps({"seq": 1, "hash": "f" * 64}))


def _unreadable_head(path: Path) -> None:
    _head(path).write_text("{not json")


TAMPERING: dict[str, Callable[[Path], None]] = {
    "edited entry": _edit_middle, "reordered entries": _swap, "deleted entry": _delete_middle,
    "tail removed": _delete_last_two, "last entry removed": _delete_last,
    "head names the torn entry": _tear_the_entry_the_head_names, "edited last entry": _edit_last,
    "garbled middle line": _garble_middle, "head file deleted": _no_head, "head file unreadable": _unreadable_head,
    "head names another entry": _head_names_a_forged_entry,
}


@pytest.mark.parametrize("tamper", TAMPERING.values(), ids=TAMPERING.keys())
@pytest.mark.parametrize("torn_too", [False, True], ids=["", "with a torn line"])
def test_tampering_is_refused_and_nothing_changes(tmp_path: Path, tamper: Callable[[Path], None],
                                                  torn_too: bool) -> None:
    path = _log(tmp_path)
    tamper(path)
    if torn_too:
        with path.open("ab") as f:
            f.write(b'{"seq": 3, "ti')
    head = _head(path)
    before = (path.read_bytes(), head.read_bytes() if head.exists() else None)
    with pytest.raises(AuditError, match="not repaired|unreadable head file"):
        repair(path)
    assert (path.read_bytes(), head.read_bytes() if head.exists() else None) == before
    assert _torn_files(path) == []
    assert not verify(path).ok


def test_no_log_to_repair(tmp_path: Path) -> None:
    with pytest.raises(AuditError, match="no such audit log"):
        repair(tmp_path / AUDIT_FILE)


def test_an_append_that_cannot_finish_leaves_the_log_as_it_was(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The head cannot be written (its temporary file cannot be created: the disk is full): the line already
    written is cut back off, so the log and head never disagree after a failed append."""
    path = _log(tmp_path)
    before = (path.read_bytes(), _head(path).read_bytes())

    def disk_full(*args: object, **kwargs: object) -> tuple[int, str]:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as patch:
        patch.setattr(tempfile, "mkstemp", disk_full)
        with pytest.raises(AuditError, match="could not append a 'release' entry.*left as it was"):
            AuditLog(path).append("release", run_id="run", round=4)
    assert (path.read_bytes(), _head(path).read_bytes()) == before
    AuditLog(path).append("release", run_id="run", round=4)
    assert verify(path).ok and verify(path).entries == 4


def test_cli_repairs_a_torn_log_then_finds_nothing_to_do(tmp_path: Path) -> None:
    path = _log(tmp_path)
    torn = _append_torn(path, cut=21)
    assert runner.invoke(app, ["audit", "verify", str(tmp_path)]).exit_code == 1
    result = runner.invoke(app, ["audit", "repair", str(tmp_path)])
    assert result.exit_code == 0, result.output
    (aside,) = _torn_files(path)
    assert f"moved 21 torn bytes (sha256 {hashlib.sha256(torn).hexdigest()}) to {aside}" in result.output
    assert "repaired; 4 entries, chain intact" in result.output
    assert runner.invoke(app, ["audit", "verify", str(path)]).exit_code == 0
    again = runner.invoke(app, ["audit", "repair", str(path)])
    assert again.exit_code == 0 and "nothing to repair; 4 entries, chain intact" in again.output
    assert len(_torn_files(path)) == 1


def test_cli_refuses_tampering_with_one_line_and_exit_1(tmp_path: Path) -> None:
    path = _log(tmp_path)
    _edit_middle(path)
    before = path.read_bytes()
    result = runner.invoke(app, ["audit", "repair", str(path)])
    assert result.exit_code == 1
    assert result.output.startswith("error: ") and "entry 1 was edited" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert path.read_bytes() == before and json.loads(_head(path).read_text())["seq"] == 2
