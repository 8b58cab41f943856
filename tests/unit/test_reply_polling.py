"""PollingGrid: the same replies as the grid it wraps, seen within a poll interval, and the timeout kept."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.run import Run

from federated.inprocess import act_as, stamp
from server.reply_polling import PollingGrid

act_as(1)


class SlowNodesGrid(Grid):
    """A grid whose node ``n`` replies ``n * 0.05`` s after the push, to messages for nodes it has; node 0 never."""

    def __init__(self) -> None:
        self.pushed: dict[str, tuple[Message, float]] = {}
        self.pulls = 0
        self.lock = threading.Lock()

    def set_run(self, run: Run) -> None:
        pass

    @property
    def run(self) -> Run:
        raise NotImplementedError

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return Message(content, dst_node_id, message_type, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return [0, 1, 2, 3]

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for i, message in enumerate(messages):
            message_id = f"m{i}"
            stamp(message, message_id=message_id)
            self.pushed[message_id] = (message, time.monotonic())
            ids.append(message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        self.pulls += 1
        now, replies = time.monotonic(), []
        for message_id in list(message_ids):
            message, pushed = self.pushed[message_id]
            node = message.metadata.dst_node_id
            if node and now - pushed >= node * 0.05:
                reply = Message(RecordDict({"c": ConfigRecord({"node": node})}), reply_to=message)
                replies.append(reply)
                del self.pushed[message_id]
        return replies

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        raise AssertionError("PollingGrid must not call the wrapped grid's send_and_receive")


def _messages(nodes: list[int]) -> list[Message]:
    return [Message(RecordDict(), node, "query", group_id="1") for node in nodes]


def test_every_reply_comes_back_once_soon_after_it_arrives() -> None:
    inner = SlowNodesGrid()
    started = time.monotonic()
    replies = list(PollingGrid(inner, poll_interval=0.01).send_and_receive(_messages([1, 2, 3]), timeout=30))
    assert sorted(r.content["c"]["node"] for r in replies) == [1, 2, 3]
    assert time.monotonic() - started < 5  # Flower's own grid would have slept 3 s between pulls
    assert inner.pulls >= 2


def test_replies_missing_at_the_timeout_are_left_out() -> None:
    inner = SlowNodesGrid()
    started = time.monotonic()
    replies = list(PollingGrid(inner, poll_interval=0.01).send_and_receive(_messages([0, 1]), timeout=0.5))
    assert [r.content["c"]["node"] for r in replies] == [1]
    assert time.monotonic() - started >= 0.5


def test_the_other_calls_are_the_wrapped_grids() -> None:
    inner = SlowNodesGrid()
    grid = PollingGrid(inner)
    assert list(grid.get_node_ids()) == [0, 1, 2, 3]
    assert grid.create_message(RecordDict(), "query", 2, "1").metadata.dst_node_id == 2
