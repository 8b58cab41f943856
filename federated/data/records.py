"""In-memory records of one workspace's chat data, and a keyed, per-message held-out split.

These are plain frozen values: every data source (Slack export, synthetic
generator, IRC chat logs, JSONL) produces a ``Workspace``, and tasks only ever
see ``Workspace.texts`` or the messages themselves. Nothing here reads files.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING

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


HELD_OUT_DOMAIN = b"optin/held-out/v1"
MEMBER_GROUP_DOMAIN = b"optin/member-group/v1"


def message_identity(message: ChatMessage) -> bytes:
    """The canonical identity of a message: channel, user, text and thread_ts as a JSON list (so no two fields
    can run together). Messages with equal fields have equal identities.

    ``ts`` is left out on purpose: some sources number messages by position (an IRC log's ts carries the
    line index), so removing one line would change the ts, and with it the identity, of every later message.
    Everything kept is the message's own content, which no other message changes.
    """
    fields = [message.channel, message.user, message.text, message.thread_ts]
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def keyed_uniform(secret: bytes, domain: bytes, payload: bytes) -> float:
    """A number in [0, 1) from HMAC-SHA256(secret, domain NUL payload): uniform and unpredictable without
    ``secret`` (HMAC as a PRF), a pure function of its three inputs. ``domain`` keeps uses apart."""
    digest = hmac.new(secret, domain + b"\0" + payload, hashlib.sha256).digest()
    return (int.from_bytes(digest[:8], "big") >> 11) / float(1 << 53)  # 53 bits: exact in a float


def split_messages(
    messages: Sequence[ChatMessage], held_out_fraction: float, secret: bytes
) -> tuple[list[ChatMessage], list[ChatMessage]]:
    """Split messages into (train, held-out), each message on its own.

    A message is held out iff ``keyed_uniform(secret, HELD_OUT_DOMAIN, message_identity(message))`` is below
    ``held_out_fraction``. Guarantee: a message's side depends only on that message and the secret, never on
    which other messages exist, their order, or any run setting; so removing or adding one message changes
    exactly one entry of exactly one list (the neighbouring relation DP-SGD protects survives the split).
    Two messages with the same identity (the same text by the same member in the same channel and thread, at
    any time) land on the same side; they remain two messages, two records under the message unit. Without
    the secret, which side a message is on is unpredictable (HMAC as a PRF), so whoever chooses or sees
    messages cannot aim one at a side. Both lists are in a stable order (channel, ts, user, text,
    thread_ts); the held-out size is binomial, not exact, and either list may be empty.

    Raises ``ValueError`` unless ``0 < held_out_fraction < 1`` and ``secret`` is at least 16 bytes.
    """
    if (
        isinstance(held_out_fraction, bool)
        or not isinstance(held_out_fraction, (int, float))
        or math.isnan(held_out_fraction)
        or not 0.0 < held_out_fraction < 1.0
    ):
        raise ValueError(
            f"held_out_fraction: expected a number strictly between 0 and 1, got {held_out_fraction!r}"
        )
    if not isinstance(secret, bytes) or len(secret) < 16:
        raise ValueError("secret: expected at least 16 bytes (the node secret)")
    ordered = sorted(
        messages,
        key=lambda m: (m.channel, ts_sort_key(m.ts), m.user, m.text, m.thread_ts or ""),
    )
    train: list[ChatMessage] = []
    held_out: list[ChatMessage] = []
    for message in ordered:
        u = keyed_uniform(secret, HELD_OUT_DOMAIN, message_identity(message))
        (held_out if u < held_out_fraction else train).append(message)
    return train, held_out
