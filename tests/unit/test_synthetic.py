"""The synthetic federation: determinism, round trip through Slack's layout, non-IID-ness, and splits."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from federated.data import (
    TOPICS,
    ChatMessage,
    SyntheticSpec,
    Workspace,
    generate_federation,
    generate_workspace,
    load_slack_export,
    split_messages,
    write_slack_export,
)
from federated.errors import ConfigError, DataError

SMALL = SyntheticSpec(num_workspaces=3, seed=7, min_messages=150, max_messages=400)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _words(texts: list[str]) -> Counter[str]:
    return Counter(w for t in texts for w in re.findall(r"[a-z']+", t.lower()))


# --- determinism ---------------------------------------------------------------------------


def test_same_spec_gives_identical_bytes(tmp_path: Path) -> None:
    a = generate_federation(tmp_path / "a", SMALL)
    b = generate_federation(tmp_path / "b", SMALL)
    assert [p.name for p in a] == [p.name for p in b]
    tree_a, tree_b = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    assert tree_a.keys() == tree_b.keys()
    assert len(tree_a) > 3 * 3  # users, channels and several day files per workspace
    assert tree_a == tree_b


def test_different_seed_gives_different_data(tmp_path: Path) -> None:
    generate_federation(tmp_path / "a", SMALL)
    generate_federation(tmp_path / "b", SyntheticSpec(num_workspaces=3, seed=8, min_messages=150, max_messages=400))
    tree_a, tree_b = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    for name in ("ws00-cooking/data/users.json", "ws01-devops/data/users.json"):
        assert tree_a[name] != tree_b[name]
    assert generate_workspace(0, SMALL).texts != generate_workspace(
        0, SyntheticSpec(num_workspaces=3, seed=8, min_messages=150, max_messages=400)
    ).texts


def test_workspace_does_not_depend_on_the_others() -> None:
    few = SyntheticSpec(num_workspaces=3, seed=7, min_messages=150, max_messages=400)
    many = SyntheticSpec(num_workspaces=20, seed=7, min_messages=150, max_messages=400)
    assert generate_workspace(2, few) == generate_workspace(2, many)


def test_federation_folders_names_and_layout(tmp_path: Path) -> None:
    folders = generate_federation(tmp_path, SMALL)
    assert [p.name for p in folders] == ["ws00-cooking", "ws01-devops", "ws02-gardening"]
    assert folders == sorted(folders)
    assert all(p.parent == tmp_path for p in folders)
    for folder in folders:
        assert sorted(p.name for p in folder.iterdir()) == ["data"]  # no policy file
        data = folder / "data"
        assert (data / "users.json").is_file() and (data / "channels.json").is_file()
        for day_file in data.glob("*/*.json"):
            assert re.fullmatch(r"\d{4}-\d{2}-\d{2}\.json", day_file.name)


def test_names_sort_in_index_order_beyond_100() -> None:
    spec = SyntheticSpec(num_workspaces=101, min_messages=1, max_messages=1)
    names = [generate_workspace(i, spec).name for i in (0, 9, 10, 100)]
    assert names == sorted(names)
    assert names[0].startswith("ws000-")


# --- round trip -----------------------------------------------------------------------------


def test_round_trip_through_slack_layout(tmp_path: Path) -> None:
    folders = generate_federation(tmp_path, SMALL)
    for index, folder in enumerate(folders):
        expected = generate_workspace(index, SMALL)
        loaded = load_slack_export(folder / "data", name=folder.name)
        assert loaded.members == expected.members
        assert loaded.member_names == expected.member_names
        assert loaded.channels == expected.channels
        assert loaded.messages == expected.messages
        assert loaded == expected


def test_write_refuses_non_empty_folder(tmp_path: Path) -> None:
    ws = generate_workspace(0, SMALL)
    (tmp_path / "keep.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(DataError, match="non-empty"):
        write_slack_export(ws, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_write_then_load_a_hand_made_workspace(tmp_path: Path) -> None:
    ws = Workspace(
        name="tiny",
        members=("U0AAAAAA", "U0BBBBBB"),
        channels=("general", "empty"),
        messages=(
            ChatMessage("1767571200.000001", "U0AAAAAA", "general", "hello there, world", "1767571200.000001"),
            ChatMessage("1767657600.000000", "U0BBBBBB", "general", "a reply the next day", "1767571200.000001"),
        ),
    )
    write_slack_export(ws, tmp_path / "tiny")
    assert sorted(p.name for p in (tmp_path / "tiny" / "general").iterdir()) == ["2026-01-05.json", "2026-01-06.json"]
    assert not (tmp_path / "tiny" / "empty").exists()
    loaded = load_slack_export(tmp_path / "tiny")
    assert loaded.messages == ws.messages
    assert loaded.member_names == ("u0aaaaaa", "u0bbbbbb")


def test_thread_fields_in_written_json(tmp_path: Path) -> None:
    ws = generate_workspace(0, SMALL)
    write_slack_export(ws, tmp_path / "ws")
    entries = [e for f in sorted((tmp_path / "ws").glob("*/*.json")) for e in json.loads(f.read_text("utf-8"))]
    assert len(entries) == len(ws.messages)
    by_ts = {e["ts"]: e for e in entries}
    replies = [e for e in entries if "thread_ts" in e and e["thread_ts"] != e["ts"]]
    parents = [e for e in entries if e.get("thread_ts") == e["ts"]]
    assert replies and parents
    for reply in replies:
        parent = by_ts[reply["thread_ts"]]
        assert reply["parent_user_id"] == parent["user"]
        assert float(reply["ts"]) > float(parent["ts"])
        assert "reply_count" not in reply
    counts = Counter(r["thread_ts"] for r in replies)
    for parent in parents:
        assert parent["reply_count"] == counts[parent["ts"]] >= 1
        assert "parent_user_id" not in parent
    plain = [e for e in entries if "thread_ts" not in e]
    assert plain and all("reply_count" not in e for e in plain)
    for entry in entries:
        assert entry["type"] == "message" and "subtype" not in entry


def test_day_files_group_by_utc_day(tmp_path: Path) -> None:
    write_slack_export(generate_workspace(1, SMALL), tmp_path / "ws")
    for day_file in (tmp_path / "ws").glob("*/*.json"):
        entries = json.loads(day_file.read_text("utf-8"))
        assert entries, day_file
        assert [e["ts"] for e in entries] == sorted((e["ts"] for e in entries), key=float)
        for e in entries:
            day = dt.datetime.fromtimestamp(int(e["ts"].split(".")[0]), tz=dt.timezone.utc).date()
            assert f"{day.isoformat()}.json" == day_file.name


# --- content ------------------------------------------------------------------------------


def test_message_shape_and_thread_share() -> None:
    spec = SyntheticSpec(num_workspaces=4, seed=3)
    start = dt.datetime(2026, 1, 5, tzinfo=dt.timezone.utc).timestamp()
    replies = total = 0
    for i in range(spec.num_workspaces):
        ws = generate_workspace(i, spec)
        assert spec.min_messages <= len(ws.messages) <= spec.max_messages
        assert 5 <= len(ws.members) <= 25 and len(set(ws.members)) == len(ws.members)
        assert all(re.fullmatch(r"U0[A-Z0-9]{6}", m) for m in ws.members)
        assert 4 <= len(ws.channels) <= 6
        members = set(ws.members)
        by_key = {(m.channel, m.ts): m for m in ws.messages}
        assert len(by_key) == len(ws.messages)
        assert list(ws.messages) == sorted(ws.messages, key=ChatMessage.sort_key)
        for m in ws.messages:
            assert 15 <= len(m.text) <= 120, m.text
            assert m.user in members and m.channel in ws.channels
            assert start <= float(m.ts) < start + 28 * 86400
            for mentioned in re.findall(r"<@(U[A-Z0-9]+)>", m.text):
                assert mentioned in members and mentioned != m.user
            if m.is_reply:
                assert by_key[(m.channel, m.thread_ts)].thread_ts == m.thread_ts  # parent marked as parent
        replies += sum(m.is_reply for m in ws.messages)
        total += len(ws.messages)
    assert 0.15 < replies / total < 0.25
    texts = [t for i in range(spec.num_workspaces) for t in generate_workspace(i, spec).texts]
    assert any("<@U" in t for t in texts)
    assert any(re.search(r"\d", re.sub(r"<@U\w+>", "", t)) for t in texts)
    assert any(t[0].isupper() for t in texts)


def test_topic_vocabularies_are_distinct_and_large_enough() -> None:
    assert len(TOPICS) >= 12
    assert len({t.name for t in TOPICS}) == len(TOPICS)
    all_nouns = [n for t in TOPICS for n in t.nouns]
    assert len(all_nouns) == len(set(all_nouns))
    for t in TOPICS:
        assert len(t.nouns) >= 18 and len(t.verbs) >= 8 and len(t.adjectives) >= 5
        assert 3 <= len(t.channels) <= 5


def test_non_iid_topics_and_sizes_differ_but_language_is_shared() -> None:
    spec = SyntheticSpec(num_workspaces=8, seed=0)
    workspaces = [generate_workspace(i, spec) for i in range(spec.num_workspaces)]
    assert len({len(ws.messages) for ws in workspaces}) > 1
    all_nouns = {n for t in TOPICS for n in t.nouns}
    top_nouns = []
    for i, ws in enumerate(workspaces):
        counts = _words(ws.texts)
        used = {w for w in counts if w in all_nouns}
        assert used <= set(TOPICS[i].nouns)  # only its own topic's nouns
        top_nouns.append(max(used, key=lambda w: (counts[w], w)))
    assert len(set(top_nouns)) == len(workspaces)
    common = [set(w for w, _ in _words(ws.texts).most_common(10)) for ws in workspaces]
    shared = set.intersection(*common)
    assert {"the"} <= shared  # one shared grammar


# --- validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"num_workspaces": 0}, "num_workspaces"),
        ({"min_messages": 0}, "min_messages"),
        ({"min_messages": 50, "max_messages": 10}, "max_messages"),
        ({"seed": -1}, "seed"),
        ({"num_workspaces": 2.5}, "num_workspaces"),
    ],
)
def test_spec_validation_names_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        SyntheticSpec(**kwargs)  # type: ignore[arg-type]


def test_index_out_of_range() -> None:
    with pytest.raises(ConfigError, match="index"):
        generate_workspace(3, SMALL)


# --- split_messages -----------------------------------------------------------------------


def test_split_is_deterministic_and_order_independent() -> None:
    messages = list(generate_workspace(0, SyntheticSpec(num_workspaces=1, seed=1)).messages)
    train, held = split_messages(messages, 0.2, b"k" * 32)
    again = split_messages(list(reversed(messages)), 0.2, b"k" * 32)
    assert (train, held) == again
    assert split_messages(messages, 0.2, b"K" * 32) != (train, held)
    assert sorted(train + held, key=ChatMessage.sort_key) == sorted(messages, key=ChatMessage.sort_key)
    assert not set(train) & set(held)


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.5])
def test_split_fraction_is_close(fraction: float) -> None:
    messages = [ChatMessage(f"{1767571200 + i}.000000", "U0AAAAAA", "general", f"message {i}") for i in range(4000)]
    _, held = split_messages(messages, fraction, bytes(32))
    assert abs(len(held) / len(messages) - fraction) < 0.03


@pytest.mark.parametrize("fraction", [0, 1, 0.0, 1.0, -0.1, 1.5, float("nan"), True])
def test_split_rejects_bad_fraction(fraction: float) -> None:
    with pytest.raises(ValueError, match="held_out_fraction"):
        split_messages([], fraction, bytes(32))


def test_split_needs_a_secret() -> None:
    with pytest.raises(ValueError, match="secret"):
        split_messages([], 0.2, b"short")
