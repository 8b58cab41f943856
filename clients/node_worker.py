"""A single-use, prestarted worker that answers one message with the ClientApp installed on this node.

Forked by ``clients.node_executor`` before a message arrives, from a process that has imported Flower,
torch, Opacus and Optin's ClientApp (``clients.app``) once: it serves exactly one task on a private Unix
socket (Flower's own single-use worker protocol, ``flwr.supercore.task_worker``) and exits. So each message
still runs in a fresh process, and no message waits for those imports. The forked processes share the
state their modules had after import (copy-on-write); nothing private depends on it: DP sampling and noise
are drawn from the OS at each release (``clients.dp_training.privacy_generator``).

Guarantee: the code that answers is the node's own. The worker pulls the message, context, run and app
bundle (FAB) from the SuperNode's runtime API with the task's token, never installs or imports anything
from the FAB, and calls ``clients.app.app``. Before that, the run's app is checked and recorded
(``clients.run_app``): its FAB hash, app id, version and ClientApp component go to the workspace's audit log
the first time the node sees the run, and a run the node does not serve gets a refusal with its own reason
code. A task that is not a ClientApp task gets an error reply, so the SuperNode is never left waiting.

Assumption: this module and ``clients.app`` are the node operator's installation (a virtual environment the
operator controls); the run config still comes from the run and is checked by the ClientApp as before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from flwr.app import Context, Error, Message
from flwr.common.constant import ErrorCode, SubStatus
from flwr.supercore import task_worker
from flwr.supercore.constant import TaskType
from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
from flwr.supercore.interceptors import RuntimeTokenHttpInterceptor, RuntimeVersionHttpInterceptor
from flwr.supercore.retry import make_simple_http_retry_invoker
from flwr.supercore.runtime import RuntimeHttpClient
from flwr.common.serde import context_from_proto, fab_from_proto, run_from_proto
from flwr.proto.node_pb2 import Node  # pylint: disable=no-name-in-module
from flwr.proto.runtime_pb2 import PullAppMessagesRequest, PullTaskInputRequest  # pylint: disable=no-name-in-module
from flwr.supercore.fab import Fab
from flwr.supercore.inflatable.inflatable_protobuf_utils import (
    make_confirm_message_received_fn_protobuf,
    make_pull_object_fn_protobuf,
)
from flwr.supercore.inflatable.inflatable_utils import pull_and_inflate_object_from_tree
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity
from flwr.supernode.runtime.run_clientapp import push_message, push_task_output
import torch._dynamo  # noqa: F401 - torch's optimizers import it at first use (0.7 s); the fork server does it once

from clients.app import app as optin_clientapp
from clients.ingress import refuse
from clients.run_app import RunApp, run_app
from clients.workspace_node import WorkspaceNode
from federated.audit import read_entries
from federated.errors import OptinError
from federated.limits import cut
from federated.privacy.accounting import keep_curves_in

log = logging.getLogger("optin.node.worker")

TASK_NAME = "ClientApp"


@dataclass(frozen=True)
class Invocation:
    """One task handed over by the executor: Flower's four invocation fields and the task's type."""

    token: str
    runtime_api_address: str
    insecure: bool
    root_certificates_path: str | None
    task_type: str

    @classmethod
    def parse(cls, payload: object) -> Invocation:
        if not isinstance(payload, dict) or not isinstance(payload.get("task_type"), str):
            raise ValueError("invocation: expected a JSON object with a string 'task_type'")
        fields = {key: value for key, value in payload.items() if key != "task_type"}
        token, address, insecure, certificates = task_worker.parse_invocation_payload(fields, TASK_NAME)
        return cls(token, address, insecure, certificates, payload["task_type"])


def answer(message: Message, context: Context, app: RunApp) -> Message:
    """The node's reply to ``message`` of run ``app``: a refusal if the node does not serve the run, else what
    Optin's installed ClientApp answers. The run's app is audited the first time the node sees the run."""
    node = WorkspaceNode.from_context(context)
    refusal = app.refusal(context.node_config)
    _record_first_sight(node, app, refusal)
    if refusal is not None:
        return refuse(message, context, *refusal)
    return optin_clientapp(message, context)


def _record_first_sight(node: WorkspaceNode, app: RunApp, refusal: tuple[str, str] | None) -> None:
    audit = node.audit()
    try:
        if any(e.get("kind") == "run-app" and e.get("run_id") == str(app.run_id) for e in read_entries(audit.path)):
            return
    except (OptinError, FileNotFoundError):
        pass  # no log yet, or one the append below reports on
    try:
        audit.append("run-app", run_id=str(app.run_id), fab_id=app.fab_id, fab_version=app.fab_version,
                     fab_sha256=app.fab_hash, clientapp=app.clientapp, served=refusal is None,
                     reason=refusal[0] if refusal else "served")
    except OptinError as exc:
        log.error("could not audit run %s's app: %s", app.run_id, exc)


PULL_BACKOFF_S = (0.02, 0.2)
"""First and largest wait between tries for a part of the message the SuperNode does not hold yet. Flower's
own waits 1 s first: the SuperNode offers the task while it is still fetching the message's arrays, so the
first try of a model-carrying message usually misses and cost a second per message."""


def pull_task_input(client: RuntimeHttpClient) -> tuple[Message, Context, Run, Fab]:
    """Flower's ``run_clientapp.pull_task_input`` (1.42), with ``PULL_BACKOFF_S`` between tries."""
    response = client.PullTaskInput(PullTaskInputRequest())
    TaskIdentity.task_id = response.task_id
    TaskIdentity.run_id = response.run.run_id
    TaskIdentity.node_id = response.context.node_id
    context, run, fab = context_from_proto(response.context), run_from_proto(response.run), fab_from_proto(response.fab)
    pulled = client.PullMessages(PullAppMessagesRequest())
    if not pulled.messages_list:
        raise RuntimeError("no message from the runtime API")
    node = Node(node_id=context.node_id)
    tree = pulled.message_object_trees[0]
    message = pull_and_inflate_object_from_tree(
        tree, make_pull_object_fn_protobuf(client.PullObject, node, context.run_id),
        make_confirm_message_received_fn_protobuf(client.ConfirmMessageReceived, node, context.run_id),
        return_type=Message, initial_backoff=PULL_BACKOFF_S[0], backoff_cap=PULL_BACKOFF_S[1])
    message.metadata.__dict__["_message_id"] = tree.object_id  # the deflated message does not carry its own id
    return message, context, run, fab


def make_run_once(invocation: dict[str, Invocation]) -> Callable[..., int]:
    """Flower's ``RunTaskOnce`` for one task: pull its input with the token, answer, push the reply."""

    def run_once(runtime_api_address: str, token: str, insecure: bool, root_certificates: bytes | None,
                 on_started: Callable[[], None], /) -> int:
        client = RuntimeHttpClient.from_server_address(
            server_address=runtime_api_address, insecure=insecure, root_certificates=root_certificates,
            interceptors=[RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"),
                          RuntimeTokenHttpInterceptor(token)],
            retry_invoker=make_simple_http_retry_invoker())
        on_started()
        started = time.monotonic()
        heartbeat = HeartbeatSender(make_task_heartbeat_fn_http(client))
        heartbeat.start()
        message: Message | None = None
        context: Context | None = None
        reply: Message | None = None
        status, details = SubStatus.FAILED, "the task's input could not be pulled"
        line = ""
        answering = answered = started
        try:
            message, context, run, fab = pull_task_input(client)  # the FAB's bytes are read as data only
            if invocation["task"].task_type != TaskType.CLIENT_APP:
                raise PermissionError(f"task type {invocation['task'].task_type!r} is not served by an Optin node")
            app = run_app(run.run_id, run.fab_id, run.fab_version, fab.hash_str, fab.content)
            answering = time.monotonic()
            reply = answer(message, context, app)
            answered = time.monotonic()
            status, details = SubStatus.COMPLETED, ""
            outcome = reply.error.reason if reply.has_error() else "answered"
            line = f"run {run.run_id} {cut(message.metadata.message_type, 40)}: {outcome}"
        except Exception as exc:  # noqa: BLE001 - the SuperNode must get a reply, never a hang
            details = f"{type(exc).__name__}"
            log.exception("the task failed")
            if message is not None:
                # Only the exception's type leaves: its text may quote the workspace's data.
                reply = Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, details), reply_to=message)
        finally:
            try:
                if reply is not None and context is not None:
                    push_message(client, reply, context)
            finally:
                push_task_output(client, context, status, details)
                heartbeat.stop()
                client.close()
        if line:
            # The handler's own time, then the runtime's around it: pulling the message in, pushing the reply out.
            print(f"{time.strftime('%H:%M:%S')} {line} in {answered - answering:.2f} s (pulled in "
                  f"{answering - started:.2f} s, pushed in {time.monotonic() - answered:.2f} s)", flush=True)
        return 0 if status == SubStatus.COMPLETED else 1

    return run_once


def serve(folder: Path, curves: Path) -> int:
    """Serve one task on ``folder/worker.sock`` (``ready`` appears in ``folder`` once it can take one); returns
    the task's exit code. RDP curves are read from and kept in ``curves`` (``federated.privacy.rdp_curves``)."""
    keep_curves_in(curves)
    invocation: dict[str, Invocation] = {}

    def parse(payload: object) -> Invocation:
        invocation["task"] = Invocation.parse(payload)
        return invocation["task"]

    return task_worker.serve_prestarted_worker(folder / "worker.sock", folder / "ready", folder / "busy",
                                               make_run_once(invocation), parse, TASK_NAME)
