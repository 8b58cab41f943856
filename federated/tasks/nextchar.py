"""Next-character prediction over chat messages (an autocomplete model).

Vocabulary: the 256 UTF-8 byte values plus BOS and PAD. It is fixed and public,
so nothing about any workspace's text is revealed by it.

One sample is one message: its first ``seq_len`` bytes, predicted one byte at a
time from the bytes before it. Only the message's text enters its sample. Longer messages are truncated, so each message
contributes exactly one sample and message-level DP clips exactly one gradient
per message. For member-level DP, ``encode_groups`` packs up to ``k`` messages of
one member into one sample of ``k * seq_len`` positions; the model treats each
``seq_len`` block as a separate message (positions restart, attention stays
inside the block), so one clipped gradient covers everything in the group.

Model: a small pre-norm causal transformer built only from ``nn.Embedding``,
``nn.Linear`` and ``nn.LayerNorm``, all of which Opacus computes per-sample
gradients for cheaply (a recurrent model costs far more under DP-SGD).
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

BOS = 256
PAD = 257
VOCAB_SIZE = 258
IGNORE = -100


@dataclass(frozen=True)
class ModelShape:
    """Size of the causal transformer."""

    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        heads = [z.view(b, t, self.n_heads, c // self.n_heads).transpose(1, 2) for z in (q, k, v)]
        if mask is None:
            y = F.scaled_dot_product_attention(*heads, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(*heads, attn_mask=mask)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


class Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_heads)
        self.ln2 = nn.LayerNorm(d_model)
        self.fc = nn.Linear(d_model, 4 * d_model)
        self.out = nn.Linear(4 * d_model, d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), mask)
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class CharTransformer(nn.Module):
    """Causal byte-level language model: logits of shape (batch, length, VOCAB_SIZE).

    ``length`` is ``seq_len`` or a multiple of it; each ``seq_len`` block is an independent message.
    """

    def __init__(self, seq_len: int, shape: ModelShape) -> None:
        super().__init__()
        self.seq_len = seq_len
        self.tok = nn.Embedding(VOCAB_SIZE, shape.d_model)
        self.pos = nn.Embedding(seq_len, shape.d_model)
        self.blocks = nn.ModuleList([Block(shape.d_model, shape.n_heads) for _ in range(shape.n_layers)])
        self.ln = nn.LayerNorm(shape.d_model)
        self.head = nn.Linear(shape.d_model, VOCAB_SIZE)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        length = idx.shape[1]
        # Positions are expanded to the batch so Opacus sees a per-sample input for pos, and made contiguous
        # because Opacus' ghost-clipping norm sampler for embeddings cannot take an expanded view.
        positions = (torch.arange(length, device=idx.device) % self.seq_len).expand_as(idx).contiguous()
        mask = None if length <= self.seq_len else _block_causal_mask(length, self.seq_len, idx.device)
        x = self.tok(idx) + self.pos(positions)
        for block in self.blocks:
            x = block(x, mask)
        return self.head(self.ln(x))


def _block_causal_mask(length: int, block: int, device: torch.device) -> torch.Tensor:
    """True where position i may attend to j: same block and j <= i."""
    i = torch.arange(length, device=device)
    return (i[:, None] // block == i[None, :] // block) & (i[None, :] <= i[:, None])


class NextCharTask:
    """Flagship task: per-message next-byte prediction; metrics are byte accuracy and loss."""

    name = "nextchar"

    def __init__(self, seq_len: int = 64, shape: ModelShape = ModelShape()) -> None:
        self.seq_len = seq_len
        self.shape = shape

    def build_model(self, seed: int) -> nn.Module:
        return seeded_model(seed, lambda: CharTransformer(self.seq_len, self.shape))

    def encode(self, messages: Sequence[ChatMessage]) -> TensorDataset:
        return self.encode_texts([m.text for m in messages])

    def encode_groups(self, groups: Sequence[Sequence[ChatMessage]], per_group: int) -> TensorDataset:
        """One sample per group of at most ``per_group`` messages (extra messages are an error, not dropped)."""
        return self.encode_text_groups([[m.text for m in group] for group in groups], per_group)

    def encode_texts(self, texts: Sequence[str]) -> TensorDataset:
        """One sample per text: what ``encode`` makes of messages with these texts."""
        return self.encode_text_groups([[text] for text in texts], per_group=1)

    def encode_text_groups(self, groups: Sequence[Sequence[str]], per_group: int) -> TensorDataset:
        """One sample per group of at most ``per_group`` texts (extra texts are an error, not dropped)."""
        t = self.seq_len
        # Built in NumPy and handed to torch once: per-message torch tensors cost ~10x more on small workspaces.
        inputs = np.full((len(groups), per_group * t), PAD, dtype=np.int64)
        targets = np.full((len(groups), per_group * t), IGNORE, dtype=np.int64)
        for i, group in enumerate(groups):
            if len(group) > per_group:
                raise ValueError(f"group {i} has {len(group)} messages, more than per_group={per_group}")
            for j, text in enumerate(group):
                data = np.frombuffer(text.encode("utf-8")[:t], dtype=np.uint8)
                if len(data):
                    start = j * t
                    inputs[i, start] = BOS
                    inputs[i, start + 1: start + len(data)] = data[:-1]
                    targets[i, start: start + len(data)] = data
        return TensorDataset(torch.from_numpy(inputs), torch.from_numpy(targets))

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        per_token = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=IGNORE, reduction="none")
        counts = (targets != IGNORE).sum(dim=1).clamp(min=1)
        # Each message's mean token loss, then the batch mean: each message is one DP sample.
        return (per_token.sum(dim=1) / counts).mean()

    @torch.no_grad()
    def score_texts(self, model: nn.Module, texts: Sequence[str], batch_size: int = 1024) -> np.ndarray:
        """Total negative log-likelihood (nats) of each text's bytes; texts longer than ``seq_len`` bytes are
        an error, since the model never sees their tail."""
        too_long = [t for t in texts if len(t.encode("utf-8")) > self.seq_len]
        if too_long:
            raise ValueError(f"{too_long[0]!r} is {len(too_long[0].encode('utf-8'))} bytes; the model scores at "
                             f"most seq_len={self.seq_len}")
        model.eval()
        scores = []
        for start in range(0, len(texts), batch_size):
            inputs, targets = self.encode_texts(texts[start:start + batch_size]).tensors
            logits = model(inputs)
            per_token = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=IGNORE, reduction="none")
            scores.append(per_token.sum(dim=1).double().numpy())
        return np.concatenate(scores) if scores else np.zeros(0)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, data: TensorDataset, batch_size: int = 256) -> dict[str, float]:
        model.eval()
        total_loss, correct, count = 0.0, 0, 0
        for inputs, targets in DataLoader(data, batch_size=batch_size):
            logits = model(inputs)
            mask = targets != IGNORE
            total_loss += F.cross_entropy(logits[mask], targets[mask], reduction="sum").item()
            correct += (logits.argmax(dim=-1)[mask] == targets[mask]).sum().item()
            count += int(mask.sum())
        return {"loss": total_loss / max(count, 1), "accuracy": correct / max(count, 1)}
