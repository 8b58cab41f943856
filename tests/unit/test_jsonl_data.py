"""JSONL workspaces: timestamp forms, order, counts, and errors with file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from federated.data import load_workspace, read_jsonl
from federated.errors import DataError


def _jsonl(path: Path, lines: list[object]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line, ensure_ascii=False)
                              for line in lines) + "\n", encoding="utf-8")
    return path


def test_messages_in_channel_then_time_order_with_every_ts_form(tmp_path: Path) -> None:
    _jsonl(tmp_path / "b.jsonl", [
        {"ts": "1700000000.000100", "user": "alice", "channel": "general", "text": "slack ts"},
        {"ts": 1700000001, "user": "bob", "channel": "general", "text": "epoch int", "extra": "ignored"},
        {"ts": 1700000000.5, "user": "bob", "channel": "general", "text": "epoch float",
         "thread_ts": "1700000000.000100"},
    ])
    _jsonl(tmp_path / "a.jsonl", [
        {"ts": "2023-11-14T22:13:20Z", "user": "zoë", "channel": "random", "text": "ISO with Z 🎉"},
        "",
        {"ts": "2023-11-14T23:13:20+01:00", "user": "alice", "channel": "random", "text": "ISO with offset"},
        {"ts": "2023-11-14T22:13:21", "user": "alice", "channel": "random", "text": "   "},
    ])
    (tmp_path / "notes.txt").write_text("not read", encoding="utf-8")
    source = read_jsonl(tmp_path, name="team")
    ws = source.workspace
    assert ws.name == "team"
    assert [(m.channel, m.ts, m.user, m.text, m.thread_ts) for m in ws.messages] == [
        ("general", "1700000000.000100", "alice", "slack ts", None),
        ("general", "1700000000.500000", "bob", "epoch float", "1700000000.000100"),
        ("general", "1700000001.000000", "bob", "epoch int", None),
        ("random", "1700000000.000000", "zoë", "ISO with Z 🎉", None),
        ("random", "1700000000.000000", "alice", "ISO with offset", None),
    ]
    assert ws.members == ("zoë", "alice", "bob")  # files in name order: a.jsonl first
    assert ws.channels == ("random", "general")
    assert source.names == frozenset()  # no roster.txt: names never come from the messages' users
    (tmp_path / "roster.txt").write_text("# nicks\nzoë\n\n  alice \n", encoding="utf-8")
    assert read_jsonl(tmp_path).names == {"zoë", "alice"}
    assert ws.report is not None
    assert (ws.report.layout, ws.report.loaded, ws.report.skipped) == ("jsonl", 5, {"blank_line": 1,
                                                                                    "empty_text": 1})


@pytest.mark.parametrize(("line", "message"), [
    ('{"ts": 1, "user": "a", "channel": "c", "text": "x"', "line 2: malformed JSON at column"),
    ('["ts", 1]', "line 2: expected a JSON object, got list"),
    ('{"ts": 1, "user": "a", "text": "x"}', "line 2: missing key 'channel'"),
    ('{"ts": 1, "user": 7, "channel": "c", "text": "x"}', "line 2: key 'user' expected a string, got 7"),
    ('{"ts": "yesterday", "user": "a", "channel": "c", "text": "x"}', "line 2: key 'ts' expected a Slack timestamp"),
    ('{"ts": -5, "user": "a", "channel": "c", "text": "x"}', "line 2: key 'ts' expected"),
    ('{"ts": 1, "user": "", "channel": "c", "text": "x"}', "line 2: keys 'user' and 'channel' must not be empty"),
])
def test_bad_line_names_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = _jsonl(tmp_path / "log.jsonl", [{"ts": 1, "user": "a", "channel": "c", "text": "ok"}, line])
    with pytest.raises(DataError, match=message) as info:
        load_workspace(tmp_path)
    assert str(path) in str(info.value)


def test_skip_bad_files_skips_the_whole_file_and_lists_it(tmp_path: Path) -> None:
    _jsonl(tmp_path / "good.jsonl", [{"ts": 1, "user": "alice", "channel": "c", "text": "hello bob"},
                                     {"ts": 2, "user": "bob", "channel": "c", "text": "   "}])
    bad = _jsonl(tmp_path / "bad.jsonl", [{"ts": 3, "user": "carol", "channel": "c", "text": "lost"}, "oops"])
    (tmp_path / "roster.txt").write_text("bob\n", encoding="utf-8")
    ws = load_workspace(tmp_path, skip_bad_files=True)
    assert ws.texts == ["hello <name>"]
    assert ws.report is not None
    assert ws.report.skipped == {"empty_text": 1}  # nothing of the bad file is counted as loaded or skipped
    assert [(f.path, f.reason) for f in ws.report.skipped_files] == [
        (bad, f"{bad}: line 2: malformed JSON at column 1: Expecting value")]
