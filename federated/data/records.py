"""In-memory records of one workspace's chat data, and a deterministic held-out split.

These are plain frozen values: every data source (Slack export, synthetic
generator, IRC chat logs, JSONL) produces a ``Workspace``, and tasks only ever
see ``Workspace.texts`` or the messages themselves. Nothing here reads files.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from federated.data.source import LoadReport

_TS_RE = re.compile(r"[0-9]+\.[0-9]+")  # ASCII digits only, matched whole (``$`` would allow a final newline)


def ts_sort_key(ts: str) -> Decimal:
    """Exact numeric sort key of a Slack timestamp string such as ``"1700000000.000100"``."""
    return Decimal(ts)


@dataclass(frozen=True)
class ChatMessage:
    """One chat message, as Slack exports it.

    ``ts`` is Slack's ``"<seconds>.<micros>"`` string, unique within a channel.
    ``user`` is the author's member id (e.g. ``"U0ABC123"``) and ``channel`` the
    channel's name. ``thread_ts`` follows Slack: ``None`` for a plain message,
    equal to ``ts`` for a thread parent, the parent's ``ts`` for a reply.

    Raises ``ValueError`` if ``ts`` or ``thread_ts`` is not a Slack timestamp.
    """

    ts: str
    user: str
    channel: str
    text: str
    thread_ts: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.ts, str) or not _TS_RE.fullmatch(self.ts):
            raise ValueError(f"ts: expected a Slack timestamp like '1700000000.000100', got {self.ts!r}")
        if self.thread_ts is not None and (
            not isinstance(self.thread_ts, str) or not _TS_RE.fullmatch(self.thread_ts)
        ):
            raise ValueError(
                f"thread_ts: expected None or a Slack timestamp like '1700000000.000100', got {self.thread_ts!r}"
            )

    @property
    def is_reply(self) -> bool:
        """True for a thread reply (``thread_ts`` set and different from ``ts``)."""
        return self.thread_ts is not None and self.thread_ts != self.ts

    def sort_key(self) -> tuple[str, Decimal]:
        """The canonical message order of a workspace: by channel name, then timestamp."""
        return (self.channel, ts_sort_key(self.ts))


@dataclass(frozen=True)
class Workspace:
    """One tenant's chat data.

    ``members`` are member ids in the source's order; ``member_names`` is either
    empty (unknown) or the display handles aligned with ``members``. ``channels``
    are channel names. ``messages`` are in canonical order (channel, ts) when the
    workspace comes from ``load_slack_export`` or the synthetic generator.
    Sequences given as lists are stored as tuples, so a workspace is hashable.
    ``report`` says how a loader built it (``None`` for a workspace built in
    memory); it is not part of equality or the hash.
    """

    name: str
    members: tuple[str, ...]
    channels: tuple[str, ...]
    messages: tuple[ChatMessage, ...]
    member_names: tuple[str, ...] = ()
    report: LoadReport | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        for attr in ("members", "channels", "messages", "member_names"):
            object.__setattr__(self, attr, tuple(getattr(self, attr)))
        if self.member_names and len(self.member_names) != len(self.members):
            raise ValueError(
                f"member_names: expected {len(self.members)} names aligned with members, "
                f"got {len(self.member_names)}"
            )

    @property
    def texts(self) -> list[str]:
        """The message texts, in message order (one entry per message)."""
        return [m.text for m in self.messages]


def split_messages(
    messages: Sequence[ChatMessage], test_fraction: float, seed: int
) -> tuple[list[ChatMessage], list[ChatMessage]]:
    """Split messages into (train, held-out), deterministically.

    Messages are first put in a stable order that does not depend on the input
    order (channel, ts, user, text, thread_ts); then each message goes to the
    held-out list with probability ``test_fraction``, decided by one draw of
    ``numpy.random.Generator(PCG64(seed))`` per message in that order. So the
    same messages and seed always give the same split, whatever order they come
    in. Both lists are returned in the stable order; every message lands in
    exactly one of them. The held-out size is binomial, not exact, and either
    list may be empty for very small inputs.

    Raises ``ValueError`` unless ``0 < test_fraction < 1``.
    """
    if (
        isinstance(test_fraction, bool)
        or not isinstance(test_fraction, (int, float))
        or math.isnan(test_fraction)
        or not 0.0 < test_fraction < 1.0
    ):
        raise ValueError(f"test_fraction: expected a number strictly between 0 and 1, got {test_fraction!r}")
    ordered = sorted(
        messages,
        key=lambda m: (m.channel, ts_sort_key(m.ts), m.user, m.text, m.thread_ts or ""),
    )
    draws = np.random.Generator(np.random.PCG64(seed)).random(len(ordered))
    train: list[ChatMessage] = []
    held_out: list[ChatMessage] = []
    for message, u in zip(ordered, draws):
        (held_out if u < test_fraction else train).append(message)
    return train, held_out
