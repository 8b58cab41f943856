"""Read a workspace from JSON Lines files: one message object per line.

Layout: every ``*.jsonl`` file directly in the data folder, in name order.
Each non-blank line is an object with::

    {"ts": ..., "user": "alice", "channel": "general", "text": "hello", "thread_ts": ...}

``ts`` (and the optional ``thread_ts``) is a Slack timestamp string
(``"1700000000.000100"``), a number of seconds since the epoch, or an ISO 8601
date-time string (UTC when it has no offset); it is stored as a Slack
timestamp string with microseconds. ``user``, ``channel`` and ``text`` are
strings. Other keys are ignored. Blank lines (``"blank_line"``) and messages
with blank text (``"empty_text"``) are counted as skipped; a line that is not
such an object is a ``DataError`` naming the file and line.

Files are read one line at a time, within the node's limits (``federated.data.files``): every
``*.jsonl`` entry is a message file, so one that is not a regular file (a FIFO, a folder) or whose
symbolic link leaves the data folder is an error, never silently passed over.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from federated.data.files import DataFolder
from federated.data.records import ChatMessage
from federated.data.roster import read_roster
from federated.data.source import SourceData, Tally, assemble, has_lone_surrogate, json_limit
from federated.errors import DataError

log = logging.getLogger("optin.data.jsonl")

_REQUIRED = ("ts", "user", "channel", "text")
_MICRO = Decimal("0.000001")


def jsonl_files(path: Path) -> list[Path]:
    """The entries named ``*.jsonl`` directly in ``path``, of any kind (only regular files can be read), in
    name order."""
    return sorted(Path(path).glob("*.jsonl"))


def read_jsonl(path: Path, *, name: str | None = None, skip_bad_files: bool = False) -> SourceData:
    """Load the ``*.jsonl`` files in ``path``: the workspace (with its report) and the names in ``path/roster.txt``.

    Messages are ordered by (channel, ts); ``members`` are the users and
    ``channels`` the channels in order of first appearance. The names to scrub
    come from the roster only, never from the messages' users
    (``federated.data.roster`` says why). With ``skip_bad_files`` a file with
    a bad line is skipped whole and listed.
    """
    path = Path(path)
    folder = DataFolder(path)
    tally = Tally("jsonl")
    messages: list[ChatMessage] = []
    for file in jsonl_files(path):
        try:
            file_messages = _read_file(file, folder, tally, len(messages))
        except DataError as exc:
            tally.bad_file(file, exc, skip_bad_files)
            continue
        messages.extend(file_messages)
    return assemble(messages, name if name is not None else path.name, read_roster(folder), tally)


def _read_file(file: Path, folder: DataFolder, tally: Tally, kept: int) -> list[ChatMessage]:
    """All messages of one file (``kept`` messages were kept before it); skips are counted only when the whole
    file is good."""
    messages: list[ChatMessage] = []
    skipped = {"blank_line": 0, "empty_text": 0}
    for number, line in enumerate(folder.message_lines(file), start=1):
        if not line.strip():
            skipped["blank_line"] += 1
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{file}: line {number}: malformed JSON at column {exc.colno}: {exc.msg}") from None
        except (ValueError, RecursionError) as exc:
            raise DataError(f"{file}: line {number}: unreadable JSON ({json_limit(exc)})") from None
        if has_lone_surrogate(line, record):
            raise DataError(f"{file}: line {number}: a string holds an unpaired UTF-16 surrogate escape "
                            "(such as \\ud800), which is not text")
        message = _message(record, file, number)
        if message is None:
            skipped["empty_text"] += 1
        else:
            messages.append(message)
            folder.check_messages(kept + len(messages), file)
    for reason, count in skipped.items():
        if count:
            tally.skip(reason, count)
    return messages


def _message(record: Any, file: Path, number: int) -> ChatMessage | None:
    where = f"{file}: line {number}"
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    for key in _REQUIRED:
        if key not in record:
            raise DataError(f"{where}: missing key {key!r} (expected keys {list(_REQUIRED)})")
    for key in ("user", "channel", "text"):
        if not isinstance(record[key], str):
            raise DataError(f"{where}: key {key!r} expected a string, got {record[key]!r}")
    if not record["user"] or not record["channel"]:
        raise DataError(f"{where}: keys 'user' and 'channel' must not be empty")
    if not record["text"].strip():
        return None
    thread_ts = record.get("thread_ts")
    return ChatMessage(ts=_slack_ts(record["ts"], where, "ts"), user=record["user"], channel=record["channel"],
                       text=record["text"],
                       thread_ts=None if thread_ts is None else _slack_ts(thread_ts, where, "thread_ts"))


def _slack_ts(value: Any, where: str, key: str) -> str:
    """A Slack ``"<seconds>.<micros>"`` string from a Slack ts, epoch seconds or an ISO 8601 string."""
    seconds: Decimal | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = Decimal(str(value))
    elif isinstance(value, str):
        try:
            seconds = Decimal(value)
        except InvalidOperation:
            try:
                moment = dt.datetime.fromisoformat(value)
            except ValueError:
                seconds = None
            else:
                if moment.tzinfo is None:
                    moment = moment.replace(tzinfo=dt.timezone.utc)
                delta = moment - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
                seconds = Decimal(delta.days * 86400 + delta.seconds) + Decimal(delta.microseconds) * _MICRO
    try:
        if seconds is None or not seconds.is_finite() or seconds < 0:
            raise InvalidOperation
        # Beyond the decimal context's 28 digits (some 10**21 years), quantize itself is an InvalidOperation.
        return f"{seconds.copy_abs().quantize(_MICRO):f}"  # copy_abs: -0.0 is the epoch, not '-0.000000'
    except InvalidOperation:
        raise DataError(f"{where}: key {key!r} expected a Slack timestamp, epoch seconds or an ISO 8601 "
                        f"date-time, got {value!r}") from None
