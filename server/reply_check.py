"""Validation of node replies before aggregation: the server does not trust nodes either.

Guarantee: a ``train`` reply is accepted only if its content is exactly an ArrayRecord ``arrays``
whose keys, shapes and dtypes equal the global model the server sent, both as declared and as the
bytes deserialize, every value finite, and a MetricRecord ``metrics`` with exactly the keys of
``TRAIN_METRICS``, each a scalar of its type in its range (``METRIC_RANGES``; ``epsilon`` may be +inf:
no noise). An ``evaluate`` reply must hold only a MetricRecord ``metrics`` with no keys (nodes keep
their evaluation). Anything else is dropped with a reason; it never reaches the average, so the
aggregate equals the average of the accepted replies alone.
"""

from __future__ import annotations

import math

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord

from federated.protocol import EVAL_METRICS, TRAIN_METRICS

METRIC_RANGES: dict[str, tuple[type, float, float]] = {
    # key: (type, lowest, highest), both inclusive
    "epsilon": (float, 0.0, math.inf),
    "delta": (float, 0.0, 1.0),
    "steps": (int, 1, 10_000),
    "sample-rate": (float, 0.0, 1.0),
    "noise-multiplier": (float, 0.0, 1e6),
    "max-grad-norm": (float, 0.0, 1e6),
    "private": (int, 0, 1),
}


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
        try:
            values = theirs.numpy()
        except (ValueError, TypeError) as exc:
            return f"array {key!r} does not deserialize ({type(exc).__name__})"
        if tuple(values.shape) != tuple(mine.shape) or str(values.dtype) != mine.dtype:
            return f"array {key!r} holds {values.dtype}{list(values.shape)}, expected {mine.dtype}{list(mine.shape)}"
        if not np.isfinite(values).all():
            return f"array {key!r} has NaN or Inf"
    return _check_metrics(content["metrics"], TRAIN_METRICS)


def check_evaluate_reply(reply: Message) -> str | None:
    """``None`` if the evaluation reply is well formed (an empty metrics record), else why it is dropped."""
    if set(reply.content.keys()) != {"metrics"}:
        return f"unexpected records {sorted(reply.content.keys())}"
    return _check_metrics(reply.content["metrics"], EVAL_METRICS)


def _check_metrics(metrics: object, expected: tuple[str, ...]) -> str | None:
    if not isinstance(metrics, MetricRecord):
        return "'metrics' is not a MetricRecord"
    if set(metrics.keys()) != set(expected):
        return f"metrics {sorted(metrics.keys())}, expected exactly {sorted(expected)}"
    for key, value in metrics.items():
        kind, low, high = METRIC_RANGES[key]
        if isinstance(value, (list, bool)) or not isinstance(value, (int, float)):
            return f"metric {key!r} is not a scalar"
        if kind is int and not isinstance(value, int):
            return f"metric {key!r} must be an integer"
        if math.isnan(value) or not low <= value <= high or (math.isinf(value) and key != "epsilon"):
            return f"metric {key!r} is out of range [{low}, {high}]"
    return None
