"""Validation of node replies before aggregation: the server does not trust nodes either.

Guarantee: a ``train`` reply is accepted only if its content is exactly an ArrayRecord ``arrays``
with the same keys, shapes and dtypes as the global model the server sent, every value finite, and
a MetricRecord ``metrics`` with only ``TRAIN_METRICS`` keys, finite scalars (``epsilon`` may be
+inf: no noise) and ``num-examples`` > 0. An ``evaluate`` reply must hold only a MetricRecord
``metrics`` with ``EVAL_METRICS`` keys, finite scalars and ``num-examples`` > 0. Anything else is
dropped with a reason; it never reaches the average, so the aggregate equals the average of the
accepted replies alone.
"""

from __future__ import annotations

import math

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord

from federated.protocol import EVAL_METRICS, TRAIN_METRICS


def check_train_reply(reply: Message, sent: ArrayRecord) -> str | None:
    """``None`` if the reply may be aggregated, else why it is dropped."""
    content = reply.content
    if set(content.keys()) != {"arrays", "metrics"}:
        return f"unexpected records {sorted(content.keys())}"
    arrays = content["arrays"]
    if not isinstance(arrays, ArrayRecord):
        return "'arrays' is not an ArrayRecord"
    if list(arrays.keys()) != list(sent.keys()):
        return "array keys differ from the global model's"
    for key in sent.keys():
        mine, theirs = sent[key], arrays[key]
        if tuple(theirs.shape) != tuple(mine.shape) or theirs.dtype != mine.dtype:
            return f"array {key!r} is {theirs.dtype}{list(theirs.shape)}, expected {mine.dtype}{list(mine.shape)}"
        if not np.isfinite(theirs.numpy()).all():
            return f"array {key!r} has NaN or Inf"
    return _check_metrics(content["metrics"], TRAIN_METRICS, infinite_ok={"epsilon"})


def check_evaluate_reply(reply: Message) -> str | None:
    """``None`` if the evaluation metrics may be aggregated, else why they are dropped."""
    if set(reply.content.keys()) != {"metrics"}:
        return f"unexpected records {sorted(reply.content.keys())}"
    return _check_metrics(reply.content["metrics"], EVAL_METRICS, infinite_ok=set())


def _check_metrics(metrics: object, allowed: tuple[str, ...], infinite_ok: set[str]) -> str | None:
    if not isinstance(metrics, MetricRecord):
        return "'metrics' is not a MetricRecord"
    extra = sorted(set(metrics.keys()) - set(allowed))
    if extra:
        return f"unexpected metrics {extra}"
    for key, value in metrics.items():
        if isinstance(value, list) or isinstance(value, bool):
            return f"metric {key!r} is not a scalar"
        if math.isnan(value) or (math.isinf(value) and key not in infinite_ok):
            return f"metric {key!r} is not finite"
    examples = metrics.get("num-examples")
    if not isinstance(examples, int) or examples <= 0:
        return f"metric 'num-examples' must be a positive integer, got {examples!r}"
    return None
