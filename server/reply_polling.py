"""A Grid that looks for replies every fraction of a second instead of every 3 s.

Flower 1.42's deployment grid (``HttpGrid.send_and_receive``) sleeps 3 s between pulls of the replies, so
each exchange of a round waits on average 1.5 s after the last reply has arrived at the SuperLink, three
times a round. ``PollingGrid`` wraps any grid and does the same pushes and pulls through its public
``push_messages`` / ``pull_messages``, waiting ``poll_interval`` seconds between pulls. It changes when the
server sees a reply, never which messages are sent or which replies count: the same replies, the same
``timeout`` (replies not in by then are left out, as Flower does).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from flwr.app import Message, RecordDict
from flwr.supercore.run import Run
from flwr.serverapp import Grid

POLL_INTERVAL_S = 0.1


class PollingGrid(Grid):
    """``grid`` with a ``send_and_receive`` that pulls replies every ``poll_interval`` seconds."""

    def __init__(self, grid: Grid, poll_interval: float = POLL_INTERVAL_S) -> None:
        if not poll_interval > 0:
            raise ValueError(f"poll_interval: expected a positive number of seconds, got {poll_interval}")
        self.grid = grid
        self.poll_interval = poll_interval

    def set_run(self, run: Run) -> None:
        self.grid.set_run(run)

    @property
    def run(self) -> Run:
        return self.grid.run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return self.grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self.grid.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.grid.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        """Push ``messages``, then pull until every one has a reply or ``timeout`` seconds (None: no limit) passed."""
        waiting = set(self.push_messages(messages))
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        while waiting:
            arrived = list(self.pull_messages(waiting))
            replies.extend(arrived)
            waiting.difference_update(reply.metadata.reply_to_message_id for reply in arrived)
            if not waiting or deadline is not None and time.monotonic() >= deadline:
                break
            time.sleep(self.poll_interval if deadline is None else min(self.poll_interval,
                                                                       max(0.0, deadline - time.monotonic())))
        return replies
