"""The roster: the people of a workspace, given independently of which messages exist, for scrubbing names.

A Slack export's roster is its ``users.json``. IRC and JSONL workspaces may have ``data/roster.txt``: one
name per line (a nick, handle, real or display name), UTF-8; blank lines and lines starting with ``#`` are
ignored. Without it they have no roster, and names are not scrubbed (mentions of Slack-style member ids
and the other per-message rules still are).

Why not the authors of the messages: a name list built from the messages depends on which messages exist.
Removing a member's only message would drop their name from the list and un-scrub that name in *other*
members' messages, so one message would change many training records and break the neighbouring relation
DP-SGD protects (docs/privacy.md). The roster is side information the operator fixes; every scrubbing rule
is then a function of one message and the roster alone.
"""

from __future__ import annotations

from pathlib import Path

from federated.data.files import DataFolder
from federated.errors import DataError

ROSTER_FILE = "roster.txt"


def read_roster(folder: DataFolder) -> frozenset[str]:
    """The names in ``roster.txt`` of the data folder ``folder``, or none if the file does not exist.

    Raises ``DataError`` naming the file if it exists but is not a regular UTF-8 text file inside the folder
    within the node's size limit (``federated.data.files``).
    """
    try:
        text = folder.index_text(folder.path / ROSTER_FILE)
    except FileNotFoundError:
        return frozenset()
    names = (line.strip() for line in text.splitlines())
    return frozenset(name for name in names if name and not name.startswith("#"))


def write_roster(folder: Path, names: set[str], comment: str) -> Path:
    """Write ``folder/roster.txt``: ``comment`` as a ``#`` line, then the names sorted, one per line.

    Raises ``DataError`` for a name with a line break or a leading ``#`` (it would not read back).
    """
    bad = sorted(n for n in names if not n.strip() or "\n" in n or "\r" in n or n.strip().startswith("#"))
    if bad:
        raise DataError(f"{Path(folder) / ROSTER_FILE}: names {bad[:3]!r} cannot be written one per line")
    path = Path(folder) / ROSTER_FILE
    path.write_text("".join([f"# {comment}\n", *(f"{n.strip()}\n" for n in sorted(names))]), encoding="utf-8")
    return path
