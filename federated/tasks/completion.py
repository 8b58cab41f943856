"""Completing a message with a next-character model: greedy at temperature 0, sampled otherwise.

The model reads a message the way it was trained: ``BOS``, then the message's UTF-8 bytes, at most
``seq_len`` of them. So a completion starts at the beginning of a message (the prefix is the message's
first bytes), and prefix plus completion fit in ``seq_len`` bytes; a longer request is a ``ConfigError``
rather than a silent shift of the window the model never saw in training. Only the 256 byte values are
generated (never ``BOS`` or ``PAD``), so a completion is exactly ``length`` bytes; bytes that are not valid
UTF-8 on their own (a character cut at the end) are shown as U+FFFD by ``render``.

Sampling randomness is research randomness: it comes from the ``torch.Generator`` the caller passes.
"""

from __future__ import annotations

import torch
from torch import nn

from federated.errors import ConfigError
from federated.tasks.base import Task
from federated.tasks.nextchar import BOS, NextCharTask

BYTE_VALUES = 256


@torch.no_grad()
def complete(task: Task, model: nn.Module, prefix: str, length: int, *, temperature: float = 0.0,
             samples: int = 1, generator: torch.Generator | None = None) -> list[bytes]:
    """``samples`` completions of ``prefix``, each exactly ``length`` bytes (the prefix not included)."""
    if not isinstance(task, NextCharTask):
        raise ConfigError(f"task {task.name!r}: completion needs a next-character task")
    if length < 1 or samples < 1:
        raise ConfigError(f"length and samples: expected integers >= 1, got {length} and {samples}")
    if not temperature >= 0:
        raise ConfigError(f"temperature: expected a number >= 0, got {temperature}")
    start = prefix.encode("utf-8")
    if len(start) + length > task.seq_len:
        raise ConfigError(f"length: the prefix is {len(start)} bytes and the model reads at most seq_len="
                          f"{task.seq_len} bytes of a message; expected length <= {task.seq_len - len(start)}, "
                          f"got {length}")
    model.eval()
    tokens = torch.tensor([[BOS, *start]] * samples, dtype=torch.long)
    for _ in range(length):
        logits = model(tokens)[:, -1, :BYTE_VALUES].double()
        if temperature == 0:
            chosen = logits.argmax(dim=-1, keepdim=True)
        else:
            chosen = torch.multinomial(torch.softmax(logits / temperature, dim=-1), 1, generator=generator)
        tokens = torch.cat([tokens, chosen], dim=1)
    return [bytes(row[1 + len(start):].tolist()) for row in tokens]


def render(prefix: str, completion: bytes) -> str:
    """Prefix and completion as one line of text: invalid UTF-8 replaced by U+FFFD, control characters (a
    newline inside a message, say) written as escapes, so each completion prints as exactly one line."""
    text = (prefix.encode("utf-8") + completion).decode("utf-8", errors="replace")
    return "".join(c if c.isprintable() or c == " " else c.encode("unicode_escape").decode("ascii") for c in text)
