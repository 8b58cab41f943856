"""Evaluate a saved model on one workspace, on its operator's machine, at its operator's request.

The workspace need not have trained, nor consent to anything: nothing is sent anywhere, so no consent
or budget is involved (``optin evaluate``). The held-out split is the one the workspace's node evaluates
on (``clients.workspace_cache.load_split`` keyed by the node secret, with the policy's
``held_out_fraction``), each message encoded as the node encodes it (``Task.encode``), and scored with
``Task.evaluate``, so the figures equal what the node would log for the same model. Unigram and bigram
baselines (``federated.tasks.baselines``) are fitted on the workspace's training split and scored on the
same positions.

What it writes: nothing to the ledger or the audit log. The audit log's ``evaluation`` entries are a node's
answers to a run's ``evaluate`` message (keyed by run and round, read back into that run's node-local
figures), which a local evaluation is not. The one file it may create is ``node.secret``, on a workspace
whose node never read its data: the node creates the same file on first use, and it keys the split.
Without ``policy.toml`` the policy's defaults (``held_out_fraction`` 0.2) apply; a malformed one is a
``PolicyError``. Only next-character models are scored here (the baselines are byte n-grams); another task's
model is a ``ConfigError``, its node-local figures are in the audit log's ``evaluation`` entries.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clients.workspace_cache import load_split
from clients.workspace_node import DATA_FOLDER, WorkspaceNode
from federated.errors import ConfigError, DataError
from federated.privacy.node_secret import SECRET_FILE
from federated.privacy.policy import POLICY_FILE, Policy, read_policy
from federated.tasks.model_file import LoadedModel
from federated.tasks.nextchar import NextCharTask
from federated.tasks.ngram import ngram_baselines


@dataclass(frozen=True)
class LocalEvaluation:
    """Held-out figures of a model and the baselines on one workspace (losses in nats per byte)."""

    workspace: Path
    held_out_messages: int
    held_out_bytes: int
    held_out_fraction: float
    policy_found: bool
    secret_created: bool
    scores: dict[str, dict[str, float]]
    """``model``, ``unigram``, ``bigram`` to ``{"loss", "accuracy"}``."""


def evaluate_locally(loaded: LoadedModel, folder: Path) -> LocalEvaluation:
    """Score ``loaded`` and the baselines on ``folder``'s held-out split; ``DataError`` if it has none."""
    folder = Path(folder)
    task = loaded.task
    if not isinstance(task, NextCharTask):
        raise ConfigError(f"task {task.name!r}: local evaluation scores next-character models against byte n-gram "
                          "baselines; this model's held-out figures are in the audit log's evaluation entries")
    if not (folder / DATA_FOLDER).is_dir():
        raise DataError(f"{folder}: no {DATA_FOLDER}/ folder; expected a workspace folder (policy.toml, data/, ...)")
    policy_path = folder / POLICY_FILE
    policy_found = policy_path.exists()
    policy = read_policy(policy_path) if policy_found else Policy()
    node = WorkspaceNode(folder)
    secret_created = not (folder / SECRET_FILE).exists()
    train, held_out = load_split(folder / DATA_FOLDER, node.name, node.secret(), policy.held_out_fraction)
    if not held_out:
        raise DataError(f"{folder}: no held-out messages (held_out_fraction {policy.held_out_fraction}); "
                        "nothing to evaluate on")
    held_out_data = task.encode(held_out)
    scores = {"model": task.evaluate(loaded.model, held_out_data)}
    scores.update(ngram_baselines([m.text for m in train], [m.text for m in held_out], task.seq_len))
    predicted = int((held_out_data.tensors[1] >= 0).sum())
    return LocalEvaluation(folder, len(held_out), predicted, policy.held_out_fraction, policy_found, secret_created,
                           scores)
