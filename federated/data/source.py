"""What a data-source reader returns: the workspace, the roster's names to scrub, and a load report.

Every reader (Slack export, IRC manifest, JSONL) accounts for every entry it
saw: an entry is either loaded as a message or counted as skipped under a
reason, and every file it did not read is listed with why. Nothing is dropped
without a trace in the ``LoadReport``.

Every reader's messages go through ``assemble``, which applies the length rule
(``cut_text``, ``federated.limits.MESSAGE_MAX_CHARS``) to each message on its own.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from federated.data.files import WorkspaceLimitError
from federated.data.records import ChatMessage, Workspace
from federated.errors import DataError
from federated.limits import MESSAGE_MAX_CHARS

log = logging.getLogger("optin.data.source")


@dataclass(frozen=True)
class SkippedFile:
    """A file or folder under the data folder that was not read, and why."""

    path: Path
    reason: str


@dataclass(frozen=True)
class LoadReport:
    """How a workspace was loaded.

    ``layout`` is ``"slack"``, ``"irc"`` or ``"jsonl"``; ``loaded`` the number of
    messages kept; ``skipped`` counts the entries (Slack messages, log lines,
    JSONL records) that were not kept, by reason; ``skipped_files`` lists the
    files and folders not read; ``scrubbed`` counts scrubbing replacements by
    placeholder (empty when scrubbing was off).
    """

    layout: str
    loaded: int
    skipped: dict[str, int] = field(default_factory=dict)
    skipped_files: tuple[SkippedFile, ...] = ()
    scrubbed: dict[str, int] = field(default_factory=dict)

    @property
    def total_skipped(self) -> int:
        """All skipped entries, whatever the reason."""
        return sum(self.skipped.values())


@dataclass(frozen=True)
class SourceData:
    """A reader's result: the workspace (with its ``report``) and the roster's names and member ids.

    ``names`` are every name the workspace's roster gives for a person (handles, real and display names,
    nicks) and ``ids`` the roster's member ids, for scrubbing; they never leave the node. Both come from
    the roster (``users.json``, ``roster.txt``; ``federated.data.roster``), never from the messages, so
    that removing a message cannot change how any other message is scrubbed.
    """

    workspace: Workspace
    names: frozenset[str]
    ids: frozenset[str] = frozenset()


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_UP_TO_LAST_SPACE = re.compile(r".*\s", re.DOTALL)


def has_lone_surrogate(raw: str, parsed: Any) -> bool:
    """Whether the JSON value ``parsed`` (decoded from ``raw``) holds a string, or key, with an unpaired UTF-16
    surrogate: not text (it cannot be encoded as UTF-8, which tasks do).

    Decoding UTF-8 never yields a surrogate; only an escape such as ``\\ud800`` does, so when ``raw`` has
    none the answer is known without walking ``parsed``.
    """
    if not _SURROGATE_ESCAPE.search(raw):
        return False
    pending = [parsed]
    while pending:  # iterative: JSON may nest deeper than Python's recursion limit allows
        value = pending.pop()
        if isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
        elif isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return True
    return False


def json_limit(exc: ValueError | RecursionError) -> str:
    """Why ``json.loads`` failed on valid syntax: an integer of more digits than Python converts (a
    ``ValueError``), or nesting deeper than it can follow (a ``RecursionError``)."""
    return "nested too deeply" if isinstance(exc, RecursionError) else str(exc)


class Tally:
    """Counts skipped entries by reason and collects skipped files while a reader runs."""

    def __init__(self, layout: str) -> None:
        self.layout = layout
        self.skipped: Counter[str] = Counter()
        self.files: list[SkippedFile] = []

    def skip(self, reason: str, count: int = 1) -> None:
        self.skipped[reason] += count

    def skip_file(self, path: Path, reason: str) -> None:
        log.warning("not read: %s (%s)", path, reason)
        self.files.append(SkippedFile(path, reason))

    def bad_file(self, path: Path, error: DataError, skip_bad_files: bool) -> None:
        """List the malformed file ``path`` as skipped with ``skip_bad_files``; else raise ``error``. A workspace
        over a limit (``WorkspaceLimitError``) is always refused: skipping a file must not hide it."""
        if not skip_bad_files or isinstance(error, WorkspaceLimitError):
            raise error
        self.skip_file(path, str(error))

    def report(self, loaded: int) -> LoadReport:
        return LoadReport(self.layout, loaded, dict(sorted(self.skipped.items())), tuple(self.files))


def cut_text(text: str) -> str | None:
    """``text`` cut to at most ``MESSAGE_MAX_CHARS`` characters, or ``None`` when it cannot be (``too_long``).

    A longer text is cut at its last whitespace at or before that many characters (and the whitespace
    before the cut dropped); one with no whitespace there, or only whitespace before it, cannot be cut.
    No scrubbing rule matches across whitespace, so the kept text scrubs to a prefix of what the whole
    text scrubs to. A function of the text alone: cutting one message never changes another.
    """
    if len(text) <= MESSAGE_MAX_CHARS:
        return text
    head = _UP_TO_LAST_SPACE.match(text, 0, MESSAGE_MAX_CHARS + 1)
    kept = head.group().rstrip() if head is not None else ""
    return kept or None


def assemble(messages: list[ChatMessage], name: str, names: frozenset[str], tally: Tally, *,
             members: tuple[str, ...] | None = None, channels: tuple[str, ...] | None = None,
             member_names: tuple[str, ...] = (), ids: frozenset[str] = frozenset()) -> SourceData:
    """A reader's result from its messages: each cut by ``cut_text`` (or skipped as ``too_long``), sorted.

    ``members`` and ``channels`` default to the messages' users and channels in order of first appearance.
    """
    kept: list[ChatMessage] = []
    for message in messages:
        text = cut_text(message.text)
        if text is None:
            tally.skip("too_long")
        else:
            kept.append(message if text is message.text else replace(message, text=text))
    if members is None:
        members = tuple(dict.fromkeys(m.user for m in kept))
    if channels is None:
        channels = tuple(dict.fromkeys(m.channel for m in kept))
    kept.sort(key=ChatMessage.sort_key)
    workspace = Workspace(
        name=name,
        members=members,
        channels=channels,
        messages=tuple(kept),
        member_names=member_names,
        report=tally.report(len(kept)),
    )
    return SourceData(workspace, names, ids)
