"""Preprocessing keeps the neighbouring relation DP-SGD protects.

Removing one message from a workspace's data changes exactly that message's training record (or nothing,
if it was held out) and moves no other message between the training and held-out sides; removing one
member (member unit) changes exactly that member's record; scrubbing of the other messages is unchanged;
and nothing depends on the run config's seed. Checked end to end through ``WorkspaceNode`` (load, scrub,
split, group, encode) on random JSONL and IRC workspaces.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clients.workspace_node import DATA_FOLDER, WorkspaceNode, member_groups
from federated.config import RunConfig
from federated.data import ChatMessage, ScrubOptions, load_workspace, split_messages
from federated.data.roster import ROSTER_FILE
from federated.data.scrub import Scrubber
from federated.errors import DataError
from federated.privacy.node_secret import SECRET_FILE, node_secret
from federated.privacy.policy import Policy
from federated.tasks import get_task

PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PEOPLE = ("alice", "bob", "carol", "dave", "erin")
ROSTER = ("alice", "bob", "carol")  # some authors are on the roster, some are not
WORDS = ("hi", "see", "the", "build", "again", "12345678", "https://x.org/a", "@bob", *PEOPLE,
         *(f"w{i}" for i in range(20)))
TASK = get_task("nextchar", 64)
CONFIG = RunConfig(seq_len=64)

texts = st.lists(st.sampled_from(WORDS), min_size=1, max_size=5).map(" ".join)
# (channel, second, user, text): few channels, seconds and texts, so identical messages occur too.
messages = st.tuples(st.sampled_from(("general", "random")), st.integers(0, 30), st.sampled_from(PEOPLE), texts)
workspaces = st.lists(messages, min_size=1, max_size=40)
fractions = st.sampled_from((0.2, 0.5))


@contextmanager
def _node(records: list[tuple[str, int, str, str]], secret: bytes) -> Iterator[WorkspaceNode]:
    """A JSONL workspace of ``records`` with a roster and the given node secret, in a fresh folder."""
    with tempfile.TemporaryDirectory() as root:
        folder = Path(root) / "team"
        (folder / DATA_FOLDER).mkdir(parents=True)
        lines = [json.dumps({"ts": 1700000000 + s, "user": u, "channel": c, "text": t}) for c, s, u, t in records]
        (folder / DATA_FOLDER / "messages.jsonl").write_text("".join(line + "\n" for line in lines), "utf-8")
        (folder / DATA_FOLDER / ROSTER_FILE).write_text("\n".join(ROSTER) + "\n", "utf-8")
        (folder / SECRET_FILE).write_text(secret.hex() + "\n", "ascii")
        yield WorkspaceNode(folder)


def _records(node: WorkspaceNode, policy: Policy) -> Counter[bytes]:
    """The multiset of training records (encoded DP samples) the node would train on."""
    data = node.training_samples(TASK, CONFIG, policy)
    return Counter(data.tensors[0][i].numpy().tobytes() + data.tensors[1][i].numpy().tobytes()
                   for i in range(len(data)))


def _encoded(text: str) -> bytes:
    data = TASK.encode_texts([text])
    return data.tensors[0][0].numpy().tobytes() + data.tensors[1][0].numpy().tobytes()


def _scrubbed(text: str) -> str:
    """A text as scrubbing sees it on its own: only the roster and the text itself."""
    return Scrubber(ROSTER, (), ScrubOptions())(text)


@PROPERTY
@given(workspaces, st.data(), st.binary(min_size=32, max_size=32), fractions)
def test_removing_one_message_changes_exactly_its_own_record(records, data, secret: bytes, fraction: float) -> None:
    i = data.draw(st.integers(0, len(records) - 1), label="removed")
    policy = Policy(consent=True, held_out_fraction=fraction)
    with _node(records, secret) as full, _node(records[:i] + records[i + 1:], secret) as neighbour:
        removed_train = _records(full, policy) - _records(neighbour, policy)
        added_train = _records(neighbour, policy) - _records(full, policy)
        removed_held = Counter(_held_texts(full, CONFIG, policy)) - Counter(_held_texts(neighbour, CONFIG, policy))
        added_held = Counter(_held_texts(neighbour, CONFIG, policy)) - Counter(_held_texts(full, CONFIG, policy))
    text = _scrubbed(records[i][3])
    assert not added_train and not added_held  # no other message changed or moved to another side
    assert (removed_train, removed_held) in [(Counter([_encoded(text)]), Counter()), (Counter(), Counter([text]))]


@PROPERTY
@given(st.lists(messages, min_size=4, max_size=40), st.data(), st.binary(min_size=32, max_size=32), st.integers(1, 3))
def test_removing_one_member_changes_exactly_their_group(records, data, secret: bytes, limit: int) -> None:
    member = data.draw(st.sampled_from(sorted({r[2] for r in records})), label="removed member")
    policy = Policy(consent=True, privacy_unit="member", max_messages_per_member=limit)
    with _node(records, secret) as full, _node([r for r in records if r[2] != member], secret) as neighbour:
        before, after = _records(full, policy), _records(neighbour, policy)
        had_training_messages = member in {m.user for m in full._split(CONFIG, policy)[0]}
    assert not after - before  # every other member's record is exactly as it was
    assert sum((before - after).values()) == (1 if had_training_messages else 0)


@PROPERTY
@given(workspaces, st.data())
def test_scrubbing_of_other_messages_does_not_depend_on_the_removed_one(records, data) -> None:
    i = data.draw(st.integers(0, len(records) - 1), label="removed")
    member = records[i][2]
    with _node(records, bytes(32)) as full, _node(records[:i] + records[i + 1:], bytes(32)) as one_less, \
            _node([r for r in records if r[2] != member], bytes(32)) as member_less:
        texts = Counter(load_workspace(full.folder / DATA_FOLDER).texts)
        without_message = Counter(load_workspace(one_less.folder / DATA_FOLDER).texts)
        without_member = Counter(load_workspace(member_less.folder / DATA_FOLDER).texts)
    assert texts - without_message == Counter([_scrubbed(records[i][3])]) and not without_message - texts
    assert texts - without_member == Counter(_scrubbed(r[3]) for r in records if r[2] == member)
    assert not without_member - texts


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 23), st.sampled_from(PEOPLE), texts), min_size=1, max_size=30), st.data())
def test_removing_one_irc_log_line_moves_no_other_message(lines, data) -> None:
    """IRC timestamps carry the line index, so a removed line shifts every later one's ts; the split must not care."""
    i = data.draw(st.integers(0, len(lines) - 1), label="removed")
    policy = Policy(consent=True, held_out_fraction=0.5)
    held: list[Counter[str]] = []
    trained: list[Counter[bytes]] = []
    for kept in (lines, lines[:i] + lines[i + 1:]):
        with tempfile.TemporaryDirectory() as root:
            log = Path(root) / "log.txt"
            log.write_text("".join(f"[{h:02d}:00] <{nick}> {text}\n" for h, nick, text in kept), "utf-8")
            folder = Path(root) / "ws"
            (folder / DATA_FOLDER).mkdir(parents=True)
            (folder / DATA_FOLDER / "source.toml").write_text(
                f'format = "irc"\nroot = "{root}"\nchannel = "chat"\n\n[[files]]\npath = "log.txt"\n'
                'date = 2020-02-03\n', "utf-8")
            (folder / SECRET_FILE).write_text("ab" * 32 + "\n", "ascii")
            node = WorkspaceNode(folder)
            held.append(Counter(_held_texts(node, CONFIG, policy)))
            trained.append(_records(node, policy))
    assert not held[1] - held[0] and not trained[1] - trained[0]
    assert sum((held[0] - held[1]).values()) + sum((trained[0] - trained[1]).values()) == 1


@PROPERTY
@given(workspaces, st.integers(0, 2**31), st.integers(0, 2**31))
def test_the_split_and_the_groups_do_not_depend_on_the_run_seed(records, seed_a: int, seed_b: int) -> None:
    policy = Policy(consent=True, privacy_unit="member", max_messages_per_member=2)
    with _node(records, b"s" * 32) as node:
        a, b = RunConfig(seq_len=64, seed=seed_a), RunConfig(seq_len=64, seed=seed_b)
        assert _held_texts(node, a, policy) == _held_texts(node, b, policy)
        assert _records_of(node, a, policy) == _records_of(node, b, policy)


def _records_of(node: WorkspaceNode, config: RunConfig, policy: Policy) -> Counter[bytes]:
    data = node.training_samples(TASK, config, policy)
    return Counter(data.tensors[1][i].numpy().tobytes() for i in range(len(data)))


def test_the_split_depends_on_the_secret_and_each_message_alone() -> None:
    many = [ChatMessage(f"{1700000000 + i}.000000", "U1", "general", f"message {i}") for i in range(400)]
    train, held = split_messages(many, 0.25, b"a" * 32)
    assert split_messages(many, 0.25, b"b" * 32) != (train, held)  # another node, another split
    for m in many[:50]:
        assert split_messages([m], 0.25, b"a" * 32) == (([m], []) if m in train else ([], [m]))


def test_member_groups_are_per_member_and_bounded() -> None:
    messages = [ChatMessage(f"{i}.0", f"U{i % 4}", "general", f"text {i}") for i in range(1, 60)]
    groups = member_groups(messages, 3, bytes(32))
    assert [len(g) for g in groups] == [3, 3, 3, 3]
    alone = [member_groups([m for m in messages if m.user == u], 3, bytes(32))[0] for u in ("U0", "U1", "U2", "U3")]
    assert groups == alone
    assert member_groups(list(reversed(messages)), 3, bytes(32)) == groups


def test_the_node_secret_is_created_once_privately_and_read_back(tmp_path: Path) -> None:
    secret = node_secret(tmp_path)
    assert len(secret) == 32 and node_secret(tmp_path) == secret
    path = tmp_path / SECRET_FILE
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert WorkspaceNode(tmp_path).secret() == secret
    (tmp_path / "other").mkdir()
    assert node_secret(tmp_path / "other") != secret  # each workspace draws its own
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize("content", [b"", b"abc\n", b"zz" * 32, b"AB" * 32, bytes(32), b"ab" * 33])
def test_a_malformed_secret_is_an_error_naming_the_file(tmp_path: Path, content: bytes) -> None:
    (tmp_path / SECRET_FILE).write_bytes(content)
    with pytest.raises(DataError, match=SECRET_FILE) as info:
        node_secret(tmp_path)
    assert "malformed" in str(info.value) or "cannot be read" in str(info.value)
    assert (tmp_path / SECRET_FILE).read_bytes() == content  # never silently replaced


def _held_texts(node: WorkspaceNode, config: RunConfig, policy: Policy) -> list[str]:
    return [m.text for m in node.held_out_messages(config, policy)]
