"""load_slack_export on small hand-written exports: what is kept, its order, and the errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from federated.data import ChatMessage, load_slack_export
from federated.errors import DataError, OptinError

USERS = [
    {"id": "U0ALICE1", "name": "alice", "real_name": "Alice A"},
    {"id": "U0BOB222", "name": "bob", "real_name": "Bob B"},
    {"id": "U0NONAME"},
]
CHANNELS = [
    {"id": "C01", "name": "general"},
    {"id": "C02", "name": "random"},
    {"id": "C03", "name": "no-folder"},
]
GENERAL_DAY1 = [
    {"type": "message", "user": "U0ALICE1", "text": "good morning everyone!", "ts": "1767600000.000200"},
    {"type": "message", "subtype": "channel_join", "user": "U0BOB222", "text": "<@U0BOB222> has joined the channel", "ts": "1767600001.000000"},
    {"type": "message", "user": "U0BOB222", "text": "", "ts": "1767600002.000000"},
    {"type": "message", "user": "U0BOB222", "text": "   ", "ts": "1767600002.500000"},
    {"type": "message", "user": "U0BOB222", "text": "anyone tried the new oven?", "ts": "1767600003.000000",
     "thread_ts": "1767600003.000000", "reply_count": 1},
    {"type": "message", "user": "U0ALICE1", "text": "yes, works great", "ts": "1767600100.000000",
     "thread_ts": "1767600003.000000", "parent_user_id": "U0BOB222"},
    {"type": "message", "subtype": "bot_message", "bot_id": "B01", "text": "deploy done", "ts": "1767600200.000000"},
    {"type": "not_a_message", "user": "U0ALICE1", "text": "ignored", "ts": "1767600300.000000"},
]
GENERAL_DAY0 = [  # an earlier day, written second: loading must still order by ts
    {"type": "message", "user": "U0BOB222", "text": "first message ever", "ts": "1767500000.000001"},
]


def _write(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2), encoding="utf-8")


@pytest.fixture()
def export(tmp_path: Path) -> Path:
    root = tmp_path / "acme"
    _write(root / "users.json", USERS)
    _write(root / "channels.json", CHANNELS)
    _write(root / "general" / "2026-01-05.json", GENERAL_DAY1)
    _write(root / "general" / "2026-01-04.json", GENERAL_DAY0)
    _write(root / "random" / "2026-01-05.json", [])
    _write(root / "random" / "2026-01-06.json", [
        {"type": "message", "user": "U0ALICE1", "text": "lunch?", "ts": "1767700000.000000"},
    ])
    _write(root / "D0SOMEDM" / "2026-01-05.json", [  # not a channel in channels.json: ignored
        {"type": "message", "user": "U0ALICE1", "text": "private", "ts": "1767600000.000000"},
    ])
    return root


def test_loads_only_plain_user_messages_in_channel_then_ts_order(export: Path) -> None:
    ws = load_slack_export(export)
    assert ws.name == "acme"
    assert ws.members == ("U0ALICE1", "U0BOB222", "U0NONAME")
    assert ws.member_names == ("alice", "bob", "U0NONAME")
    assert ws.channels == ("general", "random", "no-folder")
    assert len(ws.messages) == 5
    assert ws.texts == [
        "first message ever",
        "good morning everyone!",
        "anyone tried the new oven?",
        "yes, works great",
        "lunch?",
    ]
    assert [m.channel for m in ws.messages] == ["general"] * 4 + ["random"]


def test_thread_fields_are_kept(export: Path) -> None:
    ws = load_slack_export(export)
    by_text = {m.text: m for m in ws.messages}
    parent, reply = by_text["anyone tried the new oven?"], by_text["yes, works great"]
    assert parent == ChatMessage("1767600003.000000", "U0BOB222", "general", "anyone tried the new oven?",
                                 thread_ts="1767600003.000000")
    assert not parent.is_reply
    assert reply.thread_ts == parent.ts and reply.is_reply
    assert by_text["lunch?"].thread_ts is None


def test_name_can_be_given(export: Path) -> None:
    assert load_slack_export(export, name="ws07-acme").name == "ws07-acme"


def test_missing_folder_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match="workspace data folder not found") as info:
        load_slack_export(missing)
    assert str(missing) in str(info.value)
    assert isinstance(info.value, OptinError)


@pytest.mark.parametrize("name", ["users.json", "channels.json"])
def test_missing_index_file_names_it_and_the_layout(export: Path, name: str) -> None:
    (export / name).unlink()
    with pytest.raises(DataError) as info:
        load_slack_export(export)
    message = str(info.value)
    assert str(export / name) in message
    assert "Slack's export layout" in message


def test_malformed_json_names_file_and_line(export: Path) -> None:
    bad = export / "general" / "2026-01-07.json"
    bad.write_text('[\n  {"type": "message",\n   "user": "U0ALICE1" "text": "oops"}\n]\n', encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_slack_export(export)
    message = str(info.value)
    assert str(bad) in message
    assert "line 3" in message


def test_malformed_users_json_names_file_and_line(export: Path) -> None:
    (export / "users.json").write_text('[\n{"id": "U1",}\n]', encoding="utf-8")
    with pytest.raises(DataError, match=r"users\.json.*line 2"):
        load_slack_export(export)


def test_day_file_that_is_not_a_list(export: Path) -> None:
    bad = export / "random" / "2026-01-08.json"
    _write(bad, {"messages": []})
    with pytest.raises(DataError, match="expected a JSON list") as info:
        load_slack_export(export)
    assert str(bad) in str(info.value)


def test_bad_timestamp_names_the_file(export: Path) -> None:
    bad = export / "random" / "2026-01-09.json"
    _write(bad, [{"type": "message", "user": "U0ALICE1", "text": "hi there", "ts": "yesterday"}])
    with pytest.raises(DataError, match="ts") as info:
        load_slack_export(export)
    assert str(bad) in str(info.value)


def test_channel_name_cannot_escape_the_export(export: Path, tmp_path: Path) -> None:
    _write(tmp_path / "outside" / "2026-01-05.json",
           [{"type": "message", "user": "U0ALICE1", "text": "outside text", "ts": "1767600000.000000"}])
    _write(export / "channels.json", [{"id": "C9", "name": "../outside"}])
    with pytest.raises(DataError, match=r"channels\.json"):
        load_slack_export(export)


def test_users_entry_without_id(export: Path) -> None:
    _write(export / "users.json", [{"name": "ghost"}])
    with pytest.raises(DataError, match=r"users\.json: entry 0"):
        load_slack_export(export)


def test_a_file_share_with_a_null_bot_id_is_a_persons_message(tmp_path: Path) -> None:
    root = tmp_path / "files"
    _write(root / "users.json", USERS)
    _write(root / "channels.json", CHANNELS[:1])
    _write(root / "general" / "2026-01-05.json", [
        {"type": "message", "subtype": "file_share", "user": "U0ALICE1", "bot_id": None, "text": "the slides",
         "ts": "1767600000.000000", "files": [{"id": "F01"}]},
        {"type": "message", "subtype": "file_share", "user": "U0BOB222", "bot_id": "B02", "text": "bot upload",
         "ts": "1767600001.000000"},
        {"type": "message", "user": "U0BOB222", "bot_id": "", "text": "plain", "ts": "1767600002.000000"},
    ])
    assert load_slack_export(root).texts == ["the slides", "plain"]
