"""Workspace data sources: in-memory records, Slack export loading, and a synthetic federation.

Every source yields a ``Workspace``; data is read on the workspace's own node
and never leaves it.
"""

from federated.data.records import ChatMessage, Workspace, split_messages
from federated.data.slack_export import load_slack_export
from federated.data.synthetic import (
    TOPICS,
    SyntheticSpec,
    Topic,
    generate_federation,
    generate_workspace,
    write_slack_export,
)

__all__ = [
    "TOPICS",
    "ChatMessage",
    "SyntheticSpec",
    "Topic",
    "Workspace",
    "generate_federation",
    "generate_workspace",
    "load_slack_export",
    "split_messages",
    "write_slack_export",
]
