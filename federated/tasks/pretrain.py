"""Public pretraining of the next-byte model on the IRC corpus: weights that cost no workspace any privacy.

What it reads: the IRC Disentanglement corpus (CC-BY-4.0, ``federated.data.irc_corpus``), only the
partitions named (by default ``PRETRAIN_PARTITIONS``, #ubuntu 2004-2011). Reports that evaluate the
pretrained model use the other partitions (``EVALUATION_PARTITIONS``: #ubuntu 2012-2018, #linux,
#mediawiki, #rust, #stripe, #ubuntu-meeting), so no evaluation text was ever pretrained on. The
checkpoint's metadata lists every file read, with its SHA-256 (``files``), so anyone can check the
disjointness against the files an evaluation workspace's manifest names.

Preprocessing is the nodes' own: each partition is read as an IRC workspace (a manifest in a temporary
folder), loaded and scrubbed by ``federated.data.load_workspace`` exactly as a node loads its workspace,
and encoded by the task (one sample per message, its first ``seq_len`` bytes). No split is made: the
whole public text is training text.

Guarantee: the same corpus files, arguments and seed give bit-identical weights on the same torch
build (single thread, CPU): the model is initialised by ``task.build_model(seed)`` and batches are drawn
by a ``torch.Generator`` seeded with ``seed``. Training is plain (non-private) Adam: the text is public.
"""

from __future__ import annotations

import hashlib
import logging
import math
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from federated.data import PARTITIONS, build_irc_workspaces, load_workspace
from federated.errors import ConfigError, DataError
from federated.tasks.nextchar import ModelShape, NextCharTask

log = logging.getLogger("optin.tasks.pretrain")

PRETRAIN_PARTITIONS = ("ubuntu-2004-2005", "ubuntu-2006", "ubuntu-2007", "ubuntu-2008-2009", "ubuntu-2010-2011")
EVALUATION_PARTITIONS = tuple(p.name for p in PARTITIONS if p.name not in PRETRAIN_PARTITIONS)
DEFAULT_STEPS = 2000


def public_texts(corpus: Path, partitions: Sequence[str]) -> tuple[list[str], list[dict[str, str]]]:
    """The scrubbed messages of ``partitions`` in corpus order, and the files read (path under ``data/``,
    partition, SHA-256). ``DataError`` for an unknown partition, a partition without files or no corpus."""
    known = {p.name: p for p in PARTITIONS}
    unknown = [name for name in partitions if name not in known]
    if unknown or not partitions:
        raise DataError(f"partitions: unknown or none {unknown}; expected names from {sorted(known)}")
    data_dir = (Path(corpus) / "data").resolve()
    chosen = tuple(known[name] for name in dict.fromkeys(partitions))
    empty = [p.name for p in chosen if not p.files(data_dir)]
    if empty:
        raise DataError(f"{data_dir}: partitions {empty} have no files (is this the irc-disentanglement corpus?)")
    texts: list[str] = []
    files: list[dict[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="optin-pretrain-") as tmp:
        folders = {f.name: f for f in build_irc_workspaces(corpus, Path(tmp), partitions=chosen)}
        for partition in chosen:
            texts.extend(load_workspace(folders[partition.name] / "data", name=partition.name).texts)
            files.extend({"path": str(f.relative_to(data_dir)), "partition": partition.name, "sha256": _sha256(f)}
                         for f in partition.files(data_dir))
    return texts, files


def pretrain(corpus: Path, partitions: Sequence[str] = PRETRAIN_PARTITIONS, steps: int = DEFAULT_STEPS,
             seed: int = 0, *, batch_size: int = 64, lr: float = 3e-3, seq_len: int = 64,
             shape: ModelShape = ModelShape(),
             progress: Callable[[int, float], None] | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Train the nextchar model on the public text of ``partitions`` for ``steps`` Adam steps.

    Returns (state_dict, metadata); metadata records the files used (with SHA-256), the partitions,
    the arguments, the number of messages and the mean training loss (nats/byte) of the last 100 steps.
    The learning rate warms up over the first 5% of steps and decays on a cosine to 10% of ``lr``.
    ``progress(step, loss)`` is called after every step. ``ConfigError`` for non-positive sizes.
    """
    for name, value in (("steps", steps), ("batch_size", batch_size), ("lr", lr), ("seq_len", seq_len)):
        if value <= 0:
            raise ConfigError(f"{name}: expected a positive value, got {value}")
    texts, files = public_texts(corpus, partitions)
    task = NextCharTask(seq_len=seq_len, shape=shape)
    inputs, targets = task.encode_texts(texts).tensors
    model = task.build_model(seed)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, steps, warmup))
    order = torch.Generator().manual_seed(seed)
    recent: list[float] = []
    for step in range(steps):
        batch = torch.randint(len(texts), (batch_size,), generator=order)
        loss = task.loss(model(inputs[batch]), targets[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        recent = [*recent[-99:], loss.item()]
        if progress is not None:
            progress(step + 1, recent[-1])
    metadata = {
        "task": task.name, "seq_len": seq_len, "shape": asdict(shape), "seed": seed, "steps": steps,
        "batch_size": batch_size, "lr": lr, "optimizer": "adam, 5% warmup, cosine to 10%",
        "corpus": "IRC Disentanglement (Kummerfeld et al. 2019; Gouravajhala et al. 2023), CC-BY-4.0",
        "partitions": list(dict.fromkeys(partitions)), "files": files, "messages": len(texts),
        "final_train_loss": sum(recent) / len(recent), "torch": str(torch.__version__),
    }
    log.info("pretrained %d steps on %d messages from %d files: loss %.3f", steps, len(texts), len(files),
             metadata["final_train_loss"])
    return {name: t.detach().clone() for name, t in model.state_dict().items()}, metadata


def pretraining_overlap(metadata: dict[str, Any], corpus: Path, partitions: Sequence[str]) -> list[str]:
    """Files of ``partitions`` (paths under the corpus' ``data/``) that the checkpoint with ``metadata`` was
    pretrained on, by path or by content (SHA-256): empty when its pretraining text is disjoint from them."""
    data_dir = (Path(corpus) / "data").resolve()
    used_paths = {f["path"] for f in metadata["files"]}
    used_hashes = {f["sha256"] for f in metadata["files"]}
    return sorted(str(f.relative_to(data_dir)) for p in PARTITIONS if p.name in partitions for f in p.files(data_dir)
                  if str(f.relative_to(data_dir)) in used_paths or _sha256(f) in used_hashes)


def _lr_factor(step: int, steps: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, progress)))


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
