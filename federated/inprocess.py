"""In-process run mode: a Flower ``Grid`` that hands each message straight to the ClientApp.

No Ray, no sockets, no serialization: the same ServerApp and ClientApp code
that runs under Flower's engines runs here in one Python process, one node at a
time. Each node keeps its own ``Context`` (its ``state`` persists across the
messages of the run, as on a SuperNode). The ClientApp receives a deep copy of
each message, so a node can never modify what the server or another node holds.
An exception raised by the ClientApp becomes an error reply, as Flower's
engines do.
"""

from __future__ import annotations

import copy
import logging
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from uuid import uuid4

from flwr.app import Context, Error, Message, RecordDict
from flwr.serverapp import Grid, ServerApp
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

log = logging.getLogger("optin.inprocess")

CLIENT_APP_RAISED_EXCEPTION = 2  # flwr.common.constant.ErrorCode.CLIENT_APP_RAISED_EXCEPTION
SERVER_NODE_ID = 1  # flwr.common.constant.SUPERLINK_NODE_ID
FIRST_NODE_ID = 100

ClientAppCallable = Callable[[Message, Context], Message]
"""A ``flwr.clientapp.ClientApp``, or anything called the same way."""

Observer = Callable[[str, str, Sequence[Message]], None]
"""Called after each ``send_and_receive``, once per message type it sent, with (message type, group id, replies)."""


@dataclass
class InProcessNode:
    """One simulated SuperNode: its id and its persistent context."""

    node_id: int
    context: Context


class InProcessGrid(Grid):
    """A ``Grid`` whose nodes are ClientApp calls in this process."""

    def __init__(self, client_app: ClientAppCallable, nodes: Sequence[InProcessNode], run: Run,
                 observer: Observer | None = None) -> None:
        self._client_app = client_app
        self._nodes = {node.node_id: node for node in nodes}
        self._run = run
        self._observer = observer
        self._pending: dict[str, Message] = {}

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self._nodes)

    @property
    def nodes(self) -> list[InProcessNode]:
        return list(self._nodes.values())

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for message in messages:
            if message.metadata.dst_node_id not in self._nodes:
                raise ValueError(f"no node with id {message.metadata.dst_node_id} in this grid")
            stamp(message, self._run.run_id)
            self._pending[message.metadata.message_id] = message
            ids.append(message.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._deliver(self._pending.pop(mid)) for mid in list(message_ids) if mid in self._pending]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        messages = list(messages)
        replies = list(self.pull_messages(self.push_messages(messages)))
        if self._observer is not None:
            # One call per message type sent (the server asks the next round's consent in the evaluate exchange).
            for message_type in dict.fromkeys(m.metadata.message_type for m in messages):
                sent = [m for m in messages if m.metadata.message_type == message_type]
                ids = {m.metadata.message_id for m in sent}
                self._observer(message_type, sent[0].metadata.group_id,
                               [r for r in replies if r.metadata.reply_to_message_id in ids])
        return replies

    def _deliver(self, message: Message) -> Message:
        node = self._nodes[message.metadata.dst_node_id]
        delivered = Message(content=copy.deepcopy(message.content), metadata=copy.deepcopy(message.metadata))
        try:
            reply = self._client_app(delivered, node.context)
        except Exception as exc:  # noqa: BLE001 - a crashing node must not stop the run, as on a SuperNode
            log.error("node %d raised while handling %s:\n%s", node.node_id, message.metadata.message_type,
                      traceback.format_exc())
            reply = Message(Error(CLIENT_APP_RAISED_EXCEPTION, f"{type(exc).__name__}: {exc}"), reply_to=message)
        return stamp(reply)


def act_as(node_id: int, run_id: int = 1) -> None:
    """Make the messages this process creates from now on come from ``node_id`` in run ``run_id``.

    Flower's ``Message`` constructor reads its sender and run from a process-wide holder (``TaskIdentity``) that
    Flower's own runtimes set for each process they start; a process that plays the server or a node
    (the in-process grid, tests) sets it itself.
    """
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, run_id, node_id


def stamp(message: Message, run_id: int | None = None, message_id: str | None = None) -> Message:
    """``message`` with the id (a fresh one unless given) and run id a grid gives it when it pushes it.

    Flower keeps both in private metadata fields and offers no setter: its grids write them the same way.
    """
    message.metadata.__dict__["_message_id"] = message_id or uuid4().hex
    if run_id is not None:
        message.metadata.__dict__["_run_id"] = run_id
    return message


def run_in_process(server_app: ServerApp, client_app: ClientAppCallable, node_configs: Sequence[Mapping[str, str]],
                   run_config: Mapping[str, int | float | str], run_id: int | None = None,
                   observer: Observer | None = None) -> InProcessGrid:
    """Run ``server_app`` against one in-process node per entry of ``node_configs``; returns the grid.

    Node ids are ``FIRST_NODE_ID``, ``FIRST_NODE_ID + 1``, ... in the order of ``node_configs``. Without
    ``run_id`` the run gets a fresh random id, as a SuperLink gives each run one: nodes refuse to release a
    (run, round) twice, so two runs on the same workspaces need different ids.
    """
    if run_id is None:
        run_id = uuid4().int >> 65  # a positive 63-bit id, like Flower's
    run = Run.create_empty(run_id)
    act_as(SERVER_NODE_ID, run_id)
    nodes = [
        InProcessNode(i, Context(run_id, i, dict(cfg), RecordDict(), dict(run_config)))
        for i, cfg in enumerate(node_configs, start=FIRST_NODE_ID)
    ]
    grid = InProcessGrid(client_app, nodes, run, observer)
    server_context = Context(run_id, 0, {}, RecordDict(), dict(run_config))
    server_app(grid, server_context)
    return grid
