"""Read one workspace from a Slack admin export folder.

Layout read (the one Slack's workspace export produces)::

    <folder>/users.json       [{"id": "U0ABC123", "name": "alice", "profile": {...}, ...}, ...]
    <folder>/channels.json    public channels   [{"id": "C0...", "name": "general", ...}, ...]
    <folder>/groups.json      private channels  (when present; folder = "name")
    <folder>/mpims.json       group DMs         (when present; folder = "name", e.g. "mpdm-alice--bob-1")
    <folder>/dms.json         DMs               (when present; folder = "id", e.g. "D0ABC123")
    <folder>/<conversation folder>/<YYYY-MM-DD>.json   [{"type": "message", "user": ..., "text": ..., "ts": ...}, ...]

Every conversation listed in an index above is read; its messages get the
folder name as ``channel``. Anything else under the folder (unlisted folders,
``integration_logs.json``, files in a conversation folder not named ``*.json``)
is not read and is listed in the report's ``skipped_files``. This module only
parses: it never writes, and it raises ``DataError`` (naming the file, and the
line where known) for anything malformed. Files are read within the node's
limits (``federated.data.files``): an index file or a ``*.json`` entry of a
conversation folder that is not a regular file (a FIFO, a device, a folder), or
a file or conversation folder whose symbolic link leaves the export, is an error.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from federated.data.files import DataFolder, require_folder
from federated.data.records import ChatMessage, Workspace
from federated.data.slack_markup import render
from federated.data.source import SourceData, Tally, assemble, has_lone_surrogate, json_limit
from federated.errors import DataError

log = logging.getLogger("optin.data.slack_export")

_LAYOUT_HINT = "Slack's export layout (users.json, channels.json and one folder per channel)"

KEPT_SUBTYPES = frozenset({"thread_broadcast", "file_share", "me_message"})
"""Subtypes whose text a person wrote: a thread reply also sent to the channel, a file's comment, ``/me``."""

_SLACKBOT = "USLACKBOT"
_NAME_FIELDS = ("name", "real_name")
_PROFILE_NAME_FIELDS = ("real_name", "display_name", "real_name_normalized", "display_name_normalized",
                        "first_name", "last_name")


@dataclass(frozen=True)
class ConversationIndex:
    """One index file of conversations, and which field names each conversation's folder."""

    file: str
    folder_field: str
    required: bool


CONVERSATION_INDEXES = (
    ConversationIndex("channels.json", "name", True),
    ConversationIndex("groups.json", "name", False),
    ConversationIndex("mpims.json", "name", False),
    ConversationIndex("dms.json", "id", False),
)


def load_slack_export(path: Path, name: str | None = None, *, skip_bad_files: bool = False,
                      render_markup: bool = False, keep_subtypes: frozenset[str] = KEPT_SUBTYPES) -> Workspace:
    """Load the workspace exported to ``path``; see ``read_slack_export`` for what is kept.

    By default texts are exactly as Slack stored them (markup included), so a
    workspace written by ``write_slack_export`` reads back equal;
    ``load_workspace`` renders the markup.
    """
    return read_slack_export(path, name=name, skip_bad_files=skip_bad_files, render_markup=render_markup,
                             keep_subtypes=keep_subtypes).workspace


def read_slack_export(path: Path, *, name: str | None = None, skip_bad_files: bool = False,
                      render_markup: bool = True, keep_subtypes: frozenset[str] = KEPT_SUBTYPES) -> SourceData:
    """Read the export at ``path``: the workspace (with its ``report``) and the people's names in ``users.json``.

    Kept messages: ``"type" == "message"``, no ``"subtype"`` or one in
    ``keep_subtypes`` (joins, leaves, topic changes, bot posts ... are skipped
    as ``"subtype:<name>"``), not from a bot (a ``bot_id`` that is set, not null; a users.json
    ``is_bot`` member, Slackbot: ``"bot"``), with a ``"user"`` (``"no_user"``)
    and text that is not blank (``"empty_text"``); other types are
    ``"not_message"``. Edited messages are kept with their final text;
    reactions, attachments and files are metadata and ignored. With
    ``render_markup`` the text is rendered by ``slack_markup.render``.

    Messages are ordered by (channel, ts); thread fields are kept as Slack
    wrote them (a parent's ``thread_ts`` equals its own ``ts``, a reply's is
    its parent's). ``members`` are the ids in ``users.json`` order,
    ``member_names`` their ``"name"`` (the id when absent), ``channels`` the
    conversation folders in index order (channels, groups, mpims, dms); a
    conversation without a folder simply has no messages. The workspace is
    named ``name`` if given, else after the folder.

    Raises ``DataError`` if the folder, ``users.json`` or ``channels.json`` is
    missing or malformed (these are always required), or a day file is not
    valid UTF-8 JSON (with the line), not a JSON list, or has an entry that is
    not an object, has a bad timestamp or a subtype that is not a string (a
    JSON file whose strings escape an unpaired UTF-16 surrogate is malformed
    too). With ``skip_bad_files`` such a day file is skipped whole instead and
    listed in the report. Files are read within the node's limits
    (``federated.data.files``); a text longer than ``MESSAGE_MAX_CHARS`` is cut
    or skipped as ``too_long`` (``federated.data.source.cut_text``).
    """
    path = Path(path)
    require_folder(path)
    data = DataFolder(path)
    tally = Tally("slack")
    users = _read_index(data, path / "users.json", required=True)
    members, member_names, handles, bots, names = _members(users, path / "users.json")
    conversations = _conversations(data)
    folders = [folder for folder, _ in conversations]
    ids = {cid: folder for folder, cid in conversations if cid}
    _skip_unread(path, set(folders), tally)
    rules = _Rules(bots, keep_subtypes, handles if render_markup else None, ids)

    messages: list[ChatMessage] = []
    for folder_name in folders:
        try:
            day_files = _day_files(data, path / folder_name, tally)
        except DataError as exc:
            tally.bad_file(path / folder_name, exc, skip_bad_files)
            continue
        for day_file in day_files:
            try:
                day = _read_day(data, day_file, folder_name, rules, len(messages))
            except DataError as exc:
                tally.bad_file(day_file, exc, skip_bad_files)
                continue
            for reason, count in day.skipped.items():
                tally.skip(reason, count)
            messages.extend(day.messages)
    # users.json lists the members whether or not they wrote anything: a roster, not a summary of messages.
    source = assemble(messages, name if name is not None else path.name, frozenset(names), tally,
                      members=tuple(members), channels=tuple(folders), member_names=tuple(member_names),
                      ids=frozenset(members))
    log.debug("loaded %d messages from %s", len(source.workspace.messages), path)
    return source


@dataclass(frozen=True)
class _Rules:
    """What a day file's entries are kept and rendered by: bot ids, kept subtypes, and for rendering markup
    (``handles`` is ``None`` when markup is kept as stored) member handles and conversation names by id."""

    bots: frozenset[str]
    keep_subtypes: frozenset[str]
    handles: dict[str, str] | None
    conversations: dict[str, str]


@dataclass
class _Day:
    messages: list[ChatMessage] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)


def _day_files(data: DataFolder, folder: Path, tally: Tally) -> list[Path]:
    """The ``*.json`` entries of a conversation folder, in name order (none if it does not exist); other
    entries are listed as skipped. ``DataError`` if the folder leaves the export or cannot be listed."""
    if not os.path.lexists(folder):
        return []  # a conversation without messages has no folder
    data.check_inside(folder)
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        raise DataError(f"{folder}: cannot be listed as a conversation folder ({exc.strerror or exc})") from None
    for entry in entries:
        if entry.suffix != ".json":
            tally.skip_file(entry, "not a JSON day file")
    return [entry for entry in entries if entry.suffix == ".json"]


def _read_day(data: DataFolder, day_file: Path, channel: str, rules: _Rules, kept: int) -> _Day:
    """All of one day file, or a ``DataError``: a bad file contributes nothing. ``kept`` messages were kept
    before it, for the workspace's message limit."""
    day = _read_json(day_file, data.message_text(day_file))
    if not isinstance(day, list):
        raise DataError(f"{day_file}: expected a JSON list of messages, got {type(day).__name__}")
    result = _Day()
    for index, entry in enumerate(day):
        message_or_reason = _parse_message(entry, channel, day_file, index, rules)
        if isinstance(message_or_reason, str):
            result.skipped[message_or_reason] = result.skipped.get(message_or_reason, 0) + 1
        else:
            result.messages.append(message_or_reason)
            data.check_messages(kept + len(result.messages), day_file)
    return result


def _parse_message(entry: Any, channel: str, day_file: Path, index: int, rules: _Rules) -> ChatMessage | str:
    """The message in ``entry`` (its markup rendered if ``rules`` say so), or the reason it is not training
    text; a message that renders blank is ``"empty_text"``."""
    if not isinstance(entry, dict):
        raise DataError(f"{day_file}: entry {index} is not a JSON object")
    if entry.get("type") != "message":
        return "not_message"
    subtype = entry.get("subtype")
    if subtype is not None and not isinstance(subtype, str):
        raise DataError(f"{day_file}: entry {index}: 'subtype' expected a string, got {type(subtype).__name__}")
    if subtype is not None and subtype not in rules.keep_subtypes:
        return f"subtype:{subtype}"
    user = entry.get("user")
    # Slack writes "bot_id": null on people's file shares: only a bot id that is set marks a bot.
    if entry.get("bot_id") not in (None, "") or (isinstance(user, str) and user in rules.bots):
        return "bot"
    if not isinstance(user, str) or not user:
        return "no_user"
    text = entry.get("text")
    if not isinstance(text, str) or not text.strip():
        return "empty_text"
    try:
        message = ChatMessage(ts=entry.get("ts"), user=user, channel=channel, text=text,
                              thread_ts=entry.get("thread_ts"))
    except ValueError as exc:
        raise DataError(f"{day_file}: entry {index}: {exc}") from None
    if rules.handles is None:
        return message
    rendered = render(text, rules.handles, rules.conversations)
    return replace(message, text=rendered) if rendered.strip() else "empty_text"


def _members(users: list[Any], file: Path) -> tuple[list[str], list[str], dict[str, str], frozenset[str], set[str]]:
    """Ids, handles (aligned), id -> handle, bot ids, and every name of a person (not a bot) in ``users.json``."""
    members: list[str] = []
    member_names: list[str] = []
    bots = {_SLACKBOT}
    names: set[str] = set()
    for i, user in enumerate(users):
        uid = user.get("id") if isinstance(user, dict) else None
        if not isinstance(uid, str) or not uid:
            raise DataError(f"{file}: entry {i} has no string 'id'")
        members.append(uid)
        handle = user.get("name")
        member_names.append(handle if isinstance(handle, str) and handle else uid)
        if user.get("is_bot") is True:
            bots.add(uid)
            continue
        profile = user.get("profile")
        profile = profile if isinstance(profile, dict) else {}
        for value in [user.get(f) for f in _NAME_FIELDS] + [profile.get(f) for f in _PROFILE_NAME_FIELDS]:
            if isinstance(value, str) and value.strip():
                names.add(value.strip())
    return members, member_names, dict(zip(members, member_names)), frozenset(bots), names


def _conversations(data: DataFolder) -> list[tuple[str, str | None]]:
    """(folder name, conversation id) of every conversation in the index files, in index order."""
    found: list[tuple[str, str | None]] = []
    seen: set[str] = set()
    for index in CONVERSATION_INDEXES:
        file = data.path / index.file
        for i, entry in enumerate(_read_index(data, file, index.required)):
            folder = entry.get(index.folder_field) if isinstance(entry, dict) else None
            if not isinstance(folder, str) or not _is_safe_folder_name(folder):
                raise DataError(
                    f"{file}: entry {i} has no usable {index.folder_field!r} "
                    f"(expected a conversation {index.folder_field} that is a plain folder name, got {folder!r})"
                )
            if folder in seen:
                raise DataError(f"{file}: entry {i}: conversation folder {folder!r} is listed twice in the export")
            seen.add(folder)
            cid = entry.get("id")
            found.append((folder, cid if isinstance(cid, str) else None))
    return found


def _skip_unread(path: Path, folders: set[str], tally: Tally) -> None:
    """List what the layout does not read: unlisted folders and other top-level files."""
    known_files = {"users.json"} | {index.file for index in CONVERSATION_INDEXES}
    for entry in sorted(path.iterdir()):
        if entry.name in folders or entry.name in known_files:
            continue
        if entry.is_dir():
            tally.skip_file(entry, "folder not listed in " + ", ".join(i.file for i in CONVERSATION_INDEXES))
        else:
            tally.skip_file(entry, "not part of the message layout")


def _read_index(data: DataFolder, file: Path, required: bool) -> list[Any]:
    """The JSON list in the index file ``file``; an optional index that does not exist lists nothing."""
    try:
        text = data.index_text(file)
    except FileNotFoundError:
        if required:
            raise DataError(f"{file} not found: {file.name} is expected in {_LAYOUT_HINT}") from None
        return []
    parsed = _read_json(file, text)
    if not isinstance(parsed, list):
        raise DataError(f"{file}: expected a JSON list, got {type(parsed).__name__}")
    return parsed


def _read_json(file: Path, text: str) -> Any:
    """The JSON value ``text`` (the content of ``file``) holds."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{file}: malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    except (ValueError, RecursionError) as exc:
        raise DataError(f"{file}: unreadable JSON ({json_limit(exc)})") from None
    if has_lone_surrogate(text, data):
        raise DataError(f"{file}: a string holds an unpaired UTF-16 surrogate escape (such as \\ud800), "
                        "which is not text")
    return data

def _is_safe_folder_name(name: str) -> bool:
    """A conversation folder may only ever name a direct sub-folder of the export."""
    return bool(name) and name not in {".", ".."} and "/" not in name and "\\" not in name and "\0" not in name
