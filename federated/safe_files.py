"""Reading the files a node is given without trusting them: regular files only, size-capped, inside their folder.

A workspace folder is written by people and tools the node does not control (an export, a careless copy, a
hostile co-tenant). ``read_bytes`` and ``read_text`` are the only way node code reads such a file:

- only a **regular file** is read (after following symbolic links). A FIFO, socket or device (``/dev/zero``,
  a FIFO with no writer) is refused at once: the file is opened non-blocking and checked with ``fstat``
  before any byte is read, so nothing can make the node wait or read without end;
- at most ``limit`` bytes are read; a bigger file is refused, naming its size and the limit;
- with ``root``, the file's real path (every symbolic link resolved) must lie inside ``root``'s real path,
  so a link cannot make the node read another workspace's data or any file outside the folder;
- text must be UTF-8 without a byte-order mark; a BOM or a bad byte is named with its offset.

Every refusal is the caller's ``OptinError`` subclass (``DataError`` by default) naming the file and what
was expected. ``FileNotFoundError`` is raised as is, so callers can tell "absent" from "unreadable".
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from federated.errors import DataError, OptinError

_BOM = b"\xef\xbb\xbf"
_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device", stat.S_IFDIR: "a folder"}


def human_bytes(size: int) -> str:
    """``size`` in B, KiB, MiB or GiB, as written in the docs' limit tables."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:g} {unit}"
    return f"{size} B"


def check_inside(path: Path, root: Path, error: type[OptinError] = DataError) -> None:
    """Refuse ``path`` unless its real path (symbolic links resolved) is ``root``'s real path or lies under it."""
    real, base = Path(os.path.realpath(path)), Path(os.path.realpath(root))
    if real != base and base not in real.parents:
        raise error(f"{path}: a symbolic link that leaves the workspace folder {root} (it points to {real}); "
                    "a node reads only files inside its own workspace folder")


def open_regular(path: Path, flags: int = os.O_RDONLY, *, error: type[OptinError] = DataError) -> int:
    """A descriptor of ``path`` opened with ``flags``, once ``fstat`` shows a regular file; ``error`` naming what it
    is otherwise. The open does not block (``O_NONBLOCK``) and nothing is read before the check, so a FIFO or a
    device is refused at once. ``FileNotFoundError`` is raised as is; another failed open is an ``error``."""
    try:
        fd = os.open(path, flags | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC, 0o644)
    except FileNotFoundError:
        raise  # absent is the caller's case to name (e.g. "policy-missing"), not an unreadable file
    except OSError as exc:
        raise error(f"{path}: cannot be opened ({exc.strerror or exc})") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise error(f"{path}: is {_KINDS.get(stat.S_IFMT(mode), 'not a regular file')}; expected a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_bytes(path: Path, limit: int, *, root: Path | None = None, error: type[OptinError] = DataError) -> bytes:
    """The content of the regular file ``path``, at most ``limit`` bytes (see the module docstring)."""
    if root is not None:
        check_inside(path, root, error)
    fd = open_regular(path, error=error)
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            raise error(f"{path}: is {human_bytes(size)}, over the node's limit of {human_bytes(limit)} "
                        "for this file")
        chunks, total = [], 0
        while total <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as exc:
        raise error(f"{path}: cannot be read ({exc.strerror or exc})") from None
    finally:
        os.close(fd)
    if total > limit:  # the file grew while it was read
        raise error(f"{path}: is over the node's limit of {human_bytes(limit)} for this file")
    return b"".join(chunks)


def read_text(path: Path, limit: int, *, root: Path | None = None, error: type[OptinError] = DataError) -> str:
    """``read_bytes`` decoded as UTF-8; a byte-order mark or an invalid byte is an ``error`` naming it."""
    return decode_utf8(read_bytes(path, limit, root=root, error=error), path, error=error)


def decode_utf8(data: bytes, path: Path, offset: int = 0, *, error: type[OptinError] = DataError) -> str:
    """``data``, read from ``path`` at byte ``offset``, as UTF-8 text; a byte-order mark at the start of the file or
    an invalid byte is an ``error`` naming the file and the byte."""
    if offset == 0 and data.startswith(_BOM):
        raise error(f"{path}: starts with a UTF-8 byte-order mark (BOM); expected UTF-8 text without one "
                    "(save the file as plain UTF-8)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not valid UTF-8 ({exc.reason} at byte {offset + exc.start})") from None
