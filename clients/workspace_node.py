"""Which workspace a node serves, and access to its policy, ledger, audit log and messages.

A node's workspace folder holds ``policy.toml``, ``data/`` (its messages), ``ledger.sqlite``
and ``audit.jsonl``. The folder comes from the node config key ``workspace`` (how an operator
starts a SuperNode, and the in-process mode), or, in Flower's simulation, from the run config's
``workspaces-root``: partition ``i`` serves the ``i``-th sub-folder in sorted order.
Messages are read only through ``training_samples`` and ``held_out_texts``, which the ClientApp
calls only after consent was checked.

Audit canaries: the node config key ``audit-canaries`` (a JSON list of strings) adds those texts to
the training split in memory, one training message each, for an empirical privacy audit
(``experiments.canary_audit``). They are never written to the workspace folder, never held out,
and they count as training messages for the sampling rate and ε like any other. Only whoever
starts the node sets its node config; a server cannot.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from flwr.app import Context
from torch.utils.data import TensorDataset

from clients.workspace_cache import load_split
from federated.audit import AUDIT_FILE, AuditLog, read_entries
from federated.config import RunConfig
from federated.data import ChatMessage
from federated.errors import ConfigError, DataError, LedgerError
from federated.privacy.ledger import LEDGER_FILE, Ledger, inspect_hint
from federated.privacy.policy import POLICY_FILE, ConsentDecision, Policy, decide_consent
from federated.tasks import Task

DATA_FOLDER = "data"
CANARIES_KEY = "audit-canaries"
CANARY_CHANNEL = "audit-canaries"


@dataclass(frozen=True)
class WorkspaceNode:
    """One workspace as its node sees it."""

    folder: Path
    canaries: tuple[str, ...] = ()
    """Audit canaries added to the training split in memory (empty outside audits)."""

    @classmethod
    def from_context(cls, context: Context) -> WorkspaceNode:
        """Resolve the workspace folder from the node config (or the simulation partition), and any canaries."""
        canaries = _canaries(context.node_config.get(CANARIES_KEY))
        if "workspace" in context.node_config:
            return cls(Path(str(context.node_config["workspace"])), canaries)
        root = str(context.run_config.get("workspaces-root", ""))
        if not root or "partition-id" not in context.node_config:
            raise ConfigError(
                "node config: expected key 'workspace' (a workspace folder), or 'partition-id' with the run "
                "config key 'workspaces-root'"
            )
        folders = sorted(p for p in Path(root).iterdir() if p.is_dir()) if Path(root).is_dir() else []
        index = int(context.node_config["partition-id"])
        if index >= len(folders):
            raise DataError(f"workspaces-root {root}: no workspace folder for partition {index} "
                            f"({len(folders)} folders found)")
        return cls(folders[index], canaries)

    @property
    def name(self) -> str:
        return self.folder.name

    def consent(self, config: RunConfig) -> ConsentDecision:
        """Consent for this run's task and federation, from the policy file re-read now."""
        return decide_consent(self.folder / POLICY_FILE, config.task, config.federation)

    def audit(self) -> AuditLog:
        return AuditLog(self.folder / AUDIT_FILE)

    def open_ledger(self) -> Ledger:
        """The workspace's ledger; ``LedgerError`` if it is unsound or has gone missing."""
        path = self.folder / LEDGER_FILE
        if not path.exists() and (self.folder / AUDIT_FILE).exists():
            released = sum(1 for e in read_entries(self.folder / AUDIT_FILE) if e.get("kind") == "release")
            if released:
                raise LedgerError(f"{path}: ledger missing but the audit log records {released} release(s); "
                                  f"refusing to start from an empty budget; {inspect_hint(path)}")
        return Ledger(path)

    def _split(self, config: RunConfig) -> tuple[list[ChatMessage], list[ChatMessage]]:
        train, held_out = self._split_files(config)
        return [*train, *canary_messages(self.canaries)], held_out

    def _split_files(self, config: RunConfig) -> tuple[list[ChatMessage], list[ChatMessage]]:
        """(train, held-out) of the messages in the workspace's data files."""
        return load_split(self.folder / DATA_FOLDER, self.name, config.test_fraction, config.seed)

    def training_samples(self, task: Task, config: RunConfig, policy: Policy) -> TensorDataset:
        """The training split as DP samples: one per message, or one per member (at most k messages each)."""
        train, _ = self._split(config)
        if policy.privacy_unit == "message":
            return task.encode([m.text for m in train])
        return task.encode_groups(member_groups(train, policy.max_messages_per_member, config.seed),
                                  per_group=policy.max_messages_per_member)

    def num_training_samples(self, config: RunConfig, policy: Policy) -> int:
        """How many DP samples ``training_samples`` makes (messages, or members), without encoding any."""
        train, _ = self._split(config)
        return len(train) if policy.privacy_unit == "message" else len({m.user for m in train})

    def held_out_texts(self, config: RunConfig) -> list[str]:
        return [m.text for m in self._split(config)[1]]

    def seed_for(self, config: RunConfig, server_round: int) -> int:
        """A seed unique to (run seed, workspace, round), stable across processes."""
        digest = hashlib.sha256(f"{config.seed}:{self.name}:{server_round}".encode()).digest()
        return int.from_bytes(digest[:8], "little")


def member_groups(messages: list[ChatMessage], limit: int, seed: int) -> list[list[str]]:
    """One group per member: a seeded random choice of at most ``limit`` of their messages.

    This is the member-level contribution bound: a member's other messages are not used.
    """
    by_member: dict[str, list[str]] = defaultdict(list)
    for message in messages:
        by_member[message.user].append(message.text)
    rng = np.random.default_rng(seed)
    groups = []
    for member in sorted(by_member):
        texts = by_member[member]
        chosen = rng.permutation(len(texts))[:limit]
        groups.append([texts[i] for i in sorted(chosen)])
    return groups


def canary_messages(texts: tuple[str, ...]) -> list[ChatMessage]:
    """Audit canaries as training messages, each from its own member (one privacy unit per canary copy)."""
    return [ChatMessage(ts=f"0.{i:06d}", user=f"audit-canary-{i}", channel=CANARY_CHANNEL, text=text)
            for i, text in enumerate(texts)]


def _canaries(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    try:
        texts = json.loads(str(value))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"node config {CANARIES_KEY!r}: expected a JSON list of strings ({exc})") from exc
    if not isinstance(texts, list) or not all(isinstance(t, str) and t for t in texts):
        raise ConfigError(f"node config {CANARIES_KEY!r}: expected a JSON list of non-empty strings")
    return tuple(texts)
