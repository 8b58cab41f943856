"""What a data-source reader returns: the workspace, the roster's names to scrub, and a load report.

Every reader (Slack export, IRC manifest, JSONL) accounts for every entry it
saw: an entry is either loaded as a message or counted as skipped under a
reason, and every file it did not read is listed with why. Nothing is dropped
without a trace in the ``LoadReport``.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from federated.data.records import ChatMessage, Workspace

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

    def report(self, loaded: int) -> LoadReport:
        return LoadReport(self.layout, loaded, dict(sorted(self.skipped.items())), tuple(self.files))


def assemble(messages: list[ChatMessage], name: str, names: frozenset[str], tally: Tally) -> SourceData:
    """A reader's result from its messages (sorted here): members and channels in order of first appearance."""
    members = tuple(dict.fromkeys(m.user for m in messages))
    channels = tuple(dict.fromkeys(m.channel for m in messages))
    messages.sort(key=ChatMessage.sort_key)
    workspace = Workspace(name=name, members=members, channels=channels, messages=tuple(messages),
                          report=tally.report(len(messages)))
    return SourceData(workspace, names)
