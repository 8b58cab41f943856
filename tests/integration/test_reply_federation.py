"""The reply task through the whole machinery: consent (a policy scoped to another task says no), local DP-SGD
with ledger releases, and held-out metrics kept in each node's audit log."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest


from experiments.runners.in_process import make_synthetic_federation, run_federation
from experiments.runners.local_evaluation import evaluate_locally
from federated.audit import AUDIT_FILE, read_entries
from federated.data import SyntheticSpec
from federated.errors import ConfigError
from federated.privacy.ledger import LEDGER_FILE, Ledger
from federated.privacy.policy import Policy, Scope, write_policy
from federated.tasks.model_file import load_model
from tests.conftest import SMALL_CONFIG

SPEC = SyntheticSpec(num_workspaces=3, seed=5, min_messages=150, max_messages=250)


def test_a_dp_run_of_the_reply_task_releases_and_keeps_its_metrics_on_the_nodes(tmp_path: Path) -> None:
    folders = make_synthetic_federation(tmp_path / "ws", SPEC, opted_out=[]).folders
    nextchar_only = folders[2]
    write_policy(nextchar_only, Policy(consent=True, scope=Scope(tasks=("nextchar",))))
    config = replace(SMALL_CONFIG, task="reply", num_rounds=2, local_steps=6, results_dir=str(tmp_path / "run"))
    run_federation(folders, config)

    loaded = load_model(tmp_path / "run")
    assert loaded.card["task"] == "reply"
    with pytest.raises(ConfigError, match="next-character models"):  # byte n-gram baselines mean nothing here
        evaluate_locally(loaded, folders[0])
    assert not (nextchar_only / LEDGER_FILE).exists()  # its scope does not allow the reply task
    for folder in folders[:2]:
        with Ledger(folder / LEDGER_FILE) as ledger:
            assert [r.round for r in ledger.releases()] == [1, 2] and ledger.releases()[-1].epsilon_total > 0
        evaluations = [e for e in read_entries(folder / AUDIT_FILE) if e["kind"] == "evaluation"]
        assert len(evaluations) == 3  # the initial model and both rounds
        for entry in evaluations:
            kept = entry["kept_local"]
            assert entry["sent"] == [] and kept["held_out"] > 0
            assert 0 <= kept["accuracy"] <= 1 and 0 <= kept["balanced_accuracy"] <= 1
            assert 0.5 <= kept["majority_accuracy"] <= 1
