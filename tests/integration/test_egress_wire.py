"""At the wire: no reply a node sends contains any piece of its workspace's messages or names.

Every reply of a full in-process run (queries, training, evaluation, for consenting and non-consenting
workspaces) plus refusals and a crash is serialized exactly as a SuperNode's ClientApp process pushes
it (``flwr.supernode.runtime.run_clientapp.push_message``: the message's protobuf without content, then
every nested object's ``deflate()`` bytes), and those bytes are scanned for:

- every 8-character substring of every message (raw and as loaded for training), member id, member
  handle and channel name (UTF-8), anywhere in the bytes, model arrays included;
- every whole member handle and channel name of 4 characters or more, in the bytes that are not model
  arrays (shorter names, and whole names inside float arrays, would match by chance).

Zero hits are required. A planted leak is found by the same scan, so the scan is not vacuous.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.app.message import remove_content_from_message
from flwr.common.serde import message_to_proto
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

from experiments.runners.in_process import make_synthetic_federation, run_federation
from federated.config import RunConfig
from federated.data import SyntheticSpec, load_workspace
from federated.inprocess import act_as, stamp
from tests.node_calls import send, send_query, send_train, train_config

SPEC = SyntheticSpec(num_workspaces=3, seed=21, min_messages=80, max_messages=160)
CONFIG = RunConfig(num_rounds=2, local_steps=3, batch_size=8, seed=21)
GRAM = 8
SHORT_NAME = 4


def wire_parts(reply: Message) -> list[tuple[str, bytes]]:
    """(object type, bytes) of everything ``push_message`` sends for ``reply``."""
    stamp(reply, message_id=reply.object_id)
    parts = [("Message(proto)", message_to_proto(remove_content_from_message(reply)).SerializeToString())]
    parts += [(type(obj).__name__, obj.deflate()) for obj in get_all_nested_objects(reply).values()]
    return parts


class Secrets:
    """What must never leave: the workspaces' message texts, member ids and handles, channel names."""

    def __init__(self, folders: Iterable[Path]) -> None:
        strings: set[str] = set()
        self.names: set[bytes] = set()
        for folder in folders:
            for scrub in (False, True):
                ws = load_workspace(folder / "data", name=folder.name, scrub=scrub)
                strings |= set(ws.texts) | set(ws.members) | set(ws.member_names) | set(ws.channels)
                self.names |= {n.encode() for n in (*ws.member_names, *ws.channels) if len(n) >= SHORT_NAME}
        self.grams = {s[i:i + GRAM].encode() for s in strings for i in range(len(s) - GRAM + 1)}
        self.lengths = sorted({len(g) for g in self.grams})

    def hits(self, parts: list[tuple[str, bytes]]) -> list[str]:
        found = []
        for kind, data in parts:
            for length in self.lengths:
                found += [f"{kind}: {data[i:i + length]!r}" for i in range(len(data) - length + 1)
                          if data[i:i + length] in self.grams]
            if kind not in ("Array", "ArrayChunk"):
                found += [f"{kind}: name {name!r}" for name in self.names if name in data]
        return found


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], Secrets]:
    layout = make_synthetic_federation(tmp_path_factory.mktemp("egress") / "workspaces", SPEC, opted_out=[1])
    return list(layout.folders), Secrets(layout.folders)


@pytest.mark.slow
def test_no_reply_of_a_full_run_carries_workspace_text_or_names(federation, tmp_path: Path) -> None:
    folders, secrets = federation
    replies: list[Message] = []
    run_federation(folders, CONFIG, observer=lambda kind, group, batch: replies.extend(batch))
    kinds = {(r.metadata.message_type, r.has_error()) for r in replies}
    assert {("query", False), ("train", False), ("evaluate", False)} <= kinds, kinds
    rounds = CONFIG.num_rounds
    assert len(replies) == (rounds + 1) * 3 + (rounds + 1) * 2 + rounds * 2  # queries, evaluations, training
    for reply in replies:
        assert secrets.hits(wire_parts(reply)) == [], reply.metadata.message_type


def test_refusals_crashes_and_direct_replies_carry_no_workspace_text(federation) -> None:
    folders, secrets = federation
    consenting, opted_out = folders[0], folders[1]
    replies = [send(opted_out, "query", CONFIG, RecordDict()), send_train(opted_out, CONFIG),
               send(opted_out, "evaluate", CONFIG, RecordDict()), send_train(consenting, CONFIG, server_round=9),
               send(consenting, "query", CONFIG, RecordDict({"config": ConfigRecord({"local-steps": 3})}))]
    # A train message whose model does not fit makes the handler raise; the exception text stays home.
    replies.append(send(consenting, "train", CONFIG, RecordDict({"arrays": ArrayRecord(), "config": train_config()})))
    assert [r.has_error() for r in replies] == [False, True, True, False, True, True]
    assert send_query(opted_out, CONFIG)["consent"] is False
    for reply in replies:
        assert secrets.hits(wire_parts(reply)) == []


def test_the_scan_finds_a_planted_leak(federation) -> None:
    folders, secrets = federation
    text = load_workspace(folders[0] / "data", scrub=False).texts[0]
    act_as(1)
    leaky = Message(RecordDict({"metrics": ConfigRecord({"note": "ok " + text[:GRAM] + " ok"})}), 7, "evaluate",
                    group_id="1")
    assert secrets.hits(wire_parts(leaky))
    hidden = Array(dtype="float32", shape=(2,), stype="raw", data=text[:GRAM].encode())
    in_array = Message(RecordDict({"arrays": ArrayRecord({"w": hidden})}), 7, "train", group_id="1")
    assert any(hit.startswith("Array") for hit in secrets.hits(wire_parts(in_array)))
