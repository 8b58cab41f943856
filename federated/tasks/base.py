"""The task protocol: what a node and the server need to know about a learning problem.

A task owns its public encoding (never built from workspace text, so it leaks
nothing), its model, its per-sample loss and its metrics. One encoded sample is
one unit of privacy: DP-SGD clips the gradient of each sample separately.

A task encodes **messages** (``ChatMessage``), not bare texts, so its targets may come from a message's own
fields (the ``reply`` task's label is whether the message is a thread reply). The neighbouring relation the
node's DP-SGD protects needs every task to keep one rule: a message's sample depends only on that message's
own fields, never on other messages, so removing one message changes exactly one sample (or one group).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from federated.data.records import ChatMessage
from federated.errors import ConfigError


class Task(Protocol):
    """A learning problem over chat messages."""

    name: str

    def build_model(self, seed: int) -> nn.Module:
        """A freshly initialised model; the same seed gives the same weights."""
        ...

    def encode(self, messages: Sequence[ChatMessage]) -> TensorDataset:
        """One sample per message, as (inputs, targets) tensors; each from that message's own fields alone."""
        ...

    def encode_groups(self, groups: Sequence[Sequence[ChatMessage]], per_group: int) -> TensorDataset:
        """One sample per group of at most ``per_group`` messages (member-level privacy unit)."""
        ...

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean over the batch of each sample's own loss (Opacus' ``loss_reduction="mean"``)."""
        ...

    def evaluate(self, model: nn.Module, data: TensorDataset) -> dict[str, float]:
        """Metrics of ``model`` on ``data``: at least ``loss`` and ``accuracy``."""
        ...


@runtime_checkable
class TextScorer(Protocol):
    """A task whose model gives texts a likelihood (a language model): what canary audits need."""

    name: str

    def score_texts(self, model: nn.Module, texts: Sequence[str]) -> np.ndarray:
        """Log-perplexity (total negative log-likelihood) of each text under ``model``: canary audits rank by it."""
        ...


def seeded_model(seed: int, build: Callable[[], nn.Module]) -> nn.Module:
    """``build()`` with torch's generator seeded by ``seed``, leaving the caller's generator state as it was:
    the same seed gives the same initial weights on the server and every node."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build()


def get_task(name: str, seq_len: int = 64) -> Task:
    """The task registered under ``name``; a ``ConfigError`` lists the known ones otherwise."""
    from federated.tasks.nextchar import NextCharTask
    from federated.tasks.reply import ReplyTask

    tasks = {"nextchar": lambda: NextCharTask(seq_len=seq_len), "reply": lambda: ReplyTask(seq_len=seq_len)}
    if name not in tasks:
        raise ConfigError(f"task: unknown task {name!r}; expected one of {sorted(tasks)}")
    return tasks[name]()

