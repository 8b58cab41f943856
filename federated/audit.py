"""Append-only, hash-chained JSONL audit logs (one per workspace node, one per server run).

Each line is a JSON object with ``seq`` (0, 1, 2, ...), ``time``, ``kind``, the entry's fields,
``prev`` (the previous entry's hash, or 64 zeros) and ``hash`` = SHA-256 of the entry's canonical
JSON without ``hash``. A side file ``<log>.head`` holds the last ``seq`` and ``hash``, replaced
atomically after each append.

Every line is written in one canonical form (``entry_line``: sorted keys, ``json.dumps``'s default
separators, every non-ASCII character escaped, a newline), and a line is sound only if it is exactly those
bytes for the entry it parses to. So the log's bytes are determined by its entries: a duplicate key (a
parser keeps the last value, ``grep`` sees the first), an escape that hides a word from ``grep``
(``"rel\\u0065ase"``), other spacing, a blank line or a line without its newline is a problem even
when every hash matches (the hash covers the parsed entry, not the bytes).

Guarantee: ``verify`` detects an edited entry (its hash no longer matches, or its line is not in canonical
form), a deleted or reordered entry (``seq`` or ``prev`` breaks), and a deleted tail (the head file names an
entry that is gone).
It is tamper-evident against edits of the log alone; someone who rewrites the log *and* its head
file consistently is not detected (publish the head elsewhere for that). ``append`` never starts or
extends a chain that contradicts its head: a head whose log is missing, shorter than the head says, or
ending in another entry, and a log of entries with no head, are refused (``AuditError``), so deleting
the log (or its tail) while the head survives cannot restart the chain at entry 0 unnoticed.

Concurrency: every append (read the tail, write, ``fsync``, move the head, cut back a failed write) and
every ``repair`` runs under an exclusive ``flock`` on ``<log>.lock``; ``verify`` reads under a shared one.
Any number of threads and processes on one machine may append to one log at once: each entry gets its own
``seq``, no line interleaves with another, and a failed append cuts off only its own bytes. Head updates
write a uniquely named temporary file in the log's folder, then rename it over the head.

An append either adds one whole line and moves the head to it, or raises ``AuditError`` and leaves
the log and head as they were (a failed write, e.g. a full disk, is truncated away). Only a crash
mid-append can leave a torn last line, or complete entries after the one the head names; ``repair``
recovers exactly those two states and refuses everything else.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from federated.errors import LockError, OptinError
from federated.limits import KIB, LOGGED_LIST_MAX_ITEMS, cut
from federated.locking import file_lock
from federated.safe_files import open_regular, read_bytes

if TYPE_CHECKING:  # Flower's import costs ~1 s: the operator commands that read logs need none of it
    from flwr.app import ArrayRecord

log = logging.getLogger("optin.audit")

GENESIS = "0" * 64
_CHAIN_KEYS = frozenset({"seq", "time", "kind", "prev", "hash"})
AUDIT_FILE = "audit.jsonl"
AUDIT_LOCK_TIMEOUT_S = 120.0
"""How long an append waits for another writer of the same log (an append holds the lock for milliseconds)."""
HEAD_MAX_BYTES = 4 * KIB
"""The head file holds one ``seq`` and one hash (about 100 bytes); a bigger one is refused, not read."""
NOT_CANONICAL = "not in canonical form (duplicate key, escaped characters or different spacing)"


class AuditError(OptinError):
    """The audit log cannot be appended to or repaired (unreadable, broken, or the write failed)."""

    code = "audit-unwritable"


def _digest(entry: dict[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def entry_line(entry: Mapping[str, Any]) -> bytes:
    """The exact bytes the writer appends for ``entry``: ``json.dumps`` with sorted keys, its default separators
    (``", "``, ``": "``) and ``ensure_ascii`` (every non-ASCII character as a ``\\uXXXX`` escape), then a newline.
    ``verify`` accepts a line only if it is these bytes for the entry the line parses to."""
    return (json.dumps(entry, sort_keys=True) + "\n").encode("ascii")


def _parse_line(line: bytes) -> tuple[Any, list[str]]:
    """The value one line of a log (without its newline) parses to, and every key repeated inside one of its
    objects (the parse keeps the last value); ``ValueError`` if the line is not JSON."""
    repeated: list[str] = []

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj: dict[str, Any] = {}
        for key, value in pairs:
            if key in obj:
                repeated.append(key)
            obj[key] = value
        return obj

    return json.loads(line, object_pairs_hook=unique), repeated


def _canonical_problem(line: bytes, entry: Mapping[str, Any], repeated: list[str]) -> str | None:
    """Why ``line`` (without its newline), which parsed to ``entry`` repeating the keys ``repeated``, is not what
    the writer writes for ``entry``; None when it is exactly ``entry_line(entry)``."""
    if repeated:
        return f"{NOT_CANONICAL}: duplicate key {repeated[0]!r}"
    if line + b"\n" != entry_line(entry):
        return NOT_CANONICAL
    return None


def _capped(value: Any) -> Any:
    """``value`` with every string longer than ``LOGGED_STRING_MAX_CHARS`` cut to that many characters plus a
    marker naming how many were cut, and every list or tuple longer than ``LOGGED_LIST_MAX_ITEMS`` cut to that
    many items plus a marker item, at any depth inside dicts and lists; numbers, booleans and None unchanged."""
    if isinstance(value, str):
        return cut(value)
    if isinstance(value, Mapping):
        return {key: _capped(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        kept = [_capped(item) for item in value[:LOGGED_LIST_MAX_ITEMS]]
        if (extra := len(value) - LOGGED_LIST_MAX_ITEMS) > 0:
            kept.append(f"…[cut {extra} items]")
        return kept
    return value


def _open_regular(path: Path, flags: int) -> int:
    """``federated.safe_files.open_regular`` for a log: a FIFO or device put in place of it is refused at once
    (``AuditError``) instead of hanging or feeding the reader without end."""
    return open_regular(path, flags, error=AuditError)


def _head_path(path: Path) -> Path:
    return path.with_name(path.name + ".head")


def lock_path(path: Path) -> Path:
    """The lock file beside the log that appends, repairs (exclusive) and verifications (shared) take."""
    return path.with_name(path.name + ".lock")


def _exclusive(path: Path) -> Any:
    return file_lock(lock_path(path), AUDIT_LOCK_TIMEOUT_S, f"audit log {path.name}")


def _shared(path: Path) -> Any:
    return file_lock(lock_path(path), AUDIT_LOCK_TIMEOUT_S, f"audit log {path.name}", shared=True,
                     best_effort=True)


def _write_head(path: Path, seq: int, digest: str) -> None:
    """Point the head file at entry ``seq``: written to a new, uniquely named temporary file in the same folder,
    synced, then renamed over the head, so after a crash the head names either the old entry or the new one,
    never a half-written file (and no two writers ever share a temporary file)."""
    head = _head_path(path)
    fd, name = tempfile.mkstemp(dir=head.parent, prefix=head.name + ".", suffix=".tmp")
    tmp = Path(name)
    try:
        try:
            _write_all(fd, json.dumps({"seq": seq, "hash": digest}).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; the head is as readable as the log
        tmp.replace(head)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def _write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is written; a short write is retried so the OS reports its error."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class AuditLog:
    """Appends entries to one audit log file; refuses to extend a log whose last line is not sound, or
    whose head file it contradicts.

    ``append`` either writes the whole entry and moves the head to it, or raises ``AuditError`` having
    truncated the log back to its length before the call. Safe with concurrent writers (threads or
    processes on one machine): each append holds the log's exclusive lock throughout.

    Bounded entries: the keys of an entry are fixed by the code that logs it, but its values may come from
    outside (a hostile server's 20 MB group id, an error detail quoting it, a list of violations), and a node
    writes them once per message. So before an entry is hashed and written, every string value, at any depth
    inside dicts and lists, is cut to ``LOGGED_STRING_MAX_CHARS`` characters plus a marker
    ``…[cut N chars]``, and every list to ``LOGGED_LIST_MAX_ITEMS`` items plus a marker item
    ``…[cut N items]``; numbers, booleans and None are kept. An entry's size is then bounded by the shape of
    its fields, which the code fixes. Fields are stored as JSON reads them back (tuples become lists, dict
    keys strings), and the returned entries are exactly what the log holds.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Append one entry (``append_many`` with one entry)."""
        return self.append_many([(kind, fields)])[0]

    def append_many(self, entries: Sequence[tuple[str, Mapping[str, Any]]]) -> list[dict[str, Any]]:
        """Append ``(kind, fields)`` entries in order, with one write, one ``fsync`` and one head update.

        The entries are chained exactly as that many ``append`` calls would chain them (``verify`` cannot
        tell the difference) and share one ``time``. All or nothing, like ``append``: if the write fails,
        the log is truncated back to its length before the call and ``AuditError`` is raised. A crash during
        the call can leave a torn last line, or complete entries of the batch past the entry the head names
        (the next append moves the head past them).
        Values are capped first (see the class docstring).
        Raises ``ValueError`` if fields use a key the chain owns (``seq``, ``time``, ``kind``, ``prev``, ``hash``);
        ``TypeError`` if a value is not JSON-serializable; ``AuditError`` if the log or its head file is not a
        regular file, if they disagree (see the module docstring) or another writer holds the log's lock for over
        ``AUDIT_LOCK_TIMEOUT_S``.
        """
        if not entries:
            return []
        bounded = []
        for kind, fields in entries:
            if reserved := _CHAIN_KEYS & set(fields):
                raise ValueError(f"audit entry {kind!r}: fields may not use the chain's keys {sorted(reserved)}")
            # The JSON round trip stores the fields as a reader parses them back, so the line written is the
            # canonical line of the entry read (a dict with int keys would otherwise sort differently once read).
            bounded.append((kind, json.loads(json.dumps(_capped(fields)))))
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with _exclusive(self.path):
                return self._append_locked(bounded)
        except LockError as exc:
            raise AuditError(str(exc)) from exc
        except OSError as exc:  # the folder cannot be created, or the lock file opened
            raise AuditError(f"{self.path}: cannot append to the audit log ({exc.strerror or exc})") from exc

    def _append_locked(self, entries: Sequence[tuple[str, Mapping[str, Any]]]) -> list[dict[str, Any]]:
        """``append_many`` for a caller that holds the log's exclusive lock."""
        seq, prev = self._tail()
        now = dt.datetime.now(dt.timezone.utc).isoformat()
        written = []
        for kind, fields in entries:
            entry = {"seq": seq, "time": now, "kind": kind, **fields, "prev": prev}
            entry["hash"] = _digest(entry)
            written.append(entry)
            seq, prev = seq + 1, entry["hash"]
        data = b"".join(entry_line(entry) for entry in written)
        try:
            fd = _open_regular(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        except OSError as exc:
            raise AuditError(f"{self.path}: cannot open the audit log for writing ({exc.strerror or exc})") from exc
        try:
            start = os.fstat(fd).st_size
            try:
                # Unbuffered writes: after a failure no buffered remainder can be flushed past the truncation.
                _write_all(fd, data)
                os.fsync(fd)
                _write_head(self.path, written[-1]["seq"], written[-1]["hash"])
            except OSError as exc:
                state = ("the log is left as it was" if _truncate(fd, start) else
                         f"part of the entries may remain: `optin audit repair {self.path}` recovers it")
                what = f"a {written[0]['kind']!r} entry" if len(written) == 1 else f"{len(written)} entries"
                raise AuditError(f"{self.path}: could not append {what} ({exc.strerror or exc}); {state}") from exc
        finally:
            os.close(fd)
        return written

    def _tail(self) -> tuple[int, str]:
        """The next entry's ``seq`` and ``prev``, once the last entry is sound and agrees with the head file."""
        seq, prev = self._last_entry()
        head = _read_head(self.path)
        repair_hint = f"check it with `optin audit verify {self.path}`"
        if head is None and seq > 0:
            raise AuditError(f"{self.path}: the log holds {seq} entries but its head file {_head_path(self.path).name} "
                             f"is missing (deleted with entries cut from the end?); {repair_hint} (`optin audit "
                             "repair` recovers only a first entry whose head was never written)")
        if head is not None and head[0] > seq - 1:
            found = "is missing or empty" if seq == 0 else f"ends at entry {seq - 1}"
            raise AuditError(f"{self.path}: the head file names entry {head[0]} but the log {found} (entries "
                             f"removed?); refusing to restart or extend a chain its head contradicts; {repair_hint}")
        if head is not None and head[0] == seq - 1 and head[1] != prev:
            raise AuditError(f"{self.path}: the last entry is not the one the head file names (the log was "
                             f"replaced?); {repair_hint}")
        # A head behind the last entry is what a crash between the write and the head update leaves: this
        # append moves the head past it, as ``repair`` would.
        return seq, prev

    def _last_entry(self) -> tuple[int, str]:
        """The next entry's ``seq`` and ``prev`` by the log's last line, which must be a sound, canonical entry."""
        try:
            fd = _open_regular(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return 0, GENESIS
        except OSError as exc:
            raise AuditError(f"{self.path}: cannot read the audit log ({exc.strerror or exc})") from exc
        try:
            last, complete = _last_line(fd)
        except OSError as exc:
            raise AuditError(f"{self.path}: cannot read the audit log ({exc.strerror or exc})") from exc
        finally:
            os.close(fd)
        if last is None:
            return 0, GENESIS
        if not complete:
            raise AuditError(f"{self.path}: the last line is incomplete (torn by a crash?); check it with "
                             f"`optin audit verify {self.path}` and recover with `optin audit repair {self.path}`")
        try:
            entry, repeated = _parse_line(last)
            if _digest(entry) != entry["hash"]:
                raise ValueError("hash mismatch")
            if problem := _canonical_problem(last, entry, repeated):
                raise ValueError(problem)
            return int(entry["seq"]) + 1, str(entry["hash"])
        except (ValueError, KeyError, TypeError) as exc:
            raise AuditError(f"{self.path}: last entry is damaged ({exc}); run `optin audit verify` on it "
                             "(`optin audit repair` recovers a line torn by a crash)") from exc


def _truncate(fd: int, size: int) -> bool:
    """Cut a failed append back off (shrinking a file needs no free space); False if even that failed: the
    torn line then stays, the next append refuses it, and ``repair`` recovers it."""
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    except OSError:
        log.exception("could not cut a failed append back off the audit log")
        return False
    return True


def _last_line(fd: int, chunk: int = 8192) -> tuple[bytes | None, bool]:
    """The last line of the open file ``fd``, exactly, without its newline (None for an empty file); and whether
    the file ends with a newline (an append that did not finish leaves a line without one).

    Read backwards from the end, ``chunk`` bytes at a time, so an append costs the same whatever the
    log's length (a server's log gains several entries per node and round).
    """
    size = os.fstat(fd).st_size
    if size == 0:
        return None, True
    complete = os.pread(fd, 1, size - 1) == b"\n"
    position = size - 1 if complete else size
    blocks: list[bytes] = []
    while position > 0:
        step = min(chunk, position)
        position -= step
        block = os.pread(fd, step, position)
        start = block.rfind(b"\n")
        if start >= 0:
            blocks.append(block[start + 1:])
            break
        blocks.append(block)
    return b"".join(reversed(blocks)), complete


@dataclass
class Verification:
    """Outcome of ``verify``: ``ok`` and the problems found, each naming the line.

    ``head_behind``: the only head problem is that the head names an earlier entry of a sound chain (same
    ``seq`` and hash), the state a crash between writing entries and moving the head leaves. It is still
    listed in ``problems`` (``repair``, or the next append, moves the head forward), but nothing was removed.
    """

    entries: int = 0
    problems: list[str] = field(default_factory=list)
    head_behind: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems


def read_entries(path: Path) -> Iterator[dict[str, Any]]:
    """Every parseable entry of the log, in file order (use ``verify`` to know they are sound); ``AuditError`` if
    the log is not a regular file."""
    with os.fdopen(_open_regular(path, os.O_RDONLY), encoding="utf-8") as f:
        for line in f:
            if line.strip():
                try:
                    yield json.loads(line)
                except ValueError:
                    continue


def verify(path: Path) -> Verification:
    """Check that every line is a canonical entry (``entry_line``) with its newline, every entry's hash, the
    ``seq``/``prev`` chain, and the head file.

    The log and head are read under the log's shared lock, so an append running at the same time is seen
    either whole (entry and head) or not at all. A log or head that cannot be read, or is not a regular file
    (a FIFO, a device), is a problem named in the result, found without reading from it.
    """
    return verify_log(path).verification


@dataclass(frozen=True)
class Checkpoint:
    """A prefix of a log that ``verify_log`` found sound in this process: the file (inode), its first ``size``
    bytes and their SHA-256, and the chain up to there. A later ``verify_log`` given it re-parses only the bytes
    after ``size``, after checking that the first ``size`` bytes still hash the same (so an edit anywhere in the
    prefix is still caught; the cost saved is the per-line JSON parsing and hashing, not the read)."""

    inode: int
    size: int
    sha256: str
    lines: int
    entries: int
    hashes: bytes
    """The entries' hashes, 32 bytes each, in order (a sound chain's entry ``n`` has ``seq`` n): compact, since a
    node keeps one checkpoint per workspace it serves."""
    collected: tuple[tuple[int, dict[str, Any]], ...]
    kinds: frozenset[str]

    def hash_of(self, seq: int) -> str:
        return self.hashes[32 * seq:32 * seq + 32].hex()


@dataclass(frozen=True)
class VerifiedLog:
    """``verify_log``'s answer: the verification, the entries of the kinds asked for, and a checkpoint."""

    verification: Verification
    collected: tuple[tuple[int, dict[str, Any]], ...]
    """``(line number, entry)`` of every entry whose ``kind`` was asked for, in file order; meaningful only when
    the verification is ok."""
    checkpoint: Checkpoint | None
    """Where a later ``verify_log`` of the same file may start (None when the chain itself had a problem)."""


def verify_log(path: Path, kinds: frozenset[str] = frozenset(), since: Checkpoint | None = None) -> VerifiedLog:
    """``verify``, also collecting the entries whose ``kind`` is in ``kinds``, optionally from a checkpoint of an
    earlier call (ignored unless it is of the same file, asked for the same kinds, and its prefix is unchanged)."""
    result = Verification()
    if not path.exists():
        result.problems.append(f"{path}: no such audit log")
        return VerifiedLog(result, (), None)
    head_error = None
    try:
        with _shared(path):
            with os.fdopen(_open_regular(path, os.O_RDONLY), "rb") as f:
                inode = os.fstat(f.fileno()).st_ino
                data = f.read()
            try:
                anchor = _read_head(path)
            except AuditError as exc:
                anchor, head_error = None, str(exc)
    except AuditError as exc:
        result.problems.append(str(exc))
        return VerifiedLog(result, (), None)
    except (LockError, OSError) as exc:
        result.problems.append(f"{path}: cannot read the audit log ({exc})")
        return VerifiedLog(result, (), None)
    digest = hashlib.sha256()
    prefix: Checkpoint | None = None
    if since is not None and since.kinds == kinds and since.inode == inode and since.size <= len(data):
        digest.update(data[:since.size])
        if digest.hexdigest() == since.sha256:
            prefix = since
        else:
            digest = hashlib.sha256()
    start, first_line, collected = (prefix.size, prefix.lines + 1, list(prefix.collected)) if prefix else (0, 1, [])
    known = prefix.entries if prefix else 0
    result.entries = known
    prev, expected_seq = (prefix.hash_of(known - 1), known) if prefix and known else (GENESIS, 0)
    digest.update(data[start:])
    chain = _check_chain(path, data[start:], result, prev=prev, expected_seq=expected_seq,
                         first_line=first_line, kinds=kinds, collected=collected)
    chain_sound = not result.problems

    def hash_of(seq: int) -> str | None:
        """The hash of entry ``seq`` of a sound chain, None if there is no such entry."""
        if 0 <= seq < known and prefix is not None:
            return prefix.hash_of(seq)
        return chain[seq - known][1] if 0 <= seq - known < len(chain) else None

    checkpoint = None
    if chain_sound and (not data or data.endswith(b"\n")):
        hashes = (prefix.hashes if prefix else b"") + b"".join(bytes.fromhex(h) for _, h in chain)
        checkpoint = Checkpoint(inode, len(data), digest.hexdigest(), data.count(b"\n"), result.entries, hashes,
                                tuple(collected), kinds)
    last = chain[-1] if chain else ((known - 1, prev) if known else None)
    _check_head(path, last, hash_of if chain_sound else None, anchor, head_error, result)
    return VerifiedLog(result, tuple(collected), checkpoint)


def _check_head(path: Path, last: tuple[int, str] | None, hash_of: Callable[[int], str | None] | None,
                anchor: tuple[int, str] | None, head_error: str | None, result: Verification) -> None:
    """Add to ``result`` any disagreement between the head file and the chain's ``last`` entry; ``hash_of`` looks
    entries up in a sound chain (None when the chain is not sound)."""
    head = _head_path(path)
    if head_error is not None:
        result.problems.append(head_error)
        return
    expected_seq, prev = (last[0] + 1, last[1]) if last else (0, GENESIS)
    if anchor is not None:
        if anchor != (expected_seq - 1, prev):
            why = ("entries removed from the end?" if anchor[0] >= expected_seq - 1 else
                   "a crash between writing entries and updating the head? `optin audit repair` moves the head "
                   "forward")
            result.problems.append(f"{head}: the log should end at entry {anchor[0]} "
                                   f"but ends at {expected_seq - 1} ({why})")
            result.head_behind = (hash_of is not None and anchor[0] < expected_seq - 1
                                  and hash_of(anchor[0]) == anchor[1])
    elif result.entries:
        result.problems.append(f"{head}: missing head file")


def _check_chain(path: Path, data: bytes, result: Verification, *, prev: str = GENESIS,
                 expected_seq: int = 0, first_line: int = 1, kinds: frozenset[str] = frozenset(),
                 collected: list[tuple[int, dict[str, Any]]] | None = None) -> list[tuple[int, str]]:
    """Check the lines of ``data`` (whole lines of a log, from a line's start): each is a canonical entry ending
    in a newline, with a matching hash, and the ``seq``/``prev`` chain holds (numbering lines from ``first_line``,
    continuing a chain whose next entry is ``expected_seq`` after ``prev``). Adds every problem to ``result``
    and every parsed entry whose kind is in ``kinds`` to ``collected``; returns ``(seq, hash)`` of each entry
    in order (an unreadable line: its expected seq and "?")."""
    chain: list[tuple[int, str]] = []
    lines = data.split(b"\n")  # the final element is what follows the last newline: b"" unless a line lacks it
    for number, line in enumerate(lines, start=first_line):
        where = f"{path}:{number}"
        terminated = number - first_line < len(lines) - 1
        if not line.strip():
            if terminated:
                result.problems.append(f"{where}: a blank line (the log's writer writes none)")
            elif line:
                result.problems.append(f"{where}: whitespace after the last line")
            continue
        try:
            entry, repeated = _parse_line(line)
            seq, stored_hash, stored_prev = entry["seq"], entry["hash"], entry["prev"]
            if type(seq) is not int or not isinstance(stored_hash, str):
                raise TypeError("seq must be an integer and hash a string")
        except (ValueError, KeyError, TypeError):
            result.problems.append(f"{where}: not a valid audit entry")
            prev, expected_seq = "?", expected_seq + 1
            chain.append((expected_seq - 1, "?"))
            continue
        result.entries += 1
        if _digest(entry) != stored_hash:
            result.problems.append(f"{where}: entry {seq} was edited (hash mismatch)")
        if problem := _canonical_problem(line, entry, repeated):
            result.problems.append(f"{where}: entry {seq} is {problem}")
        if not terminated:
            result.problems.append(f"{where}: entry {seq} has no newline at its end (an append cut short by a "
                                   "crash? `optin audit repair` moves it aside)")
        if seq != expected_seq:
            result.problems.append(f"{where}: expected entry {expected_seq}, found {seq} "
                                   "(an entry was deleted, inserted or reordered)")
        if stored_prev != prev:
            result.problems.append(f"{where}: entry {seq} does not follow the entry before it")
        if collected is not None and entry.get("kind") in kinds:
            collected.append((number, entry))
        prev, expected_seq = stored_hash, seq + 1
        chain.append((seq, stored_hash))
    return chain


def _read_head(path: Path) -> tuple[int, str] | None:
    """``(seq, hash)`` the head file names, or None when there is no head file; ``AuditError`` if it is unreadable,
    not a regular file, or over ``HEAD_MAX_BYTES``."""
    head = _head_path(path)
    try:
        # A regular file of at most HEAD_MAX_BYTES, checked before any byte is read: a FIFO cannot hang the reader.
        data = read_bytes(head, HEAD_MAX_BYTES, error=AuditError)
    except FileNotFoundError:
        return None
    try:
        anchor = json.loads(data)
        return int(anchor["seq"]), str(anchor["hash"])
    except (ValueError, KeyError, TypeError) as exc:
        raise AuditError(f"{head}: unreadable head file ({exc})") from exc


def head_exists(path: Path) -> bool:
    """Whether the log's head file exists (it outlives a deleted log: ``append`` then refuses)."""
    return _head_path(path).exists()


@dataclass(frozen=True)
class Repair:
    """What ``repair`` did: the torn bytes it moved aside (none: ``torn_file`` is None), whether the head had
    to be moved forward to the last complete entry, and the ``repair`` entry it appended (None: nothing
    needed repairing and nothing was changed)."""

    torn_bytes: int
    torn_sha256: str | None
    torn_file: Path | None
    head_fixed: bool
    entry: dict[str, Any] | None


def repair(path: Path) -> Repair:
    """Recover an audit log from a crash mid-append, or raise ``AuditError`` and change nothing.

    Recovered states, the only ones an interrupted ``AuditLog.append`` can leave:

    - a torn last line: the final line has no newline, or does not parse as a JSON object (its
      newline was written but not all the bytes before it). Its bytes are moved, never deleted,
      to the sibling file ``<log>.torn-<UTC time>``, and the log is cut back to the line before it;
    - a head file behind the log: it names an earlier entry of the log (same ``seq`` and hash), because
      the crash came after the last entries were written but before the head was moved to them (or,
      for a log of one entry, before the head was first created). The head is moved forward. A head
      behind says nothing about tampering: whoever can append forged entries can move the head too.

    Then a ``repair`` entry is appended recording ``torn_bytes``, ``torn_sha256`` and ``torn_file``
    (the sibling's name; None when nothing was torn) and ``head_fixed``.

    Refused (``AuditError`` naming what is wrong, the log untouched): any problem before the final
    line (an edited, inserted, deleted or reordered entry, a garbled line in the middle), a final
    line that parses but does not verify, a head file that is unreadable, missing while more than
    one entry exists, or naming an entry the log does not hold (entries removed from the end, or
    the torn line itself: the head moves only after its line is synced). Tampering is never
    repaired. A log that already verifies is left as it is (``entry`` is None).

    It holds the log's exclusive lock throughout, so appends wait for it; still, stop the node first, so that
    what it would log meanwhile is not refused.
    """
    if not path.exists():
        raise AuditError(f"{path}: no such audit log")
    try:
        with _exclusive(path):
            try:
                fd = _open_regular(path, os.O_RDWR)
            except OSError as exc:
                raise AuditError(f"{path}: cannot open the audit log ({exc.strerror or exc})") from exc
            try:
                return _repair_locked(path, fd)
            finally:
                os.close(fd)
    except LockError as exc:
        raise AuditError(str(exc)) from exc


def _repair_locked(path: Path, fd: int) -> Repair:
    """``repair`` for a caller that holds the log's exclusive lock and has it open (read and write) as ``fd``."""
    with open(fd, "rb", closefd=False) as f:  # the caller closes fd, which is used again to truncate
        data = f.read()
    lines = data.split(b"\n")  # the final element is what follows the last newline: b"" when none is torn
    keep = len(data) - len(lines[-1])
    if not lines[-1]:
        # No partial line: the last non-blank complete line is torn only if it does not parse at all.
        complete = [i for i, line in enumerate(lines[:-1]) if line.strip()]
        if complete and not _parses(lines[complete[-1]]):
            keep = sum(len(line) + 1 for line in lines[:complete[-1]])
    torn = data[keep:]
    result = Verification()
    chain = _check_chain(path, data[:keep], result)
    if result.problems:
        raise AuditError(f"{path}: not repaired: entries before the last line do not verify (tampering is "
                         f"never repaired): {'; '.join(result.problems)}")
    anchor = _read_head(path)
    last = chain[-1] if chain else None
    # A verified chain numbers its entries 0, 1, 2 ..., so the entry with seq n is chain[n].
    if anchor is None:
        in_log = len(chain) <= 1
    else:
        in_log = 0 <= anchor[0] < len(chain) and chain[anchor[0]] == anchor
    if not in_log:
        named = "no head file" if anchor is None else f"the head file names entry {anchor[0]}"
        ends = f"entry {last[0]}" if last else "no entry"
        raise AuditError(f"{path}: not repaired: {named} but the last complete entry is {ends}; a crash leaves "
                         "the head at an entry of the log, so entries were removed (tampering is never repaired)")
    head_fixed = anchor != last
    if not torn and not head_fixed:
        return Repair(0, None, None, False, None)
    torn_file, torn_sha256 = None, None
    try:
        if torn:
            torn_sha256 = hashlib.sha256(torn).hexdigest()
            torn_file = _set_aside(path, torn)
            os.ftruncate(fd, keep)
            os.fsync(fd)
        if last is not None:
            _write_head(path, *last)
    except OSError as exc:
        # Each step leaves a state this function accepts again (the torn bytes are already durable aside).
        raise AuditError(f"{path}: repair stopped ({exc.strerror or exc}); fix the cause and run it again") from exc
    (entry,) = AuditLog(path)._append_locked([("repair", {
        "torn_bytes": len(torn), "torn_sha256": torn_sha256,
        "torn_file": None if torn_file is None else torn_file.name, "head_fixed": head_fixed})])
    log.warning("%s: repaired (%d torn bytes moved to %s, head fixed: %s)", path, len(torn), torn_file, head_fixed)
    return Repair(len(torn), torn_sha256, torn_file, head_fixed, entry)


def _parses(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def _set_aside(path: Path, torn: bytes) -> Path:
    """Write ``torn`` to a new sibling ``<log>.torn-<UTC time>`` (never overwriting one) and sync it and its
    folder, so the bytes are durable before the log is cut."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    target = path.with_name(f"{path.name}.torn-{stamp}")
    with target.open("xb") as f:
        f.write(torn)
        f.flush()
        os.fsync(f.fileno())
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
    return target


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
