"""The ingress check: what a node accepts from the server before any handler runs.

Guarantee: the run config must be valid and within the node's limits (``clients.node_limits``; else
``refused: bad-config``). A ``query`` may carry only an optional ``config`` (a valid round config); ``train``
exactly ``arrays`` and ``config``; ``evaluate`` ``arrays`` and an optional ``config``. The arrays
must have exactly the keys, shapes and dtypes of the run's model, every value finite and at most
``MAX_ABS_WEIGHT`` in magnitude (a hostile model with a NaN row would otherwise turn the release into a
membership signal; DP-SGD also zeroes non-finite per-sample gradients, so this is defence in depth), and
the config must parse with ``parse_train_config``. The check looks at what the server sent only, never
at the workspace's data, so a refusal reveals nothing about it. Anything else gets the refusal ``refused: bad-request`` and a ``refusal``
entry (with what was wrong) in the workspace's audit log; no data is read and nothing is trained.
``GuardedClientApp`` does the same for a message type the node does not offer. The node keeps
serving later messages either way.
"""

from __future__ import annotations

import functools
import logging

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable

from clients.train_config import parse_train_config
from clients.workspace_node import WorkspaceNode
from federated.config import RunConfig
from federated.errors import OptinError
from federated.limits import cut
from federated.protocol import REFUSED_CODE
from federated.tasks import get_task

log = logging.getLogger("optin.ingress")

MAX_ABS_WEIGHT = 1e6
"""The largest weight magnitude a node accepts in a model from the server: far beyond any trained model's."""

_RECORDS = {"query": (set(), {"config"}), "train": ({"arrays", "config"}, set()),
            "evaluate": ({"arrays"}, {"config"})}
"""message type: (records required, records optional)."""


def ingress_check(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Refuse a malformed request, or one over the node's limits, before its handler runs; else run the handler."""
    refusal = request_refusal(msg, context)
    if refusal is None:
        return call_next(msg, context)
    return refuse(msg, context, *refusal)


def request_refusal(msg: Message, context: Context) -> tuple[str, str] | None:
    """(reason code, detail) for a request the node will not handle, naming keys only; ``None`` if it is fine.

    ``bad-config``: the run config is invalid or over the node's limits (``clients.node_limits``), or the round
    asks for more than them; ``bad-request``: the message's records, arrays or round config are malformed.
    The run config is checked first, since the model's shape (which the arrays are checked against) depends
    on its ``seq-len``.
    """
    try:
        node = WorkspaceNode.from_context(context)
        config = node.run_config(context)
    except OptinError as exc:
        return "bad-config", str(exc)
    problem = request_problem(msg, config)
    if problem is not None:
        return "bad-request", problem
    if msg.metadata.message_type != "evaluate" and "config" in msg.content:
        try:
            node.limits.check_round(parse_train_config(msg.content["config"])[0])
        except OptinError as exc:
            return "bad-config", str(exc)
    return None


def request_problem(msg: Message, config: RunConfig) -> str | None:
    """What is malformed in the request, naming keys only; ``None`` if it is well formed."""
    required, optional = _RECORDS[msg.metadata.message_type]
    records = set(msg.content.keys())
    if not required <= records or records - required - optional:
        return f"records {sorted(records)}; expected {sorted(required)} and optionally {sorted(optional)}"
    try:
        if "config" in records:
            record = msg.content["config"]
            if not isinstance(record, ConfigRecord):
                return "'config' is not a ConfigRecord"
            if msg.metadata.message_type != "evaluate":
                parse_train_config(record)
        if "arrays" in records:
            return _arrays_problem(msg.content["arrays"], config)
    except OptinError as exc:
        return str(exc)
    return None


def _arrays_problem(arrays: object, config: RunConfig) -> str | None:
    if not isinstance(arrays, ArrayRecord):
        return "'arrays' is not an ArrayRecord"
    expected = model_layout(config.task, config.seq_len)
    if list(arrays.keys()) != [key for key, _, _ in expected]:
        return "array keys differ from the model's"
    for key, dtype, shape in expected:
        array = arrays[key]
        if tuple(array.shape) != shape or array.dtype != dtype:
            return f"array {key!r} is {array.dtype}{list(array.shape)}, expected {dtype}{list(shape)}"
        try:
            values = array.numpy()
        except (ValueError, TypeError) as exc:
            return f"array {key!r} does not deserialize ({type(exc).__name__})"
        if tuple(values.shape) != shape or str(values.dtype) != dtype:
            return f"array {key!r} holds {values.dtype}{list(values.shape)}, expected {dtype}{list(shape)}"
        if not np.isfinite(values).all():
            return f"array {key!r} has NaN or Inf values"
        if values.size and float(np.abs(values).max()) > MAX_ABS_WEIGHT:
            return f"array {key!r} has values beyond ±{MAX_ABS_WEIGHT:g}"
    return None


@functools.lru_cache(maxsize=8)
def model_layout(task: str, seq_len: int) -> tuple[tuple[str, str, tuple[int, ...]], ...]:
    """(key, dtype, shape) of each array of the task's model, in order: built once per process, since they
    depend on the task and sequence length only, never on the seed or the weights."""
    state = get_task(task, seq_len).build_model(0).state_dict()
    return tuple((key, str(t.dtype).removeprefix("torch."), tuple(t.shape)) for key, t in state.items())


def refuse(msg: Message, context: Context, reason: str, detail: str) -> Message:
    """A refusal reply; the detail goes to the node's log and audit log only."""
    log.warning("refused %s: %s (%s)", cut(msg.metadata.message_type), reason, cut(detail))
    try:
        WorkspaceNode.from_context(context).audit().append(
            "refusal", run_id=str(context.run_id), round=msg.metadata.group_id,
            message_type=msg.metadata.message_type, reason=reason, detail=detail)
    except OptinError as exc:
        log.error("could not audit the refusal: %s", exc)
    return Message(Error(REFUSED_CODE, f"refused: {reason}"), reply_to=msg)


class GuardedClientApp(ClientApp):
    """A ClientApp that refuses (and audits) a message type it does not offer instead of raising.

    Only the exact types ``query``, ``train`` and ``evaluate`` are offered: Flower would also route
    ``query.default`` to the ``query`` handler, but the node's checks (and the reply's message type, which
    must equal the request's) are written for the exact names.
    """

    def __call__(self, message: Message, context: Context) -> Message:
        if message.metadata.message_type not in _RECORDS:
            return refuse(message, context, "unsupported-message-type",
                          f"message type {message.metadata.message_type!r} is not offered")
        return super().__call__(message, context)
