"""Reading one workspace's data folder within the node's limits (``federated.limits``).

A data folder is written by people and tools the node does not control, so every file a reader opens goes
through a ``DataFolder``:

- only a **regular file** is read: a FIFO, socket or device is refused before a byte is read (it is opened
  non-blocking and checked with ``fstat``), so no file can make the node wait or read without end;
- index files (``users.json``, ``channels.json`` and the other conversation indexes, ``roster.txt``,
  ``source.toml``) are read whole, at most ``INDEX_FILE_MAX_BYTES`` each (``federated.safe_files``);
  message files (Slack day files, JSONL files, IRC logs) at most ``DATA_FILE_MAX_BYTES`` each and
  ``WORKSPACE_MAX_BYTES`` together, checked from a file's size before it is read; a JSONL file is read one
  line (at most ``JSONL_LINE_MAX_BYTES``) at a time, and a file is read as long as it was when opened;
- a file's or folder's **real path must lie inside the data folder**: a symbolic link that leads out of it
  (into another workspace, to ``/dev/zero``) is refused, naming where it points; links that stay inside
  work. The one exception: the log files an IRC manifest names outside the folder (a public corpus), read
  where they are;
- at most ``WORKSPACE_MAX_MESSAGES`` messages are kept; readers check the count as they keep messages.

A refusal is a ``DataError`` naming the file and what was expected. Going over a limit of the whole
workspace (bytes or messages) is a ``WorkspaceLimitError`` naming the folder, the amount and the limit: the
workspace is refused whole, never loaded in part, even when a reader skips bad files.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from federated.errors import DataError
from federated.limits import (
    DATA_FILE_MAX_BYTES,
    INDEX_FILE_MAX_BYTES,
    JSONL_LINE_MAX_BYTES,
    WORKSPACE_MAX_BYTES,
    WORKSPACE_MAX_MESSAGES,
)
from federated.safe_files import check_inside, decode_utf8, human_bytes, open_regular, read_text


class WorkspaceLimitError(DataError):
    """A workspace over a node limit for the whole workspace: refused whole, never skipped as one bad file."""


class DataFolder:
    """One workspace's data folder while a reader reads it: what may be read, and what has been read so far."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.bytes_read = 0

    def contains(self, path: Path) -> bool:
        """Whether ``path`` is written as a path under the data folder (symbolic links not resolved)."""
        return Path(os.path.abspath(self.path)) in Path(os.path.abspath(path)).parents

    def check_inside(self, path: Path) -> None:
        """Refuse ``path`` (a ``DataError`` saying where it points) if its real path leaves the data folder."""
        check_inside(path, self.path)

    def index_text(self, file: Path) -> str:
        """The text of an index file inside the data folder; ``FileNotFoundError`` if it does not exist."""
        return read_text(file, INDEX_FILE_MAX_BYTES, root=self.path)

    def message_text(self, file: Path) -> str:
        """The whole text of a message file (a Slack day file, an IRC log); it counts to the workspace's bytes.

        A file under the data folder must stay inside it; a file outside it (an IRC manifest's corpus) is
        read where it is.
        """
        with self._open(file) as (stream, size):
            return decode_utf8(stream.read(size), file)

    def message_lines(self, file: Path) -> Iterator[str]:
        """The lines of a message file (a JSONL file), without terminators, read one at a time.

        Lines end at ``"\\n"`` (a ``"\\r"`` before it is dropped). A line longer than
        ``JSONL_LINE_MAX_BYTES`` is a ``DataError`` naming the file and line.
        """
        with self._open(file) as (stream, size):
            offset, number = 0, 0
            while offset < size:
                raw = stream.readline(min(JSONL_LINE_MAX_BYTES + 1, size - offset))
                if not raw:  # the file shrank while it was read
                    return
                number += 1
                if len(raw) > JSONL_LINE_MAX_BYTES and not raw.endswith(b"\n"):
                    raise DataError(f"{file}: line {number} is longer than the node's limit of "
                                    f"{human_bytes(JSONL_LINE_MAX_BYTES)} per line")
                yield decode_utf8(raw, file, offset).rstrip("\n").rstrip("\r")
                offset += len(raw)

    def check_messages(self, count: int, file: Path) -> None:
        """Refuse the workspace once ``count`` (messages kept so far, reading ``file``) passes the limit."""
        if count > WORKSPACE_MAX_MESSAGES:
            raise WorkspaceLimitError(
                f"{self.path}: holds more than {WORKSPACE_MAX_MESSAGES:,} messages, the node's limit for one "
                f"workspace (reading stopped at {file}); split the data or keep fewer messages")

    @contextmanager
    def _open(self, file: Path) -> Iterator[tuple[BinaryIO, int]]:
        """``file`` open for reading and its size, once it passed every check of the module docstring."""
        if self.contains(file):
            self.check_inside(file)
        try:
            fd = open_regular(file)
        except FileNotFoundError:
            raise DataError(f"{file}: not found") from None
        try:
            size = self._charge(file, os.fstat(fd))
        except BaseException:
            os.close(fd)
            raise
        with os.fdopen(fd, "rb") as stream:
            try:
                yield stream, size
            except OSError as exc:
                raise DataError(f"{file}: cannot be read ({exc.strerror or exc})") from None

    def _charge(self, file: Path, info: os.stat_result) -> int:
        """The size of the regular file ``file`` (``info``), counted to the workspace's bytes, within the limits."""
        if info.st_size > DATA_FILE_MAX_BYTES:
            raise DataError(f"{file}: is {human_bytes(info.st_size)}, over the node's limit of "
                            f"{human_bytes(DATA_FILE_MAX_BYTES)} for one message file")
        self.bytes_read += info.st_size
        if self.bytes_read > WORKSPACE_MAX_BYTES:
            raise WorkspaceLimitError(
                f"{self.path}: its message files hold more than {human_bytes(WORKSPACE_MAX_BYTES)}, the node's "
                f"limit for one workspace ({human_bytes(self.bytes_read)} up to and including {file})")
        return info.st_size


def require_folder(path: Path) -> None:
    """Refuse ``path`` unless it is a folder: ``DataError`` saying it is not found, or that it is something else."""
    if not path.exists():
        raise DataError(f"workspace data folder not found: {path}")
    if not path.is_dir():
        raise DataError(f"{path}: is not a folder; expected a workspace data folder")

