"""A Slack export in the exact admin-export layout: every index, threads, subtypes, markup, unicode, bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from federated.data import SkippedFile, load_slack_export, load_workspace, read_slack_export
from federated.data.slack_export import KEPT_SUBTYPES
from federated.errors import DataError

ALICE, BOB, ZOE, BOT = "U01ALICE1", "U02BOBSMI", "U03ZOEKOW", "U04DEPLOY"
PARENT_TS = "1767571320.000300"

USERS = [
    {"id": ALICE, "team_id": "T01", "name": "alice", "deleted": False, "real_name": "Alice Martin", "is_bot": False,
     "profile": {"real_name": "Alice Martin", "display_name": "ali", "first_name": "Alice", "last_name": "Martin"}},
    {"id": BOB, "team_id": "T01", "name": "bob.smith", "deleted": False, "real_name": "Bob Smith",
     "profile": {"real_name": "Bob Smith", "display_name": "bobby"}},
    {"id": ZOE, "team_id": "T01", "name": "zoë", "deleted": True, "profile": {"real_name": "Zoë Kowalczyk",
                                                                              "display_name": ""}},
    {"id": BOT, "team_id": "T01", "name": "deploybot", "is_bot": True, "profile": {"real_name": "Deploy Bot"}},
]
CHANNELS = [
    {"id": "C01GENERAL", "name": "general", "created": 1767571200, "creator": ALICE, "is_archived": False,
     "is_general": True, "members": [ALICE, BOB, ZOE], "topic": {"value": "", "creator": "", "last_set": 0},
     "purpose": {"value": "", "creator": "", "last_set": 0}},
    {"id": "C02RANDOM", "name": "random", "created": 1767571200, "creator": ALICE, "members": [ALICE, ZOE]},
    {"id": "C03EMPTY", "name": "no-folder", "created": 1767571200, "creator": ALICE, "members": [ALICE]},
]
GROUPS = [{"id": "G01SECRET", "name": "secret-project", "created": 1767571200, "members": [ALICE, BOB]}]
MPIMS = [{"id": "G02MPIM", "name": "mpdm-alice--bob.smith--zoë-1", "created": 1767571200,
          "members": [ALICE, BOB, ZOE]}]
DMS = [{"id": "D01ALBOB", "created": 1767571200, "members": [ALICE, BOB]}]

GENERAL_DAY = [
    {"type": "message", "subtype": "channel_join", "user": ZOE, "text": f"<@{ZOE}> has joined the channel",
     "ts": "1767571200.000100"},
    {"type": "message", "user": ALICE, "ts": "1767571260.000200", "client_msg_id": "a1",
     "text": f"Welcome <@{ZOE}>! Docs: <https://wiki.example.com/start|the wiki> &amp; <#C02RANDOM|random> :tada:",
     "reactions": [{"name": "tada", "users": [BOB], "count": 1}]},
    {"type": "message", "user": BOB, "ts": PARENT_TS, "thread_ts": PARENT_TS, "reply_count": 2,
     "reply_users_count": 2, "latest_reply": "1767571440.000500", "reply_users": [ALICE, ZOE],
     "replies": [{"user": ALICE, "ts": "1767571380.000400"}, {"user": ZOE, "ts": "1767571440.000500"}],
     "text": "Deploy is at 10:30, ping me at bob@example.com or +1 5551234567"},
    {"type": "message", "user": ALICE, "ts": "1767571380.000400", "thread_ts": PARENT_TS, "parent_user_id": BOB,
     "text": "Thanks Bob, see &lt;config&gt; in <https://git.example.com/repo> and <#C02RANDOM>"},
    {"type": "message", "subtype": "thread_broadcast", "user": ZOE, "ts": "1767571440.000500",
     "thread_ts": PARENT_TS, "root": {"user": BOB, "ts": PARENT_TS}, "text": "Zoë here: works for me ✅"},
    {"type": "message", "subtype": "bot_message", "bot_id": "B01", "username": "deploy", "text": "Deployed v1.2.3",
     "ts": "1767571500.000600"},
    {"type": "message", "user": BOT, "bot_id": "B02", "text": "Build passed", "ts": "1767571560.000700"},
    {"type": "message", "subtype": "channel_topic", "user": ALICE, "text": "set the channel topic: Releases",
     "topic": "Releases", "ts": "1767571620.000800"},
    {"type": "message", "user": ZOE, "text": "café at 12? 日本語もOK", "ts": "1767571680.000900",
     "edited": {"user": ZOE, "ts": "1767571700.000000"}},
    {"type": "message", "subtype": "file_share", "user": BOB, "text": "notes from today", "upload": True,
     "files": [{"id": "F01", "name": "notes.pdf", "title": "Notes", "mimetype": "application/pdf"}],
     "ts": "1767571740.001000"},
    {"type": "message", "subtype": "file_share", "user": BOB, "text": "", "files": [{"id": "F02"}],
     "ts": "1767571800.001100"},
    {"type": "message", "user": ALICE, "ts": "1767571860.001200",
     "text": "<!here> release notes: <https://example.com/notes>",
     "attachments": [{"title": "Notes", "text": "attachment text is metadata", "fallback": "Notes"}]},
    {"type": "message", "subtype": "channel_leave", "user": BOB, "text": f"<@{BOB}> has left the channel",
     "ts": "1767571920.001300"},
    {"type": "message", "subtype": "tombstone", "hidden": True, "user": "USLACKBOT",
     "text": "This message was deleted.", "ts": "1767571980.001400"},
    {"type": "message", "text": "orphan text without a user", "ts": "1767572040.001500"},
    {"type": "message", "user": "USLACKBOT", "text": "Reminder: standup", "ts": "1767572100.001600"},
    {"type": "reaction_added", "user": BOB, "text": "not a message", "ts": "1767572160.001700"},
]
RANDOM_DAY = [{"type": "message", "user": ZOE, "text": f"<@{ALICE}|alice> lunch? :pizza: 🍕",
               "ts": "1767657600.000100"}]
SECRET_DAY = [{"type": "message", "user": ALICE, "text": "private plan for Q3", "ts": "1767571300.000100"}]
MPIM_DAY = [{"type": "message", "user": BOB, "text": "group dm text", "ts": "1767571300.000100"}]
DM_DAY = [{"type": "message", "user": ALICE, "text": "dm text with &amp;amp; literal", "ts": "1767571300.000100"}]

# (channel, raw text, rendered text, scrubbed text) of every kept message, in canonical (channel, ts) order.
EXPECTED = [
    ("D01ALBOB", "dm text with &amp;amp; literal", "dm text with &amp; literal", "dm text with &amp; literal"),
    ("general", GENERAL_DAY[1]["text"], "Welcome @zoë! Docs: the wiki & #random :tada:",
     "Welcome <user>! Docs: the wiki & #random :tada:"),
    ("general", GENERAL_DAY[2]["text"], GENERAL_DAY[2]["text"], "Deploy is at 10:30, ping me at <email> or +1 <number>"),
    ("general", GENERAL_DAY[3]["text"], "Thanks Bob, see <config> in https://git.example.com/repo and #random",
     "Thanks <name>, see <config> in <url> and #random"),
    ("general", "Zoë here: works for me ✅", "Zoë here: works for me ✅", "<name> here: works for me ✅"),
    ("general", "café at 12? 日本語もOK", "café at 12? 日本語もOK", "café at 12? 日本語もOK"),
    ("general", "notes from today", "notes from today", "notes from today"),
    ("general", GENERAL_DAY[11]["text"], "@here release notes: https://example.com/notes",
     "@here release notes: <url>"),
    ("mpdm-alice--bob.smith--zoë-1", "group dm text", "group dm text", "group dm text"),
    ("random", RANDOM_DAY[0]["text"], "@alice lunch? :pizza: 🍕", "<user> lunch? :pizza: 🍕"),
    ("secret-project", "private plan for Q3", "private plan for Q3", "private plan for Q3"),
]
SKIPPED = {"bot": 2, "empty_text": 1, "no_user": 1, "not_message": 1, "subtype:bot_message": 1,
           "subtype:channel_join": 1, "subtype:channel_leave": 1, "subtype:channel_topic": 1, "subtype:tombstone": 1}


def _write(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=4, ensure_ascii=False), encoding="utf-8")


@pytest.fixture()
def export(tmp_path: Path) -> Path:
    root = tmp_path / "Acme Slack export Jan 5 2026 - Jan 6 2026"
    _write(root / "users.json", USERS)
    _write(root / "channels.json", CHANNELS)
    _write(root / "groups.json", GROUPS)
    _write(root / "mpims.json", MPIMS)
    _write(root / "dms.json", DMS)
    _write(root / "integration_logs.json", {"ok": True, "logs": []})
    _write(root / "general" / "2026-01-05.json", GENERAL_DAY)
    _write(root / "general" / "2026-01-06.json", [])  # an empty day
    _write(root / "random" / "2026-01-06.json", RANDOM_DAY)
    (root / "random" / ".DS_Store").write_bytes(b"\0\1")
    _write(root / "secret-project" / "2026-01-05.json", SECRET_DAY)
    _write(root / "mpdm-alice--bob.smith--zoë-1" / "2026-01-05.json", MPIM_DAY)
    _write(root / "D01ALBOB" / "2026-01-05.json", DM_DAY)
    _write(root / "C09UNLISTED" / "2026-01-05.json", [{"type": "message", "user": ALICE, "text": "unlisted",
                                                        "ts": "1767571300.000100"}])
    return root


def test_exact_messages_counts_and_conversation_folders(export: Path) -> None:
    source = read_slack_export(export, render_markup=False)
    ws = source.workspace
    assert ws.channels == ("general", "random", "no-folder", "secret-project", "mpdm-alice--bob.smith--zoë-1",
                           "D01ALBOB")
    assert ws.members == (ALICE, BOB, ZOE, BOT)
    assert ws.member_names == ("alice", "bob.smith", "zoë", "deploybot")
    assert [(m.channel, m.text) for m in ws.messages] == [(c, raw) for c, raw, _, _ in EXPECTED]
    assert ws.report is not None
    assert ws.report.layout == "slack"
    assert ws.report.loaded == 11
    assert ws.report.skipped == SKIPPED
    assert ws.report.skipped_files == (
        SkippedFile(export / "C09UNLISTED", "folder not listed in channels.json, groups.json, mpims.json, dms.json"),
        SkippedFile(export / "integration_logs.json", "not part of the message layout"),
        SkippedFile(export / "random" / ".DS_Store", "not a JSON day file"),
    )


def test_names_are_the_people_in_users_json_not_bots(export: Path) -> None:
    names = read_slack_export(export).names
    assert names == {"alice", "Alice Martin", "ali", "Alice", "Martin", "bob.smith", "Bob Smith", "bobby", "zoë",
                     "Zoë Kowalczyk"}


def test_threads_parent_reply_and_broadcast(export: Path) -> None:
    ws = load_slack_export(export)
    by_ts = {m.ts: m for m in ws.messages if m.channel == "general"}
    parent, reply, broadcast = by_ts[PARENT_TS], by_ts["1767571380.000400"], by_ts["1767571440.000500"]
    assert parent.thread_ts == PARENT_TS and not parent.is_reply
    assert reply.thread_ts == PARENT_TS and reply.is_reply and reply.user == ALICE
    assert broadcast.thread_ts == PARENT_TS and broadcast.is_reply and broadcast.user == ZOE
    assert by_ts["1767571680.000900"].thread_ts is None  # an edited message is kept, with its final text


def test_markup_rendered_as_displayed(export: Path) -> None:
    ws = load_workspace(export, scrub=False)
    assert [(m.channel, m.text) for m in ws.messages] == [(c, rendered) for c, _, rendered, _ in EXPECTED]


def test_scrubbed_by_default_before_anything_else_sees_the_text(export: Path) -> None:
    ws = load_workspace(export)
    assert [(m.channel, m.text) for m in ws.messages] == [(c, scrubbed) for c, _, _, scrubbed in EXPECTED]
    assert ws.report is not None
    assert ws.report.scrubbed == {"<email>": 1, "<name>": 2, "<number>": 1, "<url>": 2, "<user>": 2}
    assert ws.report.skipped == SKIPPED


def test_default_load_keeps_slack_text_exactly(export: Path) -> None:
    raw = load_slack_export(export)
    assert [m.text for m in raw.messages] == [raw_text for _, raw_text, _, _ in EXPECTED]


def test_kept_subtypes_can_be_widened(export: Path) -> None:
    ws = load_slack_export(export, keep_subtypes=KEPT_SUBTYPES | {"channel_topic"})
    assert "set the channel topic: Releases" in ws.texts
    assert ws.report is not None and "subtype:channel_topic" not in ws.report.skipped
    assert len(ws.messages) == 12


def test_malformed_day_file_names_file_and_line(export: Path) -> None:
    bad = export / "random" / "2026-01-07.json"
    bad.write_text('[\n  {"type": "message",\n   "user": "U01ALICE1" "text": "oops"}\n]\n', encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_workspace(export)
    assert str(bad) in str(info.value) and "line 3" in str(info.value)


def test_skip_bad_files_goes_on_and_lists_each_skipped_file(export: Path) -> None:
    bad_json = export / "random" / "2026-01-07.json"
    bad_json.write_text('[{"type": "message",', encoding="utf-8")
    bad_entry = export / "general" / "2026-01-07.json"
    _write(bad_entry, [{"type": "message", "user": ALICE, "text": "fine", "ts": "1767744000.000100"}, "not an object"])
    ws = load_workspace(export, skip_bad_files=True)
    assert len(ws.messages) == 11  # the good entry of the bad file is not loaded either: a bad file is skipped whole
    assert ws.report is not None
    reasons = {f.path: f.reason for f in ws.report.skipped_files}
    assert reasons[bad_entry] == f"{bad_entry}: entry 1 is not a JSON object"
    assert reasons[bad_json].startswith(f"{bad_json}: malformed JSON at line 1")
    assert len(ws.report.skipped_files) == 5


def test_index_files_are_required_even_when_skipping(export: Path) -> None:
    (export / "groups.json").write_text("[{", encoding="utf-8")
    with pytest.raises(DataError, match=r"groups\.json: malformed JSON at line 1"):
        load_workspace(export, skip_bad_files=True)


def test_conversation_listed_twice_is_an_error(export: Path) -> None:
    _write(export / "groups.json", [{"id": "G09", "name": "general"}])
    with pytest.raises(DataError, match=r"groups\.json: entry 0: conversation folder 'general' is listed twice"):
        load_slack_export(export)


def test_dm_folder_must_be_a_plain_folder_name(export: Path) -> None:
    _write(export / "dms.json", [{"id": "../escape", "members": [ALICE]}])
    with pytest.raises(DataError, match=r"dms\.json: entry 0 has no usable 'id'"):
        load_slack_export(export)
