"""A workspace's label reaches the federation's results only when its operator wrote one in the policy."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from flwr.app import ConfigRecord, Message, RecordDict

from experiments.runners.in_process import make_synthetic_federation, run_federation
from federated.errors import PolicyError
from federated.privacy.policy import Policy, parse_policy, read_policy, write_policy
from server.strategy import _consent_reason
from tests.conftest import SMALL_CONFIG, SMALL_SPEC


def test_only_the_labelled_workspace_is_named_in_metrics(tmp_path: Path) -> None:
    folders = make_synthetic_federation(tmp_path / "ws", SMALL_SPEC, opted_out=[]).folders
    write_policy(folders[0], replace(read_policy(folders[0] / "policy.toml"), label="acme-support"))
    config = replace(SMALL_CONFIG, num_rounds=1, results_dir=str(tmp_path / "results"))
    served = run_federation(folders, config)
    nodes = json.loads((tmp_path / "results" / "metrics.json").read_text())["nodes"]
    labelled = {node: entry["label"] for node, entry in nodes.items() if "label" in entry}
    node_of = {folder: str(node) for node, folder in served.items()}
    assert labelled == {node_of[folders[0]]: "acme-support"}


@pytest.mark.parametrize("label", ["has space", "a" * 65, "-leading-dash", "ünïcode", 7])
def test_a_label_that_could_carry_text_is_refused_in_the_policy(label: object) -> None:
    with pytest.raises(PolicyError, match="field 'label'"):
        parse_policy({"consent": True, "label": label}, "policy.toml")


def test_the_server_counts_an_answer_with_a_free_text_label_as_no_answer() -> None:
    query = Message(RecordDict(), 5, "query")
    answer = {"consent": True, "reason": "consent-on", "can-afford": True, "remaining-epsilon": 1.0}
    for label, expected in (("ok-label", "consent-on"), ("my secret: 1234", "bad-answer")):
        reply = Message(RecordDict({"consent": ConfigRecord({**answer, "label": label})}), reply_to=query)
        assert _consent_reason(reply) == expected


def test_the_policy_writes_and_reads_back_its_label(tmp_path: Path) -> None:
    write_policy(tmp_path, Policy(consent=True, label="team.a_1"))
    assert read_policy(tmp_path / "policy.toml").label == "team.a_1"
    assert "label" not in (write_policy(tmp_path, Policy(consent=True)).read_text())
