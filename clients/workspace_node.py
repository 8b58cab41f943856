"""Which workspace a node serves, and access to its policy, ledger, audit log and messages.

A node's workspace folder holds ``policy.toml``, ``data/`` (its messages), ``node.secret`` (keys the
held-out split and member groups), ``ledger.sqlite`` and ``audit.jsonl``. The folder comes from the node
config key ``workspace`` (how an operator starts a SuperNode, and the in-process mode), or, in Flower's
simulation, from the run config's ``workspaces-root``: partition ``i`` serves the ``i``-th sub-folder in
sorted order.
Messages are read only through ``training_samples`` and ``held_out_messages``, which the ClientApp
calls only after consent was checked.

Audit canaries: the node config key ``audit-canaries`` (a JSON list of strings) adds those texts to
the training split in memory, one training message each, for an empirical privacy audit
(``experiments.research.canary_audit``). They are never written to the workspace folder, never held out,
and each is one training record like any other message. Only whoever starts the node sets its
node config; a server cannot.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import torch
from flwr.app import Context
from torch.utils.data import TensorDataset

from clients.dp_training import privacy_generator, repeatable_generator
from clients.node_limits import NodeLimits
from clients.workspace_cache import load_split
from federated.audit import AUDIT_FILE, AuditLog
from federated.config import RunConfig
from federated.data import ChatMessage
from federated.data.records import MEMBER_GROUP_DOMAIN, keyed_uniform, message_identity
from federated.errors import ConfigError, DataError
from federated.privacy.ledger import LEDGER_FILE, Ledger
from federated.privacy.ledger_check import open_checked_ledger
from federated.privacy.node_secret import node_secret
from federated.privacy.policy import POLICY_FILE, ConsentDecision, Policy, decide_consent
from federated.privacy.workspace_lock import WORKSPACE_LOCK_TIMEOUT_S, workspace_lock
from federated.tasks import Task

DATA_FOLDER = "data"
CANARIES_KEY = "audit-canaries"
REPEATABLE_SEED_KEY = "repeatable-seed"
CANARY_CHANNEL = "audit-canaries"


@dataclass(frozen=True)
class WorkspaceNode:
    """One workspace as its node sees it."""

    folder: Path
    canaries: tuple[str, ...] = ()
    """Audit canaries added to the training split in memory (empty outside audits)."""
    repeatable_seed: int | None = None
    """Node config ``repeatable-seed``: seeds DP sampling and noise for repeatable research runs; every
    release made so is marked not private (ledger, audit log, reply). Unset (the default): OS randomness."""
    limits: NodeLimits = NodeLimits()
    """What the node accepts from a server (node config ``max-seq-len``, ``max-local-steps``)."""

    @classmethod
    def from_context(cls, context: Context) -> WorkspaceNode:
        """Resolve the workspace folder from the node config (or the simulation partition), and any canaries."""
        canaries = _canaries(context.node_config.get(CANARIES_KEY))
        seed = _repeatable_seed(context.node_config.get(REPEATABLE_SEED_KEY))
        limits = NodeLimits.from_node_config(context.node_config)
        if "workspace" in context.node_config:
            return cls(Path(str(context.node_config["workspace"])), canaries, seed, limits)
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
        return cls(folders[index], canaries, seed, limits)

    @property
    def name(self) -> str:
        return self.folder.name

    def run_config(self, context: Context) -> RunConfig:
        """The run's config, once it is valid and within this node's limits; else ``ConfigError``."""
        config = RunConfig.from_mapping(context.run_config)
        self.limits.check_run(config)
        return config

    def consent(self, config: RunConfig) -> ConsentDecision:
        """Consent for this run's task and federation, from the policy file re-read now."""
        return decide_consent(self.folder / POLICY_FILE, config.task, config.federation)

    def audit(self) -> AuditLog:
        return AuditLog(self.folder / AUDIT_FILE)

    def open_ledger(self) -> Ledger:
        """The workspace's ledger, once it agrees with the verified audit log (``federated.privacy.ledger_check``):
        ``LedgerError`` (``ledger-unsound``) if it is unsound, missing, rolled back or replaced, or if the audit
        log does not verify. Ledger, log and head all absent: a fresh workspace (an empty ledger is created)."""
        return open_checked_ledger(self.folder / LEDGER_FILE, self.folder / AUDIT_FILE)

    def lock(self, timeout: float = WORKSPACE_LOCK_TIMEOUT_S) -> AbstractContextManager[None]:
        """The workspace's exclusive lock (``federated.privacy.workspace_lock``): hold it from the budget check to
        the audit entry of a release. Excludes other processes and other threads; ``LockError`` after
        ``timeout`` seconds of waiting."""
        return workspace_lock(self.folder, timeout)

    def secret(self) -> bytes:
        """The workspace's node secret (``federated.privacy.node_secret``), created on first use.

        It keys the held-out split and the member groups; it is never logged or sent, and no run setting
        enters either, so the server can neither choose nor reproduce them.
        """
        return node_secret(self.folder)

    def _split(self, config: RunConfig, policy: Policy) -> tuple[list[ChatMessage], list[ChatMessage]]:
        """(train + canaries, held-out); ``policy`` gives the held-out fraction. ``config`` is not used: the split
        is the node's alone, whatever the run asks (``tests/unit/test_neighbouring.py`` checks it)."""
        train, held_out = self._split_files(policy)
        return [*train, *canary_messages(self.canaries)], held_out

    def _split_files(self, policy: Policy) -> tuple[list[ChatMessage], list[ChatMessage]]:
        """(train, held-out) of the messages in the workspace's data files, each message placed on its own by
        the node secret (``split_messages``): removing one message moves nothing else."""
        return load_split(self.folder / DATA_FOLDER, self.name, self.secret(), policy.held_out_fraction)

    def training_samples(self, task: Task, config: RunConfig, policy: Policy) -> TensorDataset:
        """The training split as DP samples: one per message, or one per member (at most k messages each).

        Guarantee (the neighbouring relation): under the message unit, removing one message from the data
        removes exactly its own sample, or nothing if it was held out; under the member unit, removing one
        member removes exactly that member's sample. Neither the split nor the groups depend on the run config.
        The task encodes each message from its own fields alone (``federated.tasks.base``), so this holds for
        every task.
        """
        train, _ = self._split(config, policy)
        if policy.privacy_unit == "message":
            return task.encode(train)
        return task.encode_groups(member_groups(train, policy.max_messages_per_member, self.secret()),
                                  per_group=policy.max_messages_per_member)

    def held_out_messages(self, config: RunConfig, policy: Policy) -> list[ChatMessage]:
        """The held-out split (never trained on); ``policy`` gives the held-out fraction."""
        return self._split(config, policy)[1]

    def generator(self, run_id: str, server_round: int) -> torch.Generator:
        """The generator for this release's DP sampling and noise: fresh OS randomness, unless the operator set
        ``repeatable-seed`` (then derived from it, the run id and the round: repeatable, not private)."""
        if self.repeatable_seed is None:
            return privacy_generator()
        digest = hashlib.sha256(f"{self.repeatable_seed}:{run_id}:{server_round}".encode()).digest()
        return repeatable_generator(int.from_bytes(digest[:8], "little"))

    @property
    def private(self) -> bool:
        """False when releases use the operator's repeatable seed (research runs): their noise is not secret."""
        return self.repeatable_seed is None


def member_groups(messages: list[ChatMessage], limit: int, secret: bytes) -> list[list[ChatMessage]]:
    """One group per member, in member-id order: at most ``limit`` of their messages, the rest unused.

    This is the member-level contribution bound. Which messages are kept is keyed per member: each of the
    member's messages is ranked by ``keyed_uniform(secret, MEMBER_GROUP_DOMAIN, message_identity(m))`` (the
    identity holds the member id; ties broken by the identity) and the ``limit`` lowest are kept, in rank
    order. Guarantee: a member's group depends only on the content of that member's messages and the
    secret, never on other members, timestamps, the input order or a run setting; so removing one member
    removes exactly its group and leaves every other group as it was. Without the secret the choice is
    unpredictable (HMAC as a PRF).
    """
    by_member: dict[str, list[ChatMessage]] = defaultdict(list)
    for message in messages:
        by_member[message.user].append(message)
    groups = []
    for member in sorted(by_member):
        ranked = sorted(by_member[member], key=lambda m: _rank(m, secret))
        groups.append(ranked[:limit])
    return groups


def _rank(message: ChatMessage, secret: bytes) -> tuple[float, bytes]:
    identity = message_identity(message)
    return keyed_uniform(secret, MEMBER_GROUP_DOMAIN, identity), identity


def canary_messages(texts: tuple[str, ...]) -> list[ChatMessage]:
    """Audit canaries as training messages, each from its own member (one privacy unit per canary copy)."""
    return [ChatMessage(ts=f"0.{i:06d}", user=f"audit-canary-{i}", channel=CANARY_CHANNEL, text=text)
            for i, text in enumerate(texts)]


def _repeatable_seed(value: object) -> int | None:
    if value is None:
        return None
    try:
        return int(str(value))
    except ValueError as exc:
        raise ConfigError(f"node config {REPEATABLE_SEED_KEY!r}: expected an integer, got {value!r}") from exc


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
