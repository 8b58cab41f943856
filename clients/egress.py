"""The egress check: a ClientApp mod that inspects every reply before it leaves the workspace's node.

Registered on Optin's ClientApp (``ClientApp(mods=[egress_check])``), it wraps every ``query``,
``train`` and ``evaluate`` handler. A reply leaves only if its *form* is one of these:

- ``query``: one ConfigRecord ``"consent"`` whose keys are ``federated.protocol.CONSENT_FIELDS`` (a
  subset), each value of its declared type, ``reason`` a short reason code (``[a-z][a-z0-9-]*``,
  at most 48 characters);
- ``train``: an ArrayRecord ``"arrays"`` with exactly the keys, shapes, dtypes and serialization types
  of the model the server sent, every array in Flower's canonical serialization (no bytes beyond the
  numbers), and a MetricRecord ``"metrics"`` whose keys are among ``federated.protocol.TRAIN_METRICS``;
- ``evaluate``: a MetricRecord ``"metrics"`` whose keys are among ``federated.protocol.EVAL_METRICS``
  (none: the node keeps its evaluation, so the record is empty);
- metric values are numeric scalars (int or float, not bool, not lists);
- an error reply only with code ``REFUSED_CODE`` and a reason ``"refused: <reason code>"``;
- the reply's message type and group id equal the request's (they are free-text fields too).

Anything else is refused: the node sends an error reply ``refused: egress-blocked`` instead and appends
an ``egress-blocked`` entry (message type, round, the violations found) to the workspace's audit log.
An exception raised by a handler is refused the same way, so an exception's text (which may quote a
message or a path) never leaves: Flower would otherwise send ``str(exception)`` to the server.

Guarantee and its limit: the check bounds *what kind* of data leaves and *how much* (the same arrays
the server sent, a fixed set of scalars, fixed codes). It does not inspect the *values* of the model
arrays or metrics: that the update is clipped and noised is the job of DP-SGD in the ClientApp. If the
check itself fails (e.g. the audit log is damaged), the reply is still refused (fail closed).
"""

from __future__ import annotations

import logging

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord
from flwr.clientapp.typing import ClientAppCallable

from clients.workspace_node import WorkspaceNode
from federated.limits import cut
from federated.protocol import (CONSENT_FIELDS, CONSENT_KEY, EVAL_METRICS, LABEL, REASON_CODE, REFUSAL_REASON, REFUSED_CODE,
                                TRAIN_METRICS)

log = logging.getLogger("optin.egress")

BLOCKED_REASON = "refused: egress-blocked"
"""The error reason a refused reply is replaced with."""



def egress_check(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Run the handler, then let its reply leave only if ``violations`` finds nothing wrong with it."""
    try:
        reply = call_next(msg, context)
    except Exception as exc:  # noqa: BLE001 - an exception's text must not reach the server
        log.exception("the %s handler raised; refusing to send its error text", msg.metadata.message_type)
        return _block(msg, context, [f"handler raised {type(exc).__name__}"])
    try:
        problems = violations(msg, reply)
    except Exception as exc:  # noqa: BLE001 - fail closed
        log.exception("the egress check itself failed")
        problems = [f"egress check failed ({type(exc).__name__})"]
    return _block(msg, context, problems) if problems else reply


def violations(request: Message, reply: Message) -> list[str]:
    """Why ``reply`` (to ``request``) may not leave the node; empty when it may.

    Each violation names keys and types only, never a value, so the list itself can be logged.
    """
    found = []
    for field in ("message_type", "group_id"):
        if getattr(reply.metadata, field) != getattr(request.metadata, field):
            found.append(f"reply {field} differs from the request's")
    if reply.has_error():
        if reply.error.code != REFUSED_CODE or not REFUSAL_REASON.fullmatch(str(reply.error.reason)):
            found.append(f"error reply that is not a refusal code (code {reply.error.code})")
        return found
    category = request.metadata.message_type.split(".")[0]
    content = reply.content
    allowed = {"query": {CONSENT_KEY}, "train": {"arrays", "metrics"}, "evaluate": {"metrics"}}.get(category)
    if allowed is None:
        return found + [f"no reply content is allowed for message type {category!r}"]
    found += [f"record {key!r} is not allowed in a reply to {category!r}" for key in sorted(set(content) - allowed)]
    if category == "query" and CONSENT_KEY in content:
        found += _consent_violations(content[CONSENT_KEY])
    if "metrics" in allowed and "metrics" in content:
        found += _metric_violations(content["metrics"], TRAIN_METRICS if category == "train" else EVAL_METRICS)
    if category == "train" and "arrays" in content:
        sent = request.content["arrays"] if "arrays" in request.content else None
        found += _array_violations(content["arrays"], sent)
    return found


def _consent_violations(record: object) -> list[str]:
    if not isinstance(record, ConfigRecord):
        return [f"record {CONSENT_KEY!r} is a {type(record).__name__}, expected a ConfigRecord"]
    found = [f"consent field {key!r} is not allowed" for key in sorted(set(record) - set(CONSENT_FIELDS))]
    for key, kind in CONSENT_FIELDS.items():
        if key in record and not _is_type(record[key], kind):
            found.append(f"consent field {key!r} is not a {kind.__name__}")
    if isinstance(record.get("reason"), str) and not REASON_CODE.fullmatch(record["reason"]):
        found.append("consent field 'reason' is not a reason code")
    if isinstance(record.get("label"), str) and not LABEL.fullmatch(record["label"]):
        found.append("consent field 'label' is not a workspace label")
    return found


def _metric_violations(record: object, allowed: tuple[str, ...]) -> list[str]:
    if not isinstance(record, MetricRecord):
        return [f"record 'metrics' is a {type(record).__name__}, expected a MetricRecord"]
    found = [f"metric {key!r} is not allowed" for key in sorted(set(record) - set(allowed))]
    found += [f"metric {key!r} is not a numeric scalar" for key in sorted(set(record) & set(allowed))
              if not (_is_type(record[key], int) or _is_type(record[key], float))]
    return found


def _array_violations(record: object, sent: object) -> list[str]:
    if not isinstance(record, ArrayRecord):
        return [f"record 'arrays' is a {type(record).__name__}, expected an ArrayRecord"]
    if not isinstance(sent, ArrayRecord):
        return ["the request carried no model arrays to compare the reply's arrays with"]
    if list(record.keys()) != list(sent.keys()):
        return ["the reply's array names differ from the model the server sent"]
    found = []
    for key in record.keys():
        mine, theirs = record[key], sent[key]
        if (mine.dtype, tuple(mine.shape), mine.stype) != (theirs.dtype, tuple(theirs.shape), theirs.stype):
            found.append(f"array {key!r} differs in dtype, shape or serialization from the model sent")
        elif not _canonical(mine):
            found.append(f"array {key!r} carries bytes beyond its numbers")
    return found


def _canonical(array: Array) -> bool:
    """True if the array's bytes are exactly Flower's serialization of its own values."""
    try:
        return Array(array.numpy()).data == array.data
    except (ValueError, TypeError):
        return False


def _is_type(value: object, kind: type) -> bool:
    """``isinstance``, except that a bool is only a bool (never an int or a float)."""
    if isinstance(value, bool):
        return kind is bool
    return isinstance(value, kind)


def _block(msg: Message, context: Context, problems: list[str]) -> Message:
    """Replace the reply with a fixed refusal and record why in the workspace's audit log."""
    message_type, round_ = msg.metadata.message_type, msg.metadata.group_id
    log.error("egress check refused a %s reply (round %s): %s", cut(message_type), cut(round_),
              cut("; ".join(problems)))
    try:
        WorkspaceNode.from_context(context).audit().append(
            "egress-blocked", run_id=str(context.run_id), round=round_, message_type=message_type,
            violations=problems)
    except Exception:  # noqa: BLE001 - the reply is refused whether or not the audit entry could be written
        log.exception("could not write the egress-blocked audit entry")
    return Message(Error(REFUSED_CODE, BLOCKED_REASON), reply_to=msg)
