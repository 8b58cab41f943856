"""Public pretraining: repeatable for a seed, and its checkpoint says exactly which corpus files it read."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import pytest
import torch

from federated.data import PARTITIONS, irc_corpus_dir, resolve_data_root
from federated.errors import ConfigError, DataError
from federated.tasks.checkpoint import initial_state_dict, load_checkpoint, save_checkpoint
from federated.tasks.nextchar import ModelShape, NextCharTask
from federated.tasks.pretrain import (EVALUATION_PARTITIONS, PRETRAIN_PARTITIONS, pretrain, pretraining_overlap,
                                      public_texts)
from tests.unit.test_irc_corpus import write_mini_corpus

TINY = {"seq_len": 16, "shape": ModelShape(d_model=16, n_layers=1, n_heads=2), "batch_size": 4}
USED = ("ubuntu-2006", "ubuntu-2007")


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    root = write_mini_corpus(tmp_path / "irc-disentanglement")
    (root / "data" / "test" / "2013-02-02_00.raw.txt").write_text("[05:00] <hal> raring!\n", encoding="utf-8")
    return root


def test_same_seed_same_weights_other_seed_other_weights(corpus: Path) -> None:
    first, _ = pretrain(corpus, USED, steps=3, seed=5, **TINY)
    again, _ = pretrain(corpus, USED, steps=3, seed=5, **TINY)
    other, _ = pretrain(corpus, USED, steps=3, seed=6, **TINY)
    assert first.keys() == again.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)
    untrained = NextCharTask(TINY["seq_len"], TINY["shape"]).build_model(5).state_dict()
    assert not all(torch.equal(first[k], untrained[k]) for k in first)


def test_metadata_lists_exactly_the_files_read_none_from_evaluation(corpus: Path) -> None:
    _, metadata = pretrain(corpus, USED, steps=1, **TINY)
    data = corpus / "data"
    expected = ["train/2006-03-01.train-c.raw.txt", "dev/2006-05-02_10.raw.txt", "train/2007-01-01.train-a.raw.txt"]
    assert [f["path"] for f in metadata["files"]] == expected
    assert all(f["sha256"] == hashlib.sha256((data / f["path"]).read_bytes()).hexdigest() for f in metadata["files"])
    assert metadata["partitions"] == list(USED) and metadata["messages"] == 8
    assert pretraining_overlap(metadata, corpus, EVALUATION_PARTITIONS) == []
    assert pretraining_overlap(metadata, corpus, ["ubuntu-2007"]) == ["train/2007-01-01.train-a.raw.txt"]
    # The same text under an evaluation file's name is caught by its hash.
    (data / "test" / "2013-02-02_00.raw.txt").write_bytes((data / expected[2]).read_bytes())
    assert pretraining_overlap(metadata, corpus, EVALUATION_PARTITIONS) == ["test/2013-02-02_00.raw.txt"]


def test_pretraining_text_is_scrubbed_like_a_nodes() -> None:
    root = resolve_data_root()
    if not (root / "irc-disentanglement" / "data").is_dir():
        pytest.skip(f"IRC corpus not found under {root}")
    corpus = irc_corpus_dir(root)
    texts, files = public_texts(corpus, ["ubuntu-2004-2005"])
    assert texts and "<name>" in " ".join(texts[:50])
    # The default pretraining partitions and the evaluation partitions share no file of the real corpus.
    data = (corpus / "data").resolve()
    def paths(names: tuple[str, ...]) -> set[str]:
        return {str(f.relative_to(data)) for p in PARTITIONS if p.name in names for f in p.files(data)}

    evaluation, pretraining = paths(EVALUATION_PARTITIONS), paths(PRETRAIN_PARTITIONS)
    assert evaluation and pretraining and not evaluation & pretraining
    assert {f["path"] for f in files} <= pretraining


def test_unknown_partition_and_bad_sizes(corpus: Path) -> None:
    with pytest.raises(DataError, match="unknown"):
        pretrain(corpus, ["ubuntu-1999"], steps=1, **TINY)
    with pytest.raises(DataError, match="no files"):
        pretrain(corpus, ["ubuntu-2004-2005"], steps=1, **TINY)
    with pytest.raises(ConfigError, match="steps"):
        pretrain(corpus, USED, steps=0, **TINY)


def test_checkpoint_round_trip_and_what_a_run_accepts(corpus: Path, tmp_path: Path) -> None:
    state, metadata = pretrain(corpus, USED, steps=1, **TINY)
    path = save_checkpoint(tmp_path / "model.pt", state, metadata)
    loaded, meta = load_checkpoint(path)
    assert meta == metadata and all(torch.equal(loaded[k], state[k]) for k in state)
    with pytest.raises(DataError, match="overwrite"):
        save_checkpoint(path, state, metadata)
    task = NextCharTask(TINY["seq_len"], TINY["shape"])
    start = initial_state_dict(task, 0, str(path))
    assert all(torch.equal(start[k], state[k]) for k in state)
    with pytest.raises(ConfigError, match="seq_len"):
        initial_state_dict(NextCharTask(32, TINY["shape"]), 0, str(path))
    with pytest.raises(ConfigError, match="do not fit"):
        initial_state_dict(NextCharTask(16, ModelShape(d_model=32, n_layers=1, n_heads=2)), 0, str(path))


class Payload:
    def __reduce__(self):  # what a hostile pickle would run on a plain torch.load
        return (print, ("ran",))


def test_a_file_that_would_run_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"format": "optin-checkpoint/1", "state_dict": Payload(), "metadata": {}}))
    with pytest.raises(DataError, match="not a readable Optin checkpoint"):
        load_checkpoint(path)
    torch.save({"weight": torch.zeros(2)}, tmp_path / "plain.pt")
    with pytest.raises(DataError, match="not a readable Optin checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")
    with pytest.raises(DataError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
