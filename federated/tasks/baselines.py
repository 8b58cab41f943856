"""Unigram and bigram baselines for a next-token model, on the same encoded samples the model is scored on.

Both are fitted on one dataset (a workspace's training split) and scored on another (its held-out split) at
exactly the positions the model is scored at (targets other than ``IGNORE``), so their loss (nats per
token) and accuracy sit beside the model's ``Task.evaluate`` figures. Counts are add-one (Laplace) smoothed
over the ``outputs`` target values, so a held-out token never seen in training gets a finite loss.
The bigram's context is the input token at the position (the previous byte, or ``BOS`` at a message's
start). Accuracy is the share of positions where the most likely token is the target.
"""

from __future__ import annotations

import numpy as np
from torch.utils.data import TensorDataset

from federated.tasks.nextchar import IGNORE


def ngram_baselines(train: TensorDataset, held_out: TensorDataset, contexts: int,
                    outputs: int) -> dict[str, dict[str, float]]:
    """``{"unigram": {"loss", "accuracy"}, "bigram": {...}}`` of the two baselines fitted on ``train`` and scored
    on ``held_out``. Inputs are token ids below ``contexts``; targets are ids below ``outputs`` or ``IGNORE``."""
    fit_context, fit_target = _positions(train)
    context, target = _positions(held_out)
    unigram = np.bincount(fit_target, minlength=outputs).astype(np.float64) + 1.0
    bigram = np.ones((contexts, outputs))
    np.add.at(bigram, (fit_context, fit_target), 1.0)
    log_unigram = np.log(unigram / unigram.sum())
    log_bigram = np.log(bigram / bigram.sum(axis=1, keepdims=True))
    return {
        "unigram": _score(log_unigram[None, :], np.zeros_like(context), target),
        "bigram": _score(log_bigram, context, target),
    }


def _positions(data: TensorDataset) -> tuple[np.ndarray, np.ndarray]:
    """(input token, target) at every scored position."""
    inputs, targets = (t.numpy() for t in data.tensors)
    mask = targets != IGNORE
    return inputs[mask], targets[mask]


def _score(table: np.ndarray, context: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Mean loss and accuracy of the log-probability ``table`` (one row per context) at each (context, target)."""
    if not len(target):
        return {"loss": float("nan"), "accuracy": float("nan")}
    best = table.argmax(axis=1)
    return {"loss": float(-table[context, target].mean()), "accuracy": float((best[context] == target).mean())}
