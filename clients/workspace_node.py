"""Which workspace a node serves, and access to its policy and its messages.

A node's workspace folder holds ``policy.toml`` and ``data/`` (a Slack
admin-export). The folder comes from the node config key ``workspace`` (how an
operator starts a SuperNode, and the in-process mode), or, in Flower's
simulation, from the run config's ``workspaces-root``: partition ``i`` serves
the ``i``-th sub-folder in sorted order.
Messages are read only through ``load_split``, which the ClientApp calls only
after consent was checked.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from flwr.app import Context

from federated.config import RunConfig
from federated.data import load_slack_export, split_messages
from federated.errors import ConfigError, DataError
from federated.privacy.policy import POLICY_FILE, ConsentDecision, decide_consent

DATA_FOLDER = "data"


@dataclass(frozen=True)
class WorkspaceNode:
    """One workspace as its node sees it."""

    folder: Path

    @classmethod
    def from_context(cls, context: Context) -> WorkspaceNode:
        """Resolve the workspace folder from the node config (or the simulation partition)."""
        if "workspace" in context.node_config:
            return cls(Path(str(context.node_config["workspace"])))
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
        return cls(folders[index])

    @property
    def name(self) -> str:
        return self.folder.name

    def consent(self) -> ConsentDecision:
        """Consent from the policy file, re-read now."""
        return decide_consent(self.folder / POLICY_FILE)

    def load_split(self, config: RunConfig, held_out: bool) -> list[str]:
        """The texts of the training split, or of the held-out split when ``held_out``."""
        workspace = load_slack_export(self.folder / DATA_FOLDER, name=self.name)
        train, test = split_messages(list(workspace.messages), config.test_fraction, config.seed)
        return [m.text for m in (test if held_out else train)]

    def seed_for(self, config: RunConfig, server_round: int) -> int:
        """A seed unique to (run seed, workspace, round), stable across processes."""
        digest = hashlib.sha256(f"{config.seed}:{self.name}:{server_round}".encode()).digest()
        return int.from_bytes(digest[:8], "little")
