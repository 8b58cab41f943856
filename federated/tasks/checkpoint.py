"""Pretrained checkpoints: a state_dict and its metadata in one safetensors file, read without running code.

Guarantee: the file is safetensors (a JSON header and raw tensor bytes); nothing is unpickled, so a hostile
file cannot run code while it is read. What the weights are worth is another matter: check the metadata
(which text, which task) before trusting them. A file that is not such a checkpoint is a ``DataError``
naming it. The metadata (plain JSON values) is kept as one JSON string in the safetensors header.

``save_checkpoint`` and ``load_checkpoint`` are the only two functions that know the file format.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from federated.errors import ConfigError, DataError
from federated.tasks.base import Task

FORMAT = "optin-checkpoint/1"

SHIPPED = {"irc-ubuntu-2004-2011": Path(__file__).parent / "pretrained" / "nextchar-irc-ubuntu-2004-2011.safetensors"}
"""Checkpoints that ship with Optin, by the name ``init-model`` may give instead of a path. Each was written by
``optin pretrain`` with its defaults (docs/experiments.md, "Public pretraining", says how to rebuild it)."""


def checkpoint_path(init_model: str) -> Path:
    """The file ``init-model`` names: a shipped checkpoint's name, else a path."""
    return SHIPPED.get(init_model, Path(init_model))


def save_checkpoint(path: Path, state_dict: Mapping[str, torch.Tensor], metadata: Mapping[str, Any]) -> Path:
    """Write ``state_dict`` (tensors) and ``metadata`` (JSON values) to ``path``; refuses to overwrite."""
    path = Path(path)
    if path.exists():
        raise DataError(f"{path}: refusing to overwrite an existing file")
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in state_dict.items()}
    partial = path.with_name(path.name + ".partial")
    save_file(tensors, partial, metadata={"format": FORMAT, "optin": json.dumps(dict(metadata))})
    partial.replace(path)
    return path


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state_dict, metadata) of the checkpoint at ``path``; ``DataError`` if it is missing or not one."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: checkpoint not found (expected a file written by 'optin pretrain')")
    try:
        with safe_open(path, framework="pt", device="cpu") as file:
            header = file.metadata() or {}
            state = {name: file.get_tensor(name) for name in file.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise DataError(f"{path}: not a readable Optin checkpoint ({type(exc).__name__}: {exc})") from exc
    if header.get("format") != FORMAT:
        raise DataError(f"{path}: expected an Optin checkpoint with format {FORMAT!r}")
    try:
        metadata = json.loads(header.get("optin", ""))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: metadata is not JSON ({exc})") from exc
    if not isinstance(metadata, dict):
        raise DataError(f"{path}: metadata is not a JSON object")
    return state, metadata


def initial_state_dict(task: Task, seed: int, init_model: str = "") -> dict[str, torch.Tensor]:
    """A run's initial weights: ``task.build_model(seed)``, or the checkpoint ``init_model`` names (a path, or the
    name of one in :data:`SHIPPED`).

    The checkpoint must be for this task (its metadata's ``task`` and ``seq_len``) and have exactly the
    names, shapes and dtypes of the task's model; otherwise ``ConfigError`` (run config key ``init-model``)
    says what differs, since nodes would refuse such weights anyway.
    """
    expected = task.build_model(seed).state_dict()
    if not init_model:
        return dict(expected)
    state, metadata = load_checkpoint(checkpoint_path(init_model))
    for key, want in (("task", task.name), ("seq_len", getattr(task, "seq_len", None))):
        if metadata.get(key) != want:
            raise ConfigError(f"init-model {init_model}: checkpoint {key} is {metadata.get(key)!r}, the run's is "
                              f"{want!r}")
    layout = {name: (tuple(t.shape), t.dtype) for name, t in expected.items()}
    found = {name: (tuple(t.shape), t.dtype) for name, t in state.items()}
    if found != layout:
        differ = sorted(set(layout) ^ set(found) | {n for n in set(layout) & set(found) if layout[n] != found[n]})
        raise ConfigError(f"init-model {init_model}: weights do not fit the task's model (differing: "
                          f"{', '.join(differ[:5])}{', ...' if len(differ) > 5 else ''})")
    return {name: state[name] for name in expected}
