"""The trained global model on disk: ``model.safetensors`` (the weights) and ``model.json`` (its model card).

A run's ServerApp writes both into the run's results folder (``save_model``); ``load_model`` reads them back
into a ready model in one call.

Guarantees:

- **No code runs on load.** The weights are read with ``safetensors`` (a JSON header and raw tensor bytes);
  nothing is unpickled, so a model file from anywhere can be loaded without trusting its author.
- **What loads is what was written.** The card names its weights file and that file's SHA-256; the tensors
  must be exactly the task's model parameters (names, shapes, dtypes). Any mismatch, a missing file, a card
  that is not this format, an unknown task or a file that is not safetensors is a ``ConfigError`` naming the
  file and what was wrong.
- **Whole or absent.** Each file is written to a temporary file in the same folder and renamed into place,
  weights first: a card exists only once its weights are complete.

The card states what the model is (task, ``seq_len``, model shape), where it came from (Optin version, run
id, the run config, the rounds) and which privacy claims apply to it (``privacy_claims``). It holds no ε of
any workspace: those are each workspace's own, in its ledger.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from federated.config import CENTRAL_MODES, RunConfig
from federated.errors import ConfigError
from federated.limits import MIB
from federated.safe_files import read_bytes
from federated.tasks.base import Task, get_task

WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "model.json"
FORMAT = "optin-model/1"
CARD_MAX_BYTES = 1 * MIB
WEIGHTS_MAX_BYTES = 1024 * MIB
CARD_MAX_SEQ_LEN = 65_536
"""The largest ``seq_len`` a card may give: the model is built from the card before its tensors are compared, so a
card must not be able to ask for an arbitrarily large position table (far above any node's ``max-seq-len``)."""
CARD_FIELDS = ("format", "weights", "weights_sha256", "task", "seq_len", "model_shape", "optin_version", "run_id",
               "created", "run_config", "rounds", "privacy")
LEDGER_NOTE = ("each workspace's ε is its own: see each workspace's ledger (optin ledger show --workspace DIR); "
               "the server does not state it")


@dataclass(frozen=True)
class LoadedModel:
    """A model read back from disk: its task, the model (eval mode, CPU) and its card as written."""

    task: Task
    model: nn.Module
    card: dict[str, Any]


def privacy_claims(config: RunConfig, central_epsilon: float | None, not_private_updates: int) -> dict[str, Any]:
    """Which privacy claims apply to a model trained with ``config``.

    Local DP-SGD is each node's claim, accounted in its own ledger (a node may add more noise than asked, and
    its ε spans every run it joined), so only the requested settings are stated here. Central DP is the
    server's claim: ``central_epsilon`` is the ε its accountant reported for the releases of this run (RDP,
    Gaussian mechanism, workspace-level), or None when no central release happened. ``not_private_updates``
    counts updates whose nodes said they used a repeatable seed (their noise is not secret).
    """
    claims: dict[str, Any] = {"dp_mode": config.dp_mode}
    if config.dp_mode in ("local", "both"):
        claims["local"] = {
            "mechanism": "DP-SGD (Opacus) on each training workspace's node: per-sample clipping, Gaussian noise, "
                         "Poisson sampling; message- or member-level as each workspace's policy says",
            "requested": {"noise_multiplier": config.noise_multiplier, "max_grad_norm": config.max_grad_norm,
                          "sample_rate": config.sample_rate, "local_steps": config.local_steps},
            "epsilon": LEDGER_NOTE,
        }
    if config.dp_mode in CENTRAL_MODES:
        claims["central"] = {
            "mechanism": "workspace-level DP-FedAvg: each workspace's update clipped, Gaussian noise on the average "
                         "(RDP accountant, no amplification)",
            "noise_multiplier": config.central_noise_multiplier, "clipping_norm": config.central_clipping_norm,
            "epsilon": central_epsilon, "delta": config.central_delta,
        }
    if config.dp_mode == "none":
        claims["none"] = "trained without differential privacy: no privacy claim applies to this model"
    claims["not_private_updates"] = not_private_updates
    return claims


def save_model(folder: Path, task: Task, state_dict: Mapping[str, torch.Tensor], *, run_id: str,
               config: RunConfig, rounds: Mapping[str, Any], privacy: Mapping[str, Any]) -> Path:
    """Write ``state_dict`` to ``folder/model.safetensors`` and its card to ``folder/model.json``; returns the card.

    ``rounds`` and ``privacy`` go into the card as given (``privacy_claims`` builds the latter).
    """
    folder.mkdir(parents=True, exist_ok=True)
    weights = save_safetensors({name: t.detach().cpu().contiguous() for name, t in state_dict.items()},
                               metadata={"format": "pt"})
    _write_atomic(folder / WEIGHTS_FILE, weights)
    shape = getattr(task, "shape", None)
    card = {
        "format": FORMAT,
        "weights": WEIGHTS_FILE,
        "weights_sha256": hashlib.sha256(weights).hexdigest(),
        "task": task.name,
        "seq_len": config.seq_len,
        "model_shape": asdict(shape) if is_dataclass(shape) else None,
        "optin_version": _version(),
        "run_id": run_id,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "run_config": config.to_mapping(),
        "rounds": dict(rounds),
        "privacy": dict(privacy),
    }
    path = folder / CARD_FILE
    _write_atomic(path, (json.dumps(card, indent=2, allow_nan=False) + "\n").encode("utf-8"))
    return path


def load_model(path: Path) -> LoadedModel:
    """The model at ``path``: a run folder, its ``model.json``, or its ``model.safetensors`` (the card beside it).

    Raises ``ConfigError`` naming the file when a file is missing or unreadable, the card is not an Optin model
    card, the task is unknown, the weights are not safetensors, differ from the card's hash, or do not fit the
    task's model (names, shapes, dtypes).
    """
    card_path = _card_path(Path(path))
    card = _read_card(card_path)
    try:
        task = get_task(card["task"], card["seq_len"])
    except ConfigError as exc:
        raise ConfigError(f"{card_path}: {exc}") from None
    shape = getattr(task, "shape", None)
    if is_dataclass(shape) and card["model_shape"] != asdict(shape):
        raise ConfigError(f"{card_path}: model_shape {card['model_shape']} is not the shape this Optin builds for "
                          f"task {card['task']!r} ({asdict(shape)})")
    weights_path = card_path.parent / card["weights"]
    try:
        data = read_bytes(weights_path, WEIGHTS_MAX_BYTES, root=card_path.parent, error=ConfigError)
    except FileNotFoundError:
        raise ConfigError(f"{weights_path}: weights file named by {card_path} not found") from None
    if hashlib.sha256(data).hexdigest() != card["weights_sha256"]:
        raise ConfigError(f"{weights_path}: SHA-256 differs from weights_sha256 in {card_path} (a corrupted or "
                          "replaced file, or a card of another model)")
    try:
        tensors = load_safetensors(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"{weights_path}: not a safetensors file ({exc})") from None
    model = task.build_model(0)
    _check_tensors(weights_path, tensors, model.state_dict())
    model.load_state_dict(tensors)
    model.eval()
    return LoadedModel(task, model, card)


def _card_path(path: Path) -> Path:
    if path.is_dir():
        card = path / CARD_FILE
    elif path.suffix == ".safetensors":
        card = path.with_suffix(".json")
    else:
        card = path
    if not card.is_file():
        where = f"{path}: no {CARD_FILE} in this folder" if path.is_dir() else f"{card}: model card not found"
        raise ConfigError(f"{where}; expected a run folder holding {CARD_FILE} and {WEIGHTS_FILE}, or either file")
    return card


def _read_card(path: Path) -> dict[str, Any]:
    """The card at ``path`` once every field is present with the expected type; ``ConfigError`` otherwise."""
    text = read_bytes(path, CARD_MAX_BYTES, error=ConfigError)
    try:
        card = json.loads(text)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{path}: not a JSON model card ({exc})") from None
    if not isinstance(card, dict) or card.get("format") != FORMAT:
        got = card.get("format") if isinstance(card, dict) else type(card).__name__
        raise ConfigError(f"{path}: format is {got!r}; expected {FORMAT!r} (an Optin model card)")
    missing = [name for name in CARD_FIELDS if name not in card]
    if missing:
        raise ConfigError(f"{path}: missing field(s) {missing}")
    expected = {"weights": str, "weights_sha256": str, "task": str, "seq_len": int, "run_config": dict,
                "rounds": dict, "privacy": dict}
    for name, kind in expected.items():
        if not isinstance(card[name], kind) or isinstance(card[name], bool):
            raise ConfigError(f"{path}: field {name!r} expected {kind.__name__}, got {card[name]!r}")
    if Path(card["weights"]).name != card["weights"]:
        raise ConfigError(f"{path}: field 'weights' expected a file name beside the card, got {card['weights']!r}")
    if not 0 < card["seq_len"] <= CARD_MAX_SEQ_LEN:
        raise ConfigError(f"{path}: field 'seq_len' expected an integer in 1..{CARD_MAX_SEQ_LEN}, "
                          f"got {card['seq_len']}")
    return card


def _check_tensors(path: Path, tensors: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> None:
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise ConfigError(f"{path}: tensors do not match the task's model: missing {missing[:5]}, "
                          f"unexpected {extra[:5]}")
    for name, want in expected.items():
        got = tensors[name]
        if got.shape != want.shape or got.dtype != want.dtype:
            raise ConfigError(f"{path}: tensor {name!r} is {got.dtype} {list(got.shape)}; the task's model expects "
                              f"{want.dtype} {list(want.shape)}")


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _version() -> str:
    try:
        return importlib.metadata.version("optin")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"
