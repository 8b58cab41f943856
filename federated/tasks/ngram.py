"""Byte unigram and bigram baselines, on exactly the bytes the nextchar task predicts.

Each text contributes its first ``seq_len`` UTF-8 bytes (as ``NextCharTask.encode`` truncates them); a
message's first byte is predicted from the context BOS, every later byte from the byte before it.

- Unigram: ``P(b) = (c(b) + 1) / (N + 256)`` (add-one over the 256 byte values; ``N`` training bytes).
- Bigram: ``P(b | a) = (c(a, b) + k P(b)) / (c(a) + k)``, the bigram counts smoothed towards the unigram
  with prior strength ``k`` (``a`` is a byte or BOS); an unseen context gives the unigram.

``evaluate_ngram`` reports what ``NextCharTask.evaluate`` reports for the model: ``loss`` (mean negative
log-likelihood in nats per predicted byte) and ``accuracy`` (the most probable byte is the true one).
Research baselines only: fitting one reads a workspace's training split, so it runs where that split is held.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BYTES = 256
BOS_CONTEXT = 256


def byte_pairs(texts: Sequence[str], seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(context, target) arrays over every predicted byte of ``texts``; the context of a first byte is BOS."""
    contexts, targets = [], []
    for text in texts:
        data = np.frombuffer(text.encode("utf-8")[:seq_len], dtype=np.uint8).astype(np.int64)
        if len(data):
            contexts.append(np.concatenate(([BOS_CONTEXT], data[:-1])))
            targets.append(data)
    if not targets:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(contexts), np.concatenate(targets)


def fit_unigram(texts: Sequence[str], seq_len: int) -> np.ndarray:
    """``P(b)`` for the 256 byte values, add-one smoothed (shape ``(256,)``)."""
    _, targets = byte_pairs(texts, seq_len)
    counts = np.bincount(targets, minlength=BYTES).astype(np.float64)
    return (counts + 1) / (counts.sum() + BYTES)


def fit_bigram(texts: Sequence[str], seq_len: int, strength: float = 1.0) -> np.ndarray:
    """``P(b | a)`` as a (257, 256) table (row 256 is the BOS context), smoothed towards the unigram."""
    if not strength > 0:
        raise ValueError(f"strength: expected a value > 0, got {strength}")
    contexts, targets = byte_pairs(texts, seq_len)
    unigram = fit_unigram(texts, seq_len)
    counts = np.zeros((BYTES + 1, BYTES), dtype=np.float64)
    np.add.at(counts, (contexts, targets), 1.0)
    return (counts + strength * unigram) / (counts.sum(axis=1, keepdims=True) + strength)


def evaluate_ngram(table: np.ndarray, texts: Sequence[str], seq_len: int) -> dict[str, float]:
    """Loss (nats per byte) and accuracy of a unigram (``(256,)``) or bigram (``(257, 256)``) table on ``texts``."""
    contexts, targets = byte_pairs(texts, seq_len)
    if len(targets) == 0:
        return {"loss": 0.0, "accuracy": 0.0}
    rows = np.broadcast_to(table, (BYTES + 1, BYTES)) if table.ndim == 1 else table
    probs = rows[contexts, targets]
    best = rows.argmax(axis=1)[contexts]
    return {"loss": float(-np.log(probs).mean()), "accuracy": float((best == targets).mean())}


def ngram_baselines(train: Sequence[str], held_out: Sequence[str], seq_len: int) -> dict[str, dict[str, float]]:
    """``{"unigram": {"loss", "accuracy"}, "bigram": {...}}``: both fitted on ``train``, scored on ``held_out``."""
    return {"unigram": evaluate_ngram(fit_unigram(train, seq_len), held_out, seq_len),
            "bigram": evaluate_ngram(fit_bigram(train, seq_len), held_out, seq_len)}
