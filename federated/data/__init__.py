"""Workspace data sources: Slack exports, IRC chat logs, JSONL, a synthetic federation; local scrubbing.

Every source yields a ``Workspace``; data is read on the workspace's own node
and never leaves it. ``load_workspace`` is the one entry point a node uses: it
detects the layout, reports what it skipped, and scrubs personal identifiers.
"""

from federated.data.irc_corpus import PARTITIONS, IrcPartition, build_irc_workspaces
from federated.data.jsonl import read_jsonl
from federated.data.loader import detect_layout, load_workspace
from federated.data.manifest import MANIFEST_FILE, IrcManifest, read_irc_workspace, read_manifest
from federated.data.paths import DATA_ENV, irc_corpus_dir, resolve_data_root
from federated.data.records import ChatMessage, Workspace, keyed_uniform, message_identity, split_messages
from federated.data.scrub import ScrubOptions, scrub_workspace
from federated.data.slack_export import load_slack_export, read_slack_export
from federated.data.source import LoadReport, SkippedFile, SourceData
from federated.data.stats import WorkspaceStats, find_workspaces, workspace_stats
from federated.data.synthetic import (
    TOPICS,
    SyntheticSpec,
    Topic,
    generate_federation,
    generate_workspace,
    write_slack_export,
)

__all__ = [
    "DATA_ENV",
    "MANIFEST_FILE",
    "PARTITIONS",
    "TOPICS",
    "ChatMessage",
    "IrcManifest",
    "IrcPartition",
    "LoadReport",
    "ScrubOptions",
    "SkippedFile",
    "SourceData",
    "SyntheticSpec",
    "Topic",
    "Workspace",
    "WorkspaceStats",
    "build_irc_workspaces",
    "detect_layout",
    "find_workspaces",
    "generate_federation",
    "generate_workspace",
    "irc_corpus_dir",
    "keyed_uniform",
    "load_slack_export",
    "load_workspace",
    "message_identity",
    "read_irc_workspace",
    "read_jsonl",
    "read_manifest",
    "read_slack_export",
    "resolve_data_root",
    "scrub_workspace",
    "split_messages",
    "workspace_stats",
    "write_slack_export",
]
