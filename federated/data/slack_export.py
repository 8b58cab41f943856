"""Read one workspace from a Slack admin export folder.

Layout read (the one Slack's workspace export produces)::

    <folder>/users.json               [{"id": "U0ABC123", "name": "alice", ...}, ...]
    <folder>/channels.json            [{"id": "C0...", "name": "general", ...}, ...]
    <folder>/<channel name>/<YYYY-MM-DD>.json   [{"type": "message", "user": ..., "text": ..., "ts": ...}, ...]

Only the files above are read; direct messages, group DMs and any other folders
are ignored. This module only parses: it never writes, and it raises
``DataError`` (naming the file, and the line where known) for anything malformed.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from federated.data.records import ChatMessage, Workspace
from federated.errors import DataError

log = logging.getLogger("optin.data.slack_export")

_LAYOUT_HINT = "Slack's export layout (users.json, channels.json and one folder per channel)"


def load_slack_export(path: Path, name: str | None = None) -> Workspace:
    """Load the workspace exported to ``path``.

    Kept messages: ``"type" == "message"``, no ``"subtype"`` (joins, bot posts,
    edits' tombstones ...), a ``"user"``, and text that is not empty or blank.
    Messages are ordered by (channel name, ts); thread fields are kept as Slack
    wrote them (a parent's ``thread_ts`` equals its own ``ts``). ``members`` are
    the ids in ``users.json`` order, ``member_names`` their ``"name"`` (the id
    when absent), ``channels`` the names in ``channels.json`` order; a channel
    without a folder simply has no messages.

    The workspace is named ``name`` if given, else after the folder.

    Raises ``DataError`` if the folder, ``users.json`` or ``channels.json`` is
    missing, a file is not valid UTF-8 JSON (with the line), a day file is not a
    JSON list, or an entry lacks a required field.
    """
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"workspace data folder not found: {path}")

    users = _read_required_list(path / "users.json")
    channels_raw = _read_required_list(path / "channels.json")

    members: list[str] = []
    member_names: list[str] = []
    for i, user in enumerate(users):
        uid = user.get("id") if isinstance(user, dict) else None
        if not isinstance(uid, str) or not uid:
            raise DataError(f"{path / 'users.json'}: entry {i} has no string 'id'")
        members.append(uid)
        uname = user.get("name")
        member_names.append(uname if isinstance(uname, str) and uname else uid)

    channels: list[str] = []
    for i, channel in enumerate(channels_raw):
        cname = channel.get("name") if isinstance(channel, dict) else None
        if not isinstance(cname, str) or not _is_safe_folder_name(cname):
            raise DataError(
                f"{path / 'channels.json'}: entry {i} has no usable 'name' "
                f"(expected a channel name that is a plain folder name, got {cname!r})"
            )
        channels.append(cname)

    messages: list[ChatMessage] = []
    skipped = 0
    for cname in channels:
        folder = path / cname
        if not folder.is_dir():
            continue
        for day_file in sorted(folder.glob("*.json")):
            day = _read_json(day_file)
            if not isinstance(day, list):
                raise DataError(
                    f"{day_file}: expected a JSON list of messages, got {type(day).__name__}"
                )
            for j, entry in enumerate(day):
                message = _parse_message(entry, cname, day_file, j)
                if message is None:
                    skipped += 1
                else:
                    messages.append(message)
    messages.sort(key=ChatMessage.sort_key)
    log.debug("loaded %d messages from %s (%d entries skipped)", len(messages), path, skipped)
    return Workspace(
        name=name if name is not None else path.name,
        members=tuple(members),
        channels=tuple(channels),
        messages=tuple(messages),
        member_names=tuple(member_names),
    )


def _parse_message(entry: Any, channel: str, day_file: Path, index: int) -> ChatMessage | None:
    """The message in ``entry``, ``None`` if it is not a plain user message with text."""
    if not isinstance(entry, dict):
        raise DataError(f"{day_file}: entry {index} is not a JSON object")
    if entry.get("type") != "message" or "subtype" in entry:
        return None
    text = entry.get("text")
    user = entry.get("user")
    if not isinstance(text, str) or not text.strip() or not isinstance(user, str) or not user:
        return None
    ts = entry.get("ts")
    thread_ts = entry.get("thread_ts")
    try:
        return ChatMessage(ts=ts, user=user, channel=channel, text=text, thread_ts=thread_ts)
    except ValueError as exc:
        raise DataError(f"{day_file}: entry {index}: {exc}") from None


def _read_required_list(file: Path) -> list[Any]:
    if not file.is_file():
        raise DataError(f"{file} not found: {file.name} is expected in {_LAYOUT_HINT}")
    data = _read_json(file)
    if not isinstance(data, list):
        raise DataError(f"{file}: expected a JSON list, got {type(data).__name__}")
    return data


def _read_json(file: Path) -> Any:
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{file}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise DataError(f"{file}: cannot be read ({exc.strerror})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{file}: malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None


def _is_safe_folder_name(name: str) -> bool:
    """A channel name may only ever name a direct sub-folder of the export."""
    return bool(name) and name not in {".", ".."} and "/" not in name and "\\" not in name and "\0" not in name
