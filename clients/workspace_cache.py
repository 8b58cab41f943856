"""A per-process cache of parsed, scrubbed and split workspaces: data is read again only when it changed.

A node answers three messages per round for its workspace (query, train, evaluate), and the
in-process grid or a Flower simulation actor serves many workspaces from one process; without this,
each message parses, scrubs and splits the whole data folder again. ``load_split`` keeps the split
per (data folder, workspace name, node secret, held-out fraction) together with a *signature* of the
files it came from, and reuses it only while the signature is unchanged. The key holds a keyed digest
of the secret, not the secret, so the process's memory holds one copy of it less.

Guarantee: ``load_split`` returns what ``split_messages(load_workspace(data, name=name).messages,
held_out_fraction, secret)`` returns for the files as they are when it is called, never an earlier state
of them, as fresh lists of immutable ``ChatMessage``s that the caller may change freely.

The signature covers every file and folder under ``data`` (symbolic links that stay inside ``data``
followed, as the loaders follow them; a link that leads out of it is signed as the link itself and not
followed, since the loaders refuse it) and, for an IRC manifest, the log files it names outside ``data``.
It holds each one's path, inode, size, modification time and status-change time (``ctime``: the kernel sets it to the
current time on every write, rename, truncation or ``utime`` call, and no unprivileged process can
set it back), so any write, replacement, addition or removal changes it. What that rests on:
timestamps have the file system's granularity (a clock tick on Linux' native file systems, up to
2 s on some others), so a second write in the same tick as a first one could leave them unchanged.
Hence a file whose ``ctime`` was less than ``settle_seconds`` old when its workspace was cached is
also signed by a hash of its content, at every look-up for as long as that entry lives. The
assumption is that the file system stamps ``ctime`` with a granularity, and a clock offset from this
process's clock (network file systems), of less than ``settle_seconds``.

Memory is bounded whatever the number of workspaces: at most ``max_workspaces`` splits and
``max_messages`` messages (about 400 bytes each, plus the text: at most ``MESSAGE_MAX_CHARS``
characters) are kept, the least recently used evicted first; a workspace larger than ``max_messages``
is loaded on every call and not kept. The default ``max_messages`` is the node's limit per workspace
(``WORKSPACE_MAX_MESSAGES``), so every workspace the loader accepts can be kept. The bound counts
messages rather than workspaces because the server queries every node every round, in order: a
process serving more workspaces than a per-workspace bound would evict each one just before it is
asked again, while many small workspaces fit in the same memory as a few large ones.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG

from federated.data import ChatMessage, load_workspace, split_messages
from federated.data.files import DataFolder
from federated.data.manifest import MANIFEST_FILE, read_manifest
from federated.errors import DataError
from federated.limits import WORKSPACE_MAX_MESSAGES

Split = tuple[list[ChatMessage], list[ChatMessage]]
_Key = tuple[str, str, bytes, float]


@dataclass(frozen=True)
class _Entry:
    signature: bytes
    content_after_ns: int  # files whose ctime is later than this are signed by content too
    train: tuple[ChatMessage, ...]
    held_out: tuple[ChatMessage, ...]

    @property
    def messages(self) -> int:
        return len(self.train) + len(self.held_out)


class WorkspaceCache:
    """A bounded, least-recently-used cache of workspace splits; see the module docstring for the guarantee."""

    def __init__(self, max_workspaces: int = 4096, max_messages: int = WORKSPACE_MAX_MESSAGES,
                 settle_seconds: float = 2.0) -> None:
        if max_workspaces < 0 or max_messages < 0 or settle_seconds < 0:
            raise ValueError("max_workspaces, max_messages and settle_seconds must be >= 0")
        self.max_workspaces = max_workspaces
        self.max_messages = max_messages
        self.settle_ns = int(settle_seconds * 1e9)
        self._entries: OrderedDict[_Key, _Entry] = OrderedDict()
        self._messages = 0
        self._lock = threading.Lock()  # process-wide: ClientApp calls may come from several threads

    def __len__(self) -> int:
        """Workspaces kept."""
        return len(self._entries)

    @property
    def messages(self) -> int:
        """Messages kept, over all workspaces."""
        return self._messages

    def load_split(self, data: Path, name: str, secret: bytes, held_out_fraction: float) -> Split:
        """(train, held-out) of the workspace in the data folder ``data``, as ``split_messages`` splits it.

        Raises what ``load_workspace`` raises (``DataError`` naming the file) when the data cannot be read.
        """
        key = (os.path.abspath(data), name, _secret_key(secret), held_out_fraction)
        with self._lock:
            entry = self._entries.get(key)
        try:
            # Signed as the entry was, so files that were fresh then are compared by content now as well.
            if entry is not None and data_signature(Path(data), entry.content_after_ns) == entry.signature:
                with self._lock:
                    if key in self._entries:
                        self._entries.move_to_end(key)
                return list(entry.train), list(entry.held_out)
            content_after_ns = time.time_ns() - self.settle_ns
            signature = data_signature(Path(data), content_after_ns)
        except (OSError, DataError):
            # A missing folder, an unreadable file or a bad manifest: the loader reports it properly.
            return _load(data, name, secret, held_out_fraction)
        train, held_out = _load(data, name, secret, held_out_fraction)
        self._store(key, _Entry(signature, content_after_ns, tuple(train), tuple(held_out)))
        return train, held_out

    def _store(self, key: _Key, entry: _Entry) -> None:
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._messages -= old.messages
            if entry.messages > self.max_messages:
                return
            self._entries[key] = entry
            self._messages += entry.messages
            while len(self._entries) > self.max_workspaces or self._messages > self.max_messages:
                _, evicted = self._entries.popitem(last=False)
                self._messages -= evicted.messages


def data_signature(data: Path, content_after_ns: int) -> bytes:
    """A digest of the state of every file the loader reads for ``data`` (see the module docstring): path,
    inode, size, mtime and ctime of each, and the content of each file whose ctime is after ``content_after_ns``.

    Raises ``OSError`` if a file cannot be listed, stat-ed or read, ``DataError`` for a bad IRC manifest.
    """
    parts: list[tuple[str, str]] = []
    for path, stat in _tree(data) + _manifest_files(data):
        state = f"{stat.st_ino}:{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ctime_ns}"
        if stat.st_ctime_ns > content_after_ns and S_ISREG(stat.st_mode):
            state += ":" + _content_digest(path)
        parts.append((path, state))
    return hashlib.blake2b(repr(sorted(parts)).encode(), digest_size=16).digest()


def _tree(folder: Path) -> list[tuple[str, os.stat_result]]:
    """(path, stat) of ``folder`` and of every file and folder under it, following symbolic links that stay
    inside ``folder`` once; a link that leads out of it is stat-ed itself, not followed."""
    found = [(str(folder), os.stat(folder))]
    seen = {(found[0][1].st_dev, found[0][1].st_ino)}
    pending = [str(folder)]
    base = os.path.realpath(folder)
    while pending:
        with os.scandir(pending.pop()) as listing:
            for entry in listing:
                if entry.is_symlink() and os.path.commonpath([base, os.path.realpath(entry.path)]) != base:
                    found.append((entry.path, entry.stat(follow_symlinks=False)))
                    continue
                stat = entry.stat()
                found.append((entry.path, stat))
                if entry.is_dir() and (stat.st_dev, stat.st_ino) not in seen:
                    seen.add((stat.st_dev, stat.st_ino))
                    pending.append(entry.path)
    return found


def _manifest_files(data: Path) -> list[tuple[str, os.stat_result]]:
    """The log files an IRC manifest in ``data`` names outside it (those inside are in ``_tree``), or none."""
    manifest = data / MANIFEST_FILE
    if not manifest.is_file():
        return []
    folder = DataFolder(data)
    files = {str(piece.file) for piece in read_manifest(manifest).slices if not folder.contains(piece.file)}
    return [(file, os.stat(file)) for file in sorted(files)]


def _content_digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "blake2b").hexdigest()


def _load(data: Path, name: str, secret: bytes, held_out_fraction: float) -> Split:
    return split_messages(list(load_workspace(data, name=name).messages), held_out_fraction, secret)


def _secret_key(secret: bytes) -> bytes:
    """A digest that tells secrets apart in cache keys without being the secret (or usable as its HMAC key)."""
    return hashlib.blake2b(secret, digest_size=16, person=b"optin-cache-key").digest()


_process_cache = WorkspaceCache()


def load_split(data: Path, name: str, secret: bytes, held_out_fraction: float) -> Split:
    """``WorkspaceCache.load_split`` on this process's cache (one per process, shared by every node it serves)."""
    return _process_cache.load_split(data, name, secret, held_out_fraction)
