"""The node secret: 32 random bytes of one workspace that key its preprocessing (held-out split, member groups).

Guarantee: ``node_secret(folder)`` returns the same 32 bytes for a workspace folder every time, from
``<folder>/node.secret``; the first call creates them with ``secrets.token_bytes`` (the OS's CSPRNG).
The file appears whole or not at all: it is written to a private temporary file (``O_EXCL``, mode 0600),
flushed to disk, then published with ``os.link``, which fails rather than replace a secret another
process published first (the loser reads the winner's). The secret is never logged, never sent and
never derived from a run's config, so neither the server nor another workspace chooses or learns the
split. Assumption: the workspace folder is on a local POSIX file system (hard links, ``fsync``) and
only the node's operator can read it.

Losing or replacing the file re-draws the split (held-out messages may become training messages):
back it up with the workspace folder; the ledger's ε still covers everything trained on.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

from federated.errors import DataError

SECRET_FILE = "node.secret"
SECRET_BYTES = 32
_HEX = re.compile(rf"[0-9a-f]{{{2 * SECRET_BYTES}}}\n?")


def node_secret(folder: Path) -> bytes:
    """The workspace's secret, read from ``folder/node.secret``, created there first if absent.

    Raises ``DataError`` naming the file if it exists but is not 64 lower-case hex digits (and an optional
    newline), or cannot be read or written; it is never silently replaced, since a new secret re-draws the
    held-out split.
    """
    path = Path(folder) / SECRET_FILE
    if not path.exists():
        _create(path)
    return _read(path)


def _read(path: Path) -> bytes:
    try:
        text = path.read_bytes().decode("ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: node secret cannot be read ({type(exc).__name__})") from None
    if not _HEX.fullmatch(text):
        # The content is not echoed: a damaged secret may still be mostly secret.
        raise DataError(f"{path}: malformed node secret; expected {2 * SECRET_BYTES} lower-case hex digits. "
                        "Restore it from a backup; deleting it makes a new one, which re-draws the held-out split")
    return bytes.fromhex(text.strip())


def _create(path: Path) -> None:
    """Publish a fresh secret at ``path`` unless one already exists there; never half a file."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, (secrets.token_bytes(SECRET_BYTES).hex() + "\n").encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return  # another process published first; both use its secret
        _fsync_folder(path.parent)
    except OSError as exc:
        raise DataError(f"{path}: node secret cannot be created ({exc.strerror or type(exc).__name__})") from None
    finally:
        tmp.unlink(missing_ok=True)


def _fsync_folder(folder: Path) -> None:
    """Make the new directory entry durable, so a crash cannot lose a secret that was already used."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
