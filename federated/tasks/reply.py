"""Reply detection: is a message a reply inside a thread, or a top-level message? From its text alone.

Labels need no annotation: every workspace already has them. Label 1 (reply) when the message's own
``thread_ts`` is set and differs from its own ``ts`` (``ChatMessage.is_reply``, Slack's convention); label 0
(top-level) for a plain message or a thread parent. Sources: Slack exports and the synthetic generator keep
``thread_ts``; JSONL carries it when its records have a ``thread_ts`` field; IRC logs keep no reply links, so
every IRC message is top-level and the task has one class there (nothing to learn).

Privacy unit: one message is one sample. Its input is the message's first ``seq_len`` UTF-8 bytes (longer
messages are truncated) and its label is a property of the message itself (its own ``ts`` and ``thread_ts``),
never of other messages' content: removing one message removes exactly its own sample and changes no other
sample's input or label (a reply stays a reply when its parent is removed, since its ``thread_ts`` is its
own field). For member-level DP, ``encode_groups`` stacks up to ``k`` messages of one member, with their
labels, into one sample; the sample's loss is the mean over its messages, so one member's whole contribution
is one clipped gradient.

Vocabulary: the 256 byte values plus PAD, fixed and public. Model: a small byte-level convolution built only
from ``nn.Embedding`` and ``nn.Linear`` (each width-3 window of positions is concatenated and mixed by a
Linear layer, twice), then the mean and the max over the message's bytes, then two logits. Every layer is
one Opacus computes per-sample gradients for with ExpandedWeights, the node's fast path.

Metrics: loss (cross-entropy per message), accuracy, balanced accuracy (the mean recall of the two classes;
replies are the minority), F1 of the reply class, and ``majority_accuracy``, the accuracy of always
predicting the larger class of the same data: the baseline a model must beat.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from federated.data.records import ChatMessage
from federated.tasks.base import seeded_model

PAD = 256
VOCAB_SIZE = 257
IGNORE = -100
CLASSES = 2
"""0: top-level message (plain or thread parent), 1: thread reply."""


@dataclass(frozen=True)
class ModelShape:
    """Size of the byte convolution."""

    d_embed: int = 32
    d_hidden: int = 64


def _windows(x: torch.Tensor) -> torch.Tensor:
    """Each position's (previous, own, next) vectors, concatenated; windows stop at the message's edges."""
    previous = F.pad(x[..., :-1, :], (0, 0, 1, 0))
    following = F.pad(x[..., 1:, :], (0, 0, 0, 1))
    return torch.cat([previous, x, following], dim=-1)


class ByteConvClassifier(nn.Module):
    """Logits of shape (batch, messages, 2) from byte ids of shape (batch, messages, seq_len); PAD is ignored."""

    def __init__(self, shape: ModelShape) -> None:
        super().__init__()
        self.tok = nn.Embedding(VOCAB_SIZE, shape.d_embed)
        self.conv1 = nn.Linear(3 * shape.d_embed, shape.d_hidden)
        self.conv2 = nn.Linear(3 * shape.d_hidden, shape.d_hidden)
        self.ln = nn.LayerNorm(2 * shape.d_hidden)
        self.head = nn.Linear(2 * shape.d_hidden, CLASSES)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        present = (idx != PAD).unsqueeze(-1)
        x = self.tok(idx) * present
        x = F.gelu(self.conv1(_windows(x))) * present
        x = F.gelu(self.conv2(_windows(x))) * present
        count = present.sum(dim=-2)
        mean = x.sum(dim=-2) / count.clamp(min=1)
        # An empty message has no byte to take the max over: its max features are 0, like its mean.
        peak = torch.where(count > 0, x.masked_fill(~present, float("-inf")).amax(dim=-2), 0.0)
        return self.head(self.ln(torch.cat([mean, peak], dim=-1)))


class ReplyTask:
    """Per-message reply detection from text; metrics are accuracy, balanced accuracy and reply F1."""

    name = "reply"

    def __init__(self, seq_len: int = 64, shape: ModelShape = ModelShape()) -> None:
        self.seq_len = seq_len
        self.shape = shape

    def build_model(self, seed: int) -> nn.Module:
        return seeded_model(seed, lambda: ByteConvClassifier(self.shape))

    def encode(self, messages: Sequence[ChatMessage]) -> TensorDataset:
        return self.encode_groups([[m] for m in messages], per_group=1)

    def encode_groups(self, groups: Sequence[Sequence[ChatMessage]], per_group: int) -> TensorDataset:
        """One sample per group of at most ``per_group`` messages (extra messages are an error, not dropped):
        inputs (groups, per_group, seq_len) byte ids, targets (groups, per_group) labels, ``IGNORE`` where a
        group has fewer messages."""
        t = self.seq_len
        inputs = np.full((len(groups), per_group, t), PAD, dtype=np.int64)
        targets = np.full((len(groups), per_group), IGNORE, dtype=np.int64)
        for i, group in enumerate(groups):
            if len(group) > per_group:
                raise ValueError(f"group {i} has {len(group)} messages, more than per_group={per_group}")
            for j, message in enumerate(group):
                data = np.frombuffer(message.text.encode("utf-8")[:t], dtype=np.uint8)
                inputs[i, j, :len(data)] = data
                targets[i, j] = int(message.is_reply)
        return TensorDataset(torch.from_numpy(inputs), torch.from_numpy(targets))

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        per_message = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=IGNORE, reduction="none")
        counts = (targets != IGNORE).sum(dim=1).clamp(min=1)
        # Each sample's mean over its messages, then the batch mean: one sample (message or member) is one DP unit.
        return (per_message.sum(dim=1) / counts).mean()

    @torch.no_grad()
    def evaluate(self, model: nn.Module, data: TensorDataset, batch_size: int = 256) -> dict[str, float]:
        model.eval()
        total_loss = 0.0
        truth, predicted = [], []
        for inputs, targets in DataLoader(data, batch_size=batch_size):
            logits = model(inputs)
            mask = targets != IGNORE
            total_loss += F.cross_entropy(logits[mask], targets[mask], reduction="sum").item()
            truth.append(targets[mask])
            predicted.append(logits.argmax(dim=-1)[mask])
        y = torch.cat(truth) if truth else torch.zeros(0, dtype=torch.long)
        p = torch.cat(predicted) if predicted else torch.zeros(0, dtype=torch.long)
        return {"loss": total_loss / max(len(y), 1), **classification_metrics(y, p)}


def classification_metrics(truth: torch.Tensor, predicted: torch.Tensor) -> dict[str, float]:
    """Accuracy, balanced accuracy (mean recall over the classes present), reply F1 (0 when there is no
    reply and none is predicted) and the majority-class accuracy of ``truth``; all 0 for no messages."""
    n = len(truth)
    if n == 0:
        return {"accuracy": 0.0, "balanced_accuracy": 0.0, "reply_f1": 0.0, "majority_accuracy": 0.0}
    recalls = [float((predicted[truth == c] == c).float().mean()) for c in range(CLASSES) if (truth == c).any()]
    true_pos = int(((predicted == 1) & (truth == 1)).sum())
    predicted_pos, actual_pos = int((predicted == 1).sum()), int((truth == 1).sum())
    f1 = 2 * true_pos / (predicted_pos + actual_pos) if predicted_pos + actual_pos else 0.0
    return {"accuracy": float((predicted == truth).float().mean()),
            "balanced_accuracy": sum(recalls) / len(recalls),
            "reply_f1": f1,
            "majority_accuracy": max(actual_pos, n - actual_pos) / n}
