"""load_workspace: layout detection, errors, the data root, and the node reading scrubbed text only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clients.workspace_node import DATA_FOLDER, WorkspaceNode
from federated.config import RunConfig
from federated.data import (
    DATA_ENV,
    ScrubOptions,
    SyntheticSpec,
    detect_layout,
    find_workspaces,
    generate_federation,
    load_slack_export,
    load_workspace,
    resolve_data_root,
    workspace_stats,
)
from federated.data.paths import repo_root
from federated.errors import DataError
from federated.privacy.policy import Policy
from federated.tasks import get_task

RECORDS = [
    {"ts": 1700000000 + i, "user": user, "channel": "general", "text": text}
    for i, (user, text) in enumerate([("alice", "hi bob, mail me at alice@example.com"),
                                      ("bob", "alice: see https://example.com/x"),
                                      ("alice", "my number is 5551234567"),
                                      ("bob", "thanks alice")] * 10)
]


def _jsonl_workspace(folder: Path) -> Path:
    data = folder / DATA_FOLDER
    data.mkdir(parents=True)
    (data / "messages.jsonl").write_text("\n".join(json.dumps(r) for r in RECORDS) + "\n", encoding="utf-8")
    (data / "roster.txt").write_text("alice\nbob\n", encoding="utf-8")  # the names to scrub
    return folder


def test_detects_each_layout(tmp_path: Path) -> None:
    (slack,) = generate_federation(tmp_path / "slack", SyntheticSpec(num_workspaces=1, min_messages=5,
                                                                     max_messages=5))
    jsonl = _jsonl_workspace(tmp_path / "jsonl")
    irc = tmp_path / "irc" / DATA_FOLDER
    irc.mkdir(parents=True)
    (irc / "source.toml").write_text('format = "irc"\n', encoding="utf-8")
    assert detect_layout(slack / DATA_FOLDER) == "slack"
    assert detect_layout(jsonl / DATA_FOLDER) == "jsonl"
    assert detect_layout(irc) == "irc"


def test_unknown_layout_names_the_folder_and_what_it_holds(tmp_path: Path) -> None:
    (tmp_path / "export.csv").write_text("ts,user,text\n", encoding="utf-8")
    with pytest.raises(DataError, match="unknown workspace data layout") as info:
        load_workspace(tmp_path)
    assert str(tmp_path) in str(info.value) and "found export.csv" in str(info.value)
    with pytest.raises(DataError, match=f"workspace data folder not found: {tmp_path / 'nowhere'}"):
        load_workspace(tmp_path / "nowhere")


def test_synthetic_workspaces_load_with_the_same_messages_scrubbed(tmp_path: Path) -> None:
    (folder,) = generate_federation(tmp_path, SyntheticSpec(num_workspaces=1, min_messages=200, max_messages=200))
    raw = load_slack_export(folder / DATA_FOLDER, name=folder.name)
    scrubbed = load_workspace(folder / DATA_FOLDER, name=folder.name)
    assert [(m.ts, m.user, m.channel, m.thread_ts) for m in scrubbed.messages] == [
        (m.ts, m.user, m.channel, m.thread_ts) for m in raw.messages]
    assert any("<@U0" in t for t in raw.texts)  # the generator writes Slack mentions ...
    assert not any("<@" in t or "@U0" in t for t in scrubbed.texts)  # ... which never reach a task
    assert scrubbed.report is not None and scrubbed.report.scrubbed["<user>"] == sum(
        t.count("<@U0") for t in raw.texts)
    assert load_workspace(folder / DATA_FOLDER, scrub=ScrubOptions(mentions=False)).texts != scrubbed.texts


def test_the_node_only_ever_encodes_scrubbed_text(tmp_path: Path) -> None:
    node = WorkspaceNode(_jsonl_workspace(tmp_path / "team"))
    config, policy = RunConfig(seq_len=64), Policy(consent=True, held_out_fraction=0.25)
    samples = node.training_samples(get_task("nextchar", 64), config, policy)
    encoded = [bytes(b for b in row.tolist() if 0 <= b < 256).decode("utf-8") for row in samples.tensors[1]]
    held_out = _held_texts(node, config, policy)
    assert len(encoded) + len(held_out) == len(RECORDS)
    for text in encoded + held_out:
        for secret in ("alice", "bob", "example.com", "5551234567"):
            assert secret not in text
    assert "<name>: see <url>" in encoded + held_out


def test_data_root_option_then_env_then_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(DATA_ENV, raising=False)
    assert resolve_data_root() == repo_root().parent / "shared" / "data"
    assert (repo_root() / "federated" / "data" / "paths.py").is_file()
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "env"))
    assert resolve_data_root() == tmp_path / "env"
    assert resolve_data_root(tmp_path / "cli") == tmp_path / "cli"


def test_stats_for_a_folder_of_workspaces_one_workspace_or_a_data_folder(tmp_path: Path) -> None:
    _jsonl_workspace(tmp_path / "all" / "team-b")
    _jsonl_workspace(tmp_path / "all" / "team-a")
    (tmp_path / "all" / "notes").mkdir()  # not a workspace: no data/ folder
    assert [name for name, _ in find_workspaces(tmp_path / "all")] == ["team-a", "team-b"]
    (row,) = workspace_stats(tmp_path / "all" / "team-a")
    assert (row.name, row.layout, row.messages, row.members, row.channels) == ("team-a", "jsonl", 40, 2, 1)
    assert row.characters == sum(len(t) for t in load_workspace(tmp_path / "all" / "team-a" / DATA_FOLDER).texts)
    assert row.characters < sum(len(r["text"]) for r in RECORDS)  # counted as training sees it: scrubbed
    (raw,) = workspace_stats(tmp_path / "all" / "team-a" / DATA_FOLDER, scrub=False)
    assert raw.characters == sum(len(r["text"]) for r in RECORDS)
    with pytest.raises(DataError, match="no workspace found"):
        find_workspaces(tmp_path / "all" / "notes")


def _held_texts(node: WorkspaceNode, config: RunConfig, policy: Policy) -> list[str]:
    return [m.text for m in node.held_out_messages(config, policy)]
