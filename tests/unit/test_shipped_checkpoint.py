"""The checkpoint that ships with Optin: it fits the default model, it is named by init-model, and its
pretraining text shares no file with the IRC workspaces reports evaluate on."""

from __future__ import annotations

import pytest

from federated.data import irc_corpus_dir, resolve_data_root
from federated.tasks import get_task
from federated.tasks.checkpoint import SHIPPED, initial_state_dict, load_checkpoint
from federated.tasks.pretrain import EVALUATION_PARTITIONS, PRETRAIN_PARTITIONS, pretraining_overlap


def test_the_shipped_checkpoint_starts_a_default_run() -> None:
    (name,) = SHIPPED
    state = initial_state_dict(get_task("nextchar"), seed=0, init_model=name)
    stored, metadata = load_checkpoint(SHIPPED[name])
    assert all(state[k].equal(stored[k]) for k in state)
    assert metadata["task"] == "nextchar" and metadata["files"] and metadata["steps"] >= 1000


def test_its_pretraining_text_is_disjoint_from_the_evaluation_workspaces() -> None:
    root = resolve_data_root()
    if not (root / "irc-disentanglement" / "data").is_dir():
        pytest.skip(f"IRC corpus not found under {root}")
    corpus = irc_corpus_dir(root)
    (path,) = SHIPPED.values()
    _, metadata = load_checkpoint(path)
    assert pretraining_overlap(metadata, corpus, EVALUATION_PARTITIONS) == []
    assert len(pretraining_overlap(metadata, corpus, PRETRAIN_PARTITIONS)) == len(metadata["files"])
