"""Parse IRC chat logs in the two line formats of the IRC Disentanglement corpus.

Message lines (the only training text)::

    [HH:MM] <nick> text                                  classic (#ubuntu, #linux); [HH:MM:SS] too
    <channel> YYYY-MM-DD [HH:MM:SS] <nick> text          new-domains (#rust, #stripe ...); [HH:MM] too

Other lines are recognised and counted by reason, never kept: ``"system"``
(``=== ...``: joins, parts, nick changes, with or without a prefix),
``"action"`` (``* nick does something``), ``"notice"`` (``-bot- ...``,
``(nick/#channel) ...``),
``"blank_line"``, and ``"empty_text"`` (a ``<nick>`` with nothing after it).
Any other line is a ``DataError`` naming the file and its 1-based line, so a
file in another format fails loudly instead of loading as nothing.

Timestamps become Slack-style ``ts`` strings ``"<epoch seconds>.<line index>"``
(UTC; the 0-based line index in the file as the fraction keeps lines of the
same second in file order and unique). Classic lines carry no date: they are
dated from the slice's ``date`` (1970-01-01 when unknown), and a time more than
12 hours earlier than the previous line's starts the next day. A date before
1970-01-01 (on a line or as the slice's) is a ``DataError``: timestamps count
seconds from it.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from federated.data.files import DataFolder
from federated.data.records import ChatMessage
from federated.errors import DataError
from federated.limits import DATA_FILE_MAX_BYTES
from federated.safe_files import read_text

log = logging.getLogger("optin.data.irc")

_EPOCH_DAY = dt.date(1970, 1, 1)
_MAX_LINES = 1_000_000  # the line index must fit the six fractional digits of a ts
_HALF_DAY = 12 * 3600

_CLASSIC = re.compile(r"^\[(?P<h>\d{1,2}):(?P<m>\d{2})(?::(?P<s>\d{2}))?\]\s+(?P<rest>.*)$")
_NEW_DOMAINS = re.compile(
    r"^(?P<channel>[^\s\[<=*]\S*) (?P<date>\d{4}-\d{2}-\d{2})"
    r"(?: \[(?P<h>\d{1,2}):(?P<m>\d{2})(?::(?P<s>\d{2}))?\])?\s+(?P<rest>.*)$"
)
_MESSAGE = re.compile(r"^<(?P<nick>[^<>]*[^<>\s])\s*>(?P<text>.*)$")
_ACTION = re.compile(r"^\* ?(?P<a>\S+)")
_NOTICE = re.compile(r"^(?:-(?P<a>[^\s-]\S*?)-|\((?P<b>[^\s/()]+)/#[^\s()]*\))(?:\s|$)")


@dataclass(frozen=True)
class LogSlice:
    """Lines ``[start, stop)`` (0-based; ``stop=None``: to the end) of one log file of ``channel``.

    ``date`` is the day the log starts, for classic lines that carry no date.
    """

    file: Path
    channel: str
    date: dt.date | None = None
    start: int = 0
    stop: int | None = None


@dataclass
class ParsedLog:
    """The messages of a slice, the skipped lines by reason, and the nicks of everyone who wrote a line.

    ``nicks`` holds the authors of messages, actions and notices; nicks only
    named by system lines (joins, nick changes) are left out: many are common
    words (``The``, ``new``) of people who never wrote anything. They describe the log; they are not
    a list of names to scrub (that comes from the roster, ``federated.data.roster``).
    """

    messages: list[ChatMessage] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    nicks: set[str] = field(default_factory=set)


def read_log_lines(file: Path, folder: DataFolder | None = None) -> list[str]:
    """The lines of a UTF-8 log file (no line terminators); ``DataError`` naming the file if unreadable.

    The file is read as a message file of the workspace whose data folder is ``folder`` (within its limits,
    ``federated.data.files``), or, without one (a corpus being partitioned), as any regular file of at most
    ``DATA_FILE_MAX_BYTES``.
    """
    if folder is not None:
        text = folder.message_text(file)
    else:
        try:
            text = read_text(Path(file), DATA_FILE_MAX_BYTES)
        except FileNotFoundError:
            raise DataError(f"{file}: not found") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def parse_log(piece: LogSlice, folder: DataFolder | None = None, kept: int = 0) -> ParsedLog:
    """Parse one slice; raises ``DataError`` (file and line) for a line in no known format or a bad slice.

    With ``folder`` the file is read as one of that workspace's message files (``read_log_lines``), and the
    workspace's message limit is checked as messages are kept (``kept`` were kept before this slice).
    """
    lines = read_log_lines(piece.file, folder)
    stop = len(lines) if piece.stop is None else piece.stop
    if not 0 <= piece.start <= stop <= len(lines):
        raise DataError(f"{piece.file}: slice [{piece.start}, {stop}) is outside the file's {len(lines)} lines")
    if len(lines) > _MAX_LINES:
        raise DataError(f"{piece.file}: {len(lines)} lines; at most {_MAX_LINES} lines per log file are supported")
    if piece.date is not None and piece.date < _EPOCH_DAY:
        raise DataError(f"{piece.file}: start date {piece.date} is before {_EPOCH_DAY} (timestamps count from it)")
    parsed = ParsedLog()
    day = piece.date or _EPOCH_DAY
    previous: int | None = None
    for index in range(piece.start, stop):
        line = lines[index]
        if not line.strip():
            parsed.skipped["blank_line"] += 1
            continue
        channel, date, seconds, rest = _split_prefix(line, piece, index)
        if date is None and seconds is not None:
            if previous is not None and seconds < previous - _HALF_DAY:
                if day == dt.date.max:
                    raise DataError(f"{piece.file}: line {index + 1}: the log runs past {dt.date.max}")
                day += dt.timedelta(days=1)
            previous = seconds
        message = _MESSAGE.match(rest)
        if message is None:
            parsed.skipped[_other_line(rest, piece, index, parsed.nicks)] += 1
            continue
        nick, text = message.group("nick").strip(), message.group("text").strip()
        parsed.nicks.add(nick)
        if not text:
            parsed.skipped["empty_text"] += 1
            continue
        parsed.messages.append(ChatMessage(ts=_ts(date or day, seconds or 0, index), user=nick,
                                           channel=channel, text=text))
        if folder is not None:
            folder.check_messages(kept + len(parsed.messages), piece.file)
    log.debug("%s: %d messages, %d lines skipped", piece.file, len(parsed.messages), sum(parsed.skipped.values()))
    return parsed


def _split_prefix(line: str, piece: LogSlice, index: int) -> tuple[str, dt.date | None, int | None, str]:
    """(channel, date on the line, seconds of the day, rest of the line) of a line with or without a prefix."""
    match = _CLASSIC.match(line)
    if match:
        return piece.channel, None, _seconds(match, piece, index), match.group("rest")
    match = _NEW_DOMAINS.match(line)
    if match:
        try:
            date = dt.date.fromisoformat(match.group("date"))
        except ValueError:
            raise DataError(f"{piece.file}: line {index + 1}: bad date {match.group('date')!r}") from None
        if date < _EPOCH_DAY:
            raise DataError(f"{piece.file}: line {index + 1}: date {date} is before {_EPOCH_DAY} "
                            "(timestamps count from it)")
        seconds = _seconds(match, piece, index) if match.group("h") is not None else 0
        return match.group("channel"), date, seconds, match.group("rest")
    return piece.channel, None, None, line


def _seconds(match: re.Match[str], piece: LogSlice, index: int) -> int:
    h, m, s = int(match.group("h")), int(match.group("m")), int(match.group("s") or 0)
    if h > 23 or m > 59 or s > 59:
        raise DataError(f"{piece.file}: line {index + 1}: bad time {h:02d}:{m:02d}:{s:02d}")
    return h * 3600 + m * 60 + s


def _other_line(rest: str, piece: LogSlice, index: int, nicks: set[str]) -> str:
    """The skip reason of a line that is not ``<nick> text``; collects the nick of an action or notice."""
    if rest.startswith("==="):
        return "system"
    for pattern, reason in ((_ACTION, "action"), (_NOTICE, "notice")):
        match = pattern.match(rest)
        if match:
            nicks.update(n for n in match.groupdict().values() if n)
            return reason
    raise DataError(
        f"{piece.file}: line {index + 1}: not an IRC log line (expected '[HH:MM] <nick> text' or "
        f"'<channel> YYYY-MM-DD [HH:MM:SS] <nick> text'): {rest[:60]!r}"
    )


def _ts(day: dt.date, seconds: int, index: int) -> str:
    epoch = (day - _EPOCH_DAY).days * 86400 + seconds
    return f"{epoch}.{index:06d}"
