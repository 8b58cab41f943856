"""The sizes a node accepts: every file it reads, every size the server sends, every string it logs.

One place for the limits, so that the docs (docs/operator.md, docs/data.md) and the code say the same.
A value beyond a limit is refused with a clear error naming it; nothing is silently truncated except
where a docstring here says so. The limits bound the node's work and memory per message it answers,
whatever the server, a co-tenant or a careless export sends.
"""

from __future__ import annotations

KIB, MIB = 1 << 10, 1 << 20

# Files a node reads (``federated.safe_files``: regular files only, inside the workspace folder).
POLICY_MAX_BYTES = 64 * KIB
"""``policy.toml``: a policy is a few hundred bytes."""
INDEX_FILE_MAX_BYTES = 64 * MIB
"""A Slack export's ``users.json``, ``channels.json`` (and the other conversation indexes), ``roster.txt``,
an IRC ``source.toml``."""
DATA_FILE_MAX_BYTES = 64 * MIB
"""One message file: a Slack day file, a JSONL file, an IRC log."""
JSONL_LINE_MAX_BYTES = 1 * MIB
"""One line of a JSONL file (read one line at a time): a message of ``MESSAGE_MAX_CHARS`` characters, even
JSON-escaped, fits many times over."""
WORKSPACE_MAX_BYTES = 512 * MIB
"""All message files of one workspace together (each file's size counted before it is read); a workspace
with more is refused. At both workspace limits a load peaks at about 1 GiB (docs/data.md)."""
WORKSPACE_MAX_MESSAGES = 250_000
"""Messages read from one workspace (the entries its layout keeps, counted as they are read; one later
skipped as ``too_long`` counts too); a workspace with more is refused as soon as it is read, not sampled."""
MESSAGE_MAX_CHARS = 4_096
"""Characters of one message's text kept, before scrubbing: the text is cut at the last whitespace at or
before this many characters (a message with no whitespace there is skipped as ``too_long``). No scrubbing
rule matches across whitespace, so the kept text scrubs to exactly a prefix of what the whole text scrubs
to; the model reads at most ``seq-len`` bytes of it. This bounds the work and memory per message."""

# Sizes the server sends (the run config and each round's config).
MAX_SEQ_LEN = 1_024
"""The largest ``seq-len`` (bytes of a message the model reads) a node accepts; node config ``max-seq-len``
lowers or raises it."""
MAX_LOCAL_STEPS = 1_000
"""The most DP-SGD steps one ``train`` message may ask for; node config ``max-local-steps`` lowers or
raises it."""
PHYSICAL_BATCH = 256
"""Per-sample gradients are computed for at most this many samples at a time (a Poisson batch of any size
is split into chunks whose clipped gradients are summed before the noise is added), so memory does not
grow with the sampling rate the server asks for."""

# Strings a node writes to its log and audit log.
LOGGED_STRING_MAX_CHARS = 256
"""A string from outside the node (a round's group id, an error detail quoting a value) is cut to this many
characters, with a marker saying how many were cut, before it is logged or audited."""
LOGGED_LIST_MAX_ITEMS = 64
"""Items of one list field kept in an audit entry; a longer list keeps its first ones and a marker item."""


def cut(text: str, limit: int = LOGGED_STRING_MAX_CHARS) -> str:
    """``text`` if it has at most ``limit`` characters, else its first ``limit`` and a marker of how many were cut."""
    return text if len(text) <= limit else f"{text[:limit]}…[cut {len(text) - limit} chars]"


def shown(value: object, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters: an error names a value from outside without echoing all of it."""
    return cut(repr(value), limit)
