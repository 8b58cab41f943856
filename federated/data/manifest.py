"""A workspace whose messages live in IRC log files elsewhere, described by ``data/source.toml``.

The manifest points to the source files and the slice of each; it holds no
message text, so a workspace built from a public corpus copies nothing::

    format = "irc"
    description = "IRC Disentanglement corpus, #ubuntu 2006 (CC-BY-4.0)"   # optional, free text
    root = "/data/irc-disentanglement/data"   # absolute, or relative to the folder holding source.toml
    channel = "ubuntu"                        # channel of lines that do not name one

    [[files]]
    path = "train/2006-01-05.train-c.raw.txt"  # relative to root, inside it
    date = 2006-01-05                           # optional: the day a classic log starts
    start = 0                                   # optional: first line (0-based), default 0
    stop = 1200                                 # optional: end line (exclusive), default: end of file

Unknown keys, missing keys and wrong types are ``DataError``s naming the file
and the key. ``source.toml`` itself is read as an index file of the data folder
(``federated.data.files``: a regular file inside the folder). The log files it
names outside the data folder are read where they are (a public corpus, on
purpose); a log file under the data folder must stay inside it, like any file there.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from federated.data.files import DataFolder
from federated.data.irc import LogSlice, parse_log
from federated.data.records import ChatMessage
from federated.data.roster import read_roster
from federated.data.source import SourceData, Tally, assemble
from federated.errors import DataError

log = logging.getLogger("optin.data.manifest")

MANIFEST_FILE = "source.toml"
_TOP_KEYS = {"format": str, "description": str, "root": str, "channel": str, "files": list}
_REQUIRED_TOP = ("format", "root", "channel", "files")
_FILE_KEYS = {"path": str, "date": dt.date, "start": int, "stop": int}


@dataclass(frozen=True)
class IrcManifest:
    """A parsed ``source.toml``: where the corpus is and which slices of which files make the workspace."""

    root: Path
    channel: str
    slices: tuple[LogSlice, ...]
    description: str = ""


def read_manifest(file: Path) -> IrcManifest:
    """Parse and validate a manifest; relative ``root`` is resolved against the manifest's folder.

    The manifest is read as an index file of its folder (a regular file inside it); ``DataError`` naming
    the file if it is absent, unreadable or malformed.
    """
    file = Path(file)
    try:
        data = tomllib.loads(DataFolder(file.parent).index_text(file))
    except tomllib.TOMLDecodeError as exc:
        raise DataError(f"{file}: malformed TOML: {exc}") from None
    except FileNotFoundError:
        raise DataError(f"{file}: not found") from None
    _check_keys(data, _TOP_KEYS, _REQUIRED_TOP, file, "")
    if data["format"] != "irc":
        raise DataError(f"{file}: key 'format' expected \"irc\", got {data['format']!r}")
    root = Path(data["root"])
    root = root if root.is_absolute() else file.parent / root
    if not data["files"]:
        raise DataError(f"{file}: key 'files' expected at least one [[files]] entry, got none")
    slices = tuple(_slice(entry, i, root, data["channel"], file) for i, entry in enumerate(data["files"]))
    return IrcManifest(root, data["channel"], slices, data.get("description", ""))


def write_manifest(folder: Path, manifest: IrcManifest) -> Path:
    """Write ``manifest`` as ``folder/source.toml`` (slices' files must lie under its root); return the path."""
    lines = ['format = "irc"']
    if manifest.description:
        lines.append(f"description = {_quote(manifest.description)}")
    lines += [f"root = {_quote(str(manifest.root))}", f"channel = {_quote(manifest.channel)}"]
    for piece in manifest.slices:
        lines += ["", "[[files]]", f"path = {_quote(piece.file.relative_to(manifest.root).as_posix())}"]
        if piece.date is not None:
            lines.append(f"date = {piece.date.isoformat()}")
        lines.append(f"start = {piece.start}")
        if piece.stop is not None:
            lines.append(f"stop = {piece.stop}")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / MANIFEST_FILE
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read_irc_workspace(path: Path, *, name: str | None = None, skip_bad_files: bool = False) -> SourceData:
    """Load the workspace described by ``path/source.toml``: its messages and the names in ``path/roster.txt``.

    Messages are ordered by (channel, ts); ``members`` are the authors' nicks in
    order of first message, ``channels`` the channels in order of first
    message. The names to scrub come from the roster only, never from the
    nicks in the logs (``federated.data.roster`` says why). A missing or
    malformed log file is a ``DataError`` (file and line); with
    ``skip_bad_files`` it is skipped and listed in the report.
    """
    path = Path(path)
    folder = DataFolder(path)
    manifest = read_manifest(path / MANIFEST_FILE)
    tally = Tally("irc")
    messages: list[ChatMessage] = []
    for piece in manifest.slices:
        try:
            parsed = parse_log(piece, folder, len(messages))
        except DataError as exc:
            tally.bad_file(piece.file, exc, skip_bad_files)
            continue
        for reason, count in parsed.skipped.items():
            tally.skip(reason, count)
        messages.extend(parsed.messages)
    return assemble(messages, name if name is not None else path.name, read_roster(folder), tally)


def _slice(entry: Any, index: int, root: Path, channel: str, file: Path) -> LogSlice:
    where = f"files[{index}]."
    if not isinstance(entry, dict):
        raise DataError(f"{file}: key 'files' entry {index} expected a table, got {entry!r}")
    _check_keys(entry, _FILE_KEYS, ("path",), file, where)
    relative = PurePosixPath(entry["path"])
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise DataError(f"{file}: key '{where}path' expected a path inside root, got {entry['path']!r}")
    start, stop = entry.get("start", 0), entry.get("stop")
    if start < 0 or (stop is not None and stop < start):
        raise DataError(f"{file}: keys '{where}start'/'{where}stop' expected 0 <= start <= stop, "
                        f"got start={start}, stop={stop}")
    return LogSlice(root / relative, channel, entry.get("date"), start, stop)


def _check_keys(table: dict[str, Any], known: dict[str, type], required: tuple[str, ...], file: Path,
                prefix: str) -> None:
    for key, value in table.items():
        if key not in known:
            raise DataError(f"{file}: unknown key '{prefix}{key}'; expected one of {sorted(known)}")
        kind = known[key]
        wrong_date = kind is dt.date and (not isinstance(value, dt.date) or isinstance(value, dt.datetime))
        if wrong_date or not isinstance(value, kind) or isinstance(value, bool):
            raise DataError(f"{file}: key '{prefix}{key}' expected {kind.__name__}, got {value!r}")
    for key in required:
        if key not in table:
            raise DataError(f"{file}: missing key '{prefix}{key}'")


def _quote(text: str) -> str:
    """A TOML basic string (JSON's string escapes are valid TOML)."""
    return json.dumps(text, ensure_ascii=False)
