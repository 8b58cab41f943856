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
``integration_logs.json``, non-JSON files in a conversation folder) is not
read and is listed in the report's ``skipped_files``. This module only parses:
it never writes, and it raises ``DataError`` (naming the file, and the line
where known) for anything malformed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from federated.data.records import ChatMessage, Workspace
from federated.data.slack_markup import render
from federated.data.source import SourceData, Tally, has_lone_surrogate, json_limit
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
    as ``"subtype:<name>"``), not from a bot (a ``bot_id``, a users.json
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
    listed in the report.
    """
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"workspace data folder not found: {path}")
    tally = Tally("slack")
    users = _read_required_list(path / "users.json")
    members, member_names, handles, bots, names = _members(users, path / "users.json")
    conversations = _conversations(path)
    folders = [folder for folder, _ in conversations]
    ids = {cid: folder for folder, cid in conversations if cid}
    _skip_unread(path, set(folders), tally)

    messages: list[ChatMessage] = []
    for folder_name in folders:
        folder = path / folder_name
        if not folder.is_dir():
            continue
        for entry in sorted(folder.iterdir()):
            if entry.suffix != ".json" or not entry.is_file():
                tally.skip_file(entry, "not a JSON day file")
                continue
            try:
                day = _read_day(entry, folder_name, bots, keep_subtypes)
            except DataError as exc:
                if not skip_bad_files:
                    raise
                tally.skip_file(entry, str(exc))
                continue
            for reason, count in day.skipped.items():
                tally.skip(reason, count)
            messages.extend(day.messages)
    if render_markup:
        messages = _rendered(messages, handles, ids, tally)
    messages.sort(key=ChatMessage.sort_key)
    report = tally.report(len(messages))
    log.debug("loaded %d messages from %s (%d entries skipped)", len(messages), path, report.total_skipped)
    workspace = Workspace(
        name=name if name is not None else path.name,
        members=tuple(members),
        channels=tuple(folders),
        messages=tuple(messages),
        member_names=tuple(member_names),
        report=report,
    )
    # users.json lists the members whether or not they wrote anything: a roster, not a summary of messages.
    return SourceData(workspace, frozenset(names), frozenset(members))


@dataclass(frozen=True)
class _Day:
    messages: list[ChatMessage]
    skipped: dict[str, int]


def _read_day(day_file: Path, channel: str, bots: frozenset[str], keep_subtypes: frozenset[str]) -> _Day:
    """All of one day file, or a ``DataError``: a bad file contributes nothing."""
    day = _read_json(day_file)
    if not isinstance(day, list):
        raise DataError(f"{day_file}: expected a JSON list of messages, got {type(day).__name__}")
    messages: list[ChatMessage] = []
    skipped: dict[str, int] = {}
    for index, entry in enumerate(day):
        message_or_reason = _parse_message(entry, channel, day_file, index, bots, keep_subtypes)
        if isinstance(message_or_reason, str):
            skipped[message_or_reason] = skipped.get(message_or_reason, 0) + 1
        else:
            messages.append(message_or_reason)
    return _Day(messages, skipped)


def _parse_message(entry: Any, channel: str, day_file: Path, index: int, bots: frozenset[str],
                   keep_subtypes: frozenset[str]) -> ChatMessage | str:
    """The message in ``entry``, or the reason it is not training text."""
    if not isinstance(entry, dict):
        raise DataError(f"{day_file}: entry {index} is not a JSON object")
    if entry.get("type") != "message":
        return "not_message"
    subtype = entry.get("subtype")
    if subtype is not None and not isinstance(subtype, str):
        raise DataError(f"{day_file}: entry {index}: 'subtype' expected a string, got {type(subtype).__name__}")
    if subtype is not None and subtype not in keep_subtypes:
        return f"subtype:{subtype}"
    user = entry.get("user")
    if "bot_id" in entry or (isinstance(user, str) and user in bots):
        return "bot"
    if not isinstance(user, str) or not user:
        return "no_user"
    text = entry.get("text")
    if not isinstance(text, str) or not text.strip():
        return "empty_text"
    try:
        return ChatMessage(ts=entry.get("ts"), user=user, channel=channel, text=text,
                           thread_ts=entry.get("thread_ts"))
    except ValueError as exc:
        raise DataError(f"{day_file}: entry {index}: {exc}") from None


def _rendered(messages: list[ChatMessage], handles: Mapping[str, str], conversations: Mapping[str, str],
              tally: Tally) -> list[ChatMessage]:
    """Messages with their markup rendered; one that renders blank is skipped as ``empty_text``."""
    out = []
    for message in messages:
        text = render(message.text, handles, conversations)
        if text.strip():
            out.append(replace(message, text=text))
        else:
            tally.skip("empty_text")
    return out


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


def _conversations(path: Path) -> list[tuple[str, str | None]]:
    """(folder name, conversation id) of every conversation in the index files, in index order."""
    found: list[tuple[str, str | None]] = []
    seen: set[str] = set()
    for index in CONVERSATION_INDEXES:
        file = path / index.file
        if not index.required and not file.exists():
            continue
        for i, entry in enumerate(_read_required_list(file)):
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
        if entry.is_dir() and entry.name not in folders:
            tally.skip_file(entry, "folder not listed in " + ", ".join(i.file for i in CONVERSATION_INDEXES))
        elif entry.is_file() and entry.name not in known_files:
            tally.skip_file(entry, "not part of the message layout")


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
