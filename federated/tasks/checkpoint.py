"""Model checkpoint files: a state_dict and its metadata, written by Optin and read without running code.

Guarantee: ``load_checkpoint`` reads with ``torch.load(..., weights_only=True)``, which unpickles only
tensors and plain containers (dict, list, str, int, float, bool, None), so a hostile file cannot run code
while it is read. What the weights are worth is another matter: check the metadata (which text, which task)
before trusting them. A file that is not such a checkpoint is a ``DataError`` naming it.

``save_checkpoint`` and ``load_checkpoint`` are the only two functions that know the file format.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from federated.errors import ConfigError, DataError
from federated.tasks.base import Task

FORMAT = "optin-checkpoint/1"


def save_checkpoint(path: Path, state_dict: Mapping[str, torch.Tensor], metadata: Mapping[str, Any]) -> Path:
    """Write ``state_dict`` (tensors) and ``metadata`` (plain values only) to ``path``; refuses to overwrite."""
    path = Path(path)
    if path.exists():
        raise DataError(f"{path}: refusing to overwrite an existing file")
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: tensor.detach().clone().contiguous() for name, tensor in state_dict.items()}
    partial = path.with_name(path.name + ".partial")
    torch.save({"format": FORMAT, "state_dict": tensors, "metadata": dict(metadata)}, partial)
    partial.replace(path)
    return path


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state_dict, metadata) of the checkpoint at ``path``; ``DataError`` if it is missing or not one."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: checkpoint not found (expected a file written by 'optin pretrain')")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable Optin checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(content, dict) or content.get("format") != FORMAT:
        raise DataError(f"{path}: expected an Optin checkpoint with format {FORMAT!r}")
    state, metadata = content.get("state_dict"), content.get("metadata")
    if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values()):
        raise DataError(f"{path}: 'state_dict' is not a mapping of names to tensors")
    if not isinstance(metadata, dict):
        raise DataError(f"{path}: 'metadata' is not a mapping")
    return state, metadata


def initial_state_dict(task: Task, seed: int, init_model: str = "") -> dict[str, torch.Tensor]:
    """A run's initial weights: ``task.build_model(seed)``, or the checkpoint at ``init_model`` if one is named.

    The checkpoint must be for this task (its metadata's ``task`` and ``seq_len``) and have exactly the
    names, shapes and dtypes of the task's model; otherwise ``ConfigError`` (run config key ``init-model``)
    says what differs, since nodes would refuse such weights anyway.
    """
    expected = task.build_model(seed).state_dict()
    if not init_model:
        return dict(expected)
    state, metadata = load_checkpoint(Path(init_model))
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
