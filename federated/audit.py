"""Append-only, hash-chained JSONL audit logs (one per workspace node, one per server run).

Each line is a JSON object with ``seq`` (0, 1, 2, ...), ``time``, ``kind``, the entry's fields,
``prev`` (the previous entry's hash, or 64 zeros) and ``hash`` = SHA-256 of the entry's canonical
JSON without ``hash``. A side file ``<log>.head`` holds the last ``seq`` and ``hash``, replaced
atomically after each append.

Guarantee: ``verify`` detects an edited entry (its hash no longer matches), a deleted or reordered
entry (``seq`` or ``prev`` breaks), and a deleted tail (the head file names an entry that is gone).
It is tamper-evident against edits of the log alone; someone who rewrites the log *and* its head
file consistently is not detected (publish the head elsewhere for that).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord

from federated.errors import OptinError

GENESIS = "0" * 64
AUDIT_FILE = "audit.jsonl"


class AuditError(OptinError):
    """The audit log cannot be appended to (it is unreadable or already broken)."""


def _digest(entry: dict[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _head_path(path: Path) -> Path:
    return path.with_name(path.name + ".head")


class AuditLog:
    """Appends entries to one audit log file; refuses to extend a log whose last line is not sound."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, kind: str, **fields: Any) -> dict[str, Any]:
        seq, prev = self._tail()
        entry = {"seq": seq, "time": dt.datetime.now(dt.timezone.utc).isoformat(), "kind": kind, **fields,
                 "prev": prev}
        entry["hash"] = _digest(entry)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(entry, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        head = _head_path(self.path)
        tmp = head.with_suffix(".tmp")
        tmp.write_text(json.dumps({"seq": entry["seq"], "hash": entry["hash"]}), encoding="utf-8")
        tmp.replace(head)
        return entry

    def _tail(self) -> tuple[int, str]:
        if not self.path.exists():
            return 0, GENESIS
        last = _last_line(self.path)
        if last is None:
            return 0, GENESIS
        try:
            entry = json.loads(last)
            if _digest(entry) != entry["hash"]:
                raise ValueError("hash mismatch")
            return int(entry["seq"]) + 1, str(entry["hash"])
        except (ValueError, KeyError, TypeError) as exc:
            raise AuditError(f"{self.path}: last entry is damaged ({exc}); run `optin audit verify` on it") from exc


def _last_line(path: Path, chunk: int = 8192) -> bytes | None:
    """The file's last non-blank line (without trailing whitespace), or None if every line is blank.

    Read backwards from the end, ``chunk`` bytes at a time, so an append costs the same whatever the
    log's length (a server's log gains several entries per node and round).
    """
    with path.open("rb") as f:
        position = f.seek(0, os.SEEK_END)
        tail = b""
        while position > 0:
            step = min(chunk, position)
            position -= step
            f.seek(position)
            tail = f.read(step) + tail
            content = tail.rstrip()
            start = content.rfind(b"\n")
            if content and (start >= 0 or position == 0):
                return content[start + 1:]
    return None


@dataclass
class Verification:
    """Outcome of ``verify``: ``ok`` and the problems found, each naming the line."""

    entries: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def read_entries(path: Path) -> Iterator[dict[str, Any]]:
    """Every parseable entry of the log, in file order (use ``verify`` to know they are sound)."""
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                try:
                    yield json.loads(line)
                except ValueError:
                    continue


def verify(path: Path) -> Verification:
    """Check every entry's hash, the ``seq``/``prev`` chain, and the head file."""
    result = Verification()
    if not path.exists():
        result.problems.append(f"{path}: no such audit log")
        return result
    prev, expected_seq = GENESIS, 0
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                entry = json.loads(line)
                seq, stored_hash, stored_prev = entry["seq"], entry["hash"], entry["prev"]
            except (ValueError, KeyError, TypeError):
                result.problems.append(f"{where}: not a valid audit entry")
                prev, expected_seq = "?", expected_seq + 1
                continue
            result.entries += 1
            if _digest(entry) != stored_hash:
                result.problems.append(f"{where}: entry {seq} was edited (hash mismatch)")
            if seq != expected_seq:
                result.problems.append(f"{where}: expected entry {expected_seq}, found {seq} "
                                       "(an entry was deleted, inserted or reordered)")
            if stored_prev != prev:
                result.problems.append(f"{where}: entry {seq} does not follow the entry before it")
            prev, expected_seq = stored_hash, seq + 1
    head = _head_path(path)
    if head.exists():
        try:
            anchor = json.loads(head.read_text(encoding="utf-8"))
            if (anchor["seq"], anchor["hash"]) != (expected_seq - 1, prev):
                result.problems.append(f"{head}: the log should end at entry {anchor['seq']} "
                                       f"but ends at {expected_seq - 1} (entries removed from the end?)")
        except (ValueError, KeyError, TypeError):
            result.problems.append(f"{head}: unreadable head file")
    elif result.entries:
        result.problems.append(f"{head}: missing head file")
    return result


def fingerprint(arrays: ArrayRecord) -> tuple[int, str]:
    """(bytes, SHA-256) of the arrays' serialized data, in record order: what the release sends."""
    sha = hashlib.sha256()
    size = 0
    for key, array in arrays.items():
        sha.update(key.encode())
        sha.update(array.data)
        size += len(array.data)
    return size, sha.hexdigest()


def update_norm(new: ArrayRecord, old: ArrayRecord) -> float:
    """L2 norm of ``new - old`` over all arrays (the size of the update that left the node)."""
    total = 0.0
    for key in new.keys():
        diff = new[key].numpy().astype(np.float64) - old[key].numpy().astype(np.float64)
        total += float(np.sum(diff * diff))
    return float(np.sqrt(total))
