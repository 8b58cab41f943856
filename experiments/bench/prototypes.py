"""Prototypes, applied by monkeypatching, of edits proposed for files the benchmarks may not change.

BENCHMARKS.md proposes these edits; here they are in runnable form so that their gain is measured
side by side with the code as it is:

- **parsed-workspace cache** (``clients/workspace_node.py``): ``WorkspaceNode._split`` keeps the last
  ``CACHE_SIZE`` parsed and split workspaces of this process, keyed by the folder, the path,
  modification time and size of every file under ``data/``, the test fraction and the seed. A
  changed, added or removed file changes the key, so the node never trains on stale data; the
  bound keeps memory tracking the cohort, not the population.
- **count, do not encode** (``clients/app.py`` + ``clients/workspace_node.py``): the query handler
  needs only the number of training samples; ``num_training_samples`` counts them from the split
  (messages, or members for the member unit) instead of encoding every message into tensors, and
  remembers the count per data signature (one integer per workspace), so a query reads no
  messages while the data files are unchanged.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flwr.app import Context, Message, MessageType

from clients.app import app as client_app
from clients.workspace_node import DATA_FOLDER, WorkspaceNode
from federated.config import RunConfig
from federated.data import ChatMessage
from federated.privacy.policy import Policy

CACHE_SIZE = 32
"""Parsed workspaces a node process keeps (a node serves one workspace; the in-process grid all)."""

Split = tuple[list[ChatMessage], list[ChatMessage]]
_original_split = WorkspaceNode._split
_split_cache: OrderedDict[tuple[Any, ...], Split] = OrderedDict()
_count_cache: dict[tuple[Any, ...], int] = {}


def data_signature(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """(path, mtime in ns, size) of every file under ``folder``, sorted: one ``stat`` per file."""
    entries = []
    pending = [str(folder)]
    while pending:
        with os.scandir(pending.pop()) as listing:
            for entry in listing:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
                else:
                    stat = entry.stat()
                    entries.append((entry.path, stat.st_mtime_ns, stat.st_size))
    return tuple(sorted(entries))


def _key(node: WorkspaceNode, config: RunConfig) -> tuple[Any, ...]:
    return str(node.folder), data_signature(node.folder / DATA_FOLDER), config.test_fraction, config.seed


def cached_split(node: WorkspaceNode, config: RunConfig) -> Split:
    """``WorkspaceNode._split`` behind a bounded, per-process LRU cache keyed by the data files' state."""
    key = _key(node, config)
    if key in _split_cache:
        _split_cache.move_to_end(key)
        return _split_cache[key]
    split = _original_split(node, config)
    _split_cache[key] = split
    while len(_split_cache) > CACHE_SIZE:
        _split_cache.popitem(last=False)
    return split


def num_training_samples(node: WorkspaceNode, config: RunConfig, policy: Policy) -> int:
    """How many DP samples ``training_samples`` would make: messages, or members with a message.

    Remembered per (data signature, split, privacy unit): one integer per workspace.
    """
    key = (*_key(node, config), policy.privacy_unit)
    if key not in _count_cache:
        train, _ = node._split(config)
        _count_cache[key] = len(train) if policy.privacy_unit == "message" else len({m.user for m in train})
    return _count_cache[key]


class _Count:
    """Stands in for the training set where the query handler only takes its ``len``."""

    def __init__(self, count: int) -> None:
        self._count = count

    def __len__(self) -> int:
        return self._count


def counting_client_app(message: Message, context: Context) -> Message:
    """Optin's ClientApp, except that the query handler counts training samples instead of encoding them.

    Equivalent to the proposed one-line edit of ``clients/app.py``'s ``query``:
    ``len(node.training_samples(task, config, policy))`` -> ``node.num_training_samples(config, policy)``.
    """
    if message.metadata.message_type != MessageType.QUERY:
        return client_app(message, context)
    original = WorkspaceNode.training_samples
    WorkspaceNode.training_samples = lambda node, _task, config, policy: _Count(  # type: ignore[method-assign]
        num_training_samples(node, config, policy))
    try:
        return client_app(message, context)
    finally:
        WorkspaceNode.training_samples = original  # type: ignore[method-assign]


@contextmanager
def workspace_cache() -> Iterator[None]:
    """Apply the parsed-workspace cache (``counting_client_app`` applies the query edit)."""
    WorkspaceNode._split = cached_split  # type: ignore[method-assign]
    try:
        yield
    finally:
        WorkspaceNode._split = _original_split  # type: ignore[method-assign]
        _split_cache.clear()
        _count_cache.clear()

