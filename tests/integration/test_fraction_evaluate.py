"""``fraction-evaluate``: each round evaluates a seeded sample of the consenting nodes, never an opted-out one."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest
from flwr.app import Context, Message, MessageType

from clients.app import app as client_app
from experiments.runners.in_process import make_synthetic_federation
from federated.config import RunConfig
from federated.data import SyntheticSpec
from federated.inprocess import run_in_process
from server.app import app as server_app

SPEC = SyntheticSpec(num_workspaces=10, seed=5, min_messages=40, max_messages=60)
OPTED_OUT = (1, 6)  # no policy file, and an explicit consent = false
CONFIG = RunConfig(num_rounds=2, local_steps=2, sample_rate=0.2, batch_size=8, fraction_train=0.25, seed=5)

Deliveries = dict[tuple[str, str], set[int]]  # (message type, round) -> workspace indices


def _run(root: Path, fraction_evaluate: float) -> tuple[Deliveries, dict]:
    layout = make_synthetic_federation(root / "workspaces", SPEC, opted_out=list(OPTED_OUT))
    index = {str(folder): i for i, folder in enumerate(layout.folders)}
    delivered: Deliveries = defaultdict(set)

    def recording_client(msg: Message, context: Context) -> Message:
        delivered[(msg.metadata.message_type, msg.metadata.group_id)].add(index[str(context.node_config["workspace"])])
        return client_app(msg, context)

    config = RunConfig(**{**CONFIG.__dict__, "fraction_evaluate": fraction_evaluate,
                          "results_dir": str(root / "results")})
    run_in_process(server_app, recording_client, [{"workspace": str(f)} for f in layout.folders],
                   config.to_mapping())
    return delivered, json.loads((root / "results" / "metrics.json").read_text())


@pytest.mark.slow
def test_half_of_the_consenting_nodes_are_evaluated_each_round_and_training_is_unchanged(tmp_path: Path) -> None:
    sampled, metrics = _run(tmp_path / "half", 0.5)
    everyone, _ = _run(tmp_path / "all", 1.0)
    consenting = set(range(SPEC.num_workspaces)) - set(OPTED_OUT)
    rounds = [str(r) for r in range(CONFIG.num_rounds + 1)]  # round 0 evaluates the initial model

    for r in rounds:
        evaluated = sampled[(MessageType.EVALUATE, r)]
        assert len(evaluated) == len(consenting) // 2 and evaluated <= consenting
        assert everyone[(MessageType.EVALUATE, r)] == consenting
        assert sampled[(MessageType.QUERY, r)] == set(range(SPEC.num_workspaces))  # consent is still asked of all
    assert len(set().union(*(sampled[(MessageType.EVALUATE, r)] for r in rounds))) > len(consenting) // 2
    for r in rounds[1:]:  # the evaluation sample draws from its own stream: training cohorts stay the seed's
        assert sampled[(MessageType.TRAIN, r)] == everyone[(MessageType.TRAIN, r)]
    for (message_type, _), workspaces in sampled.items():
        if message_type != MessageType.QUERY:
            assert not workspaces & set(OPTED_OUT)
    assert [len(r["evaluated"]) for r in metrics["rounds"]] == [len(consenting) // 2] * len(rounds)
    assert not any(m for r in metrics["rounds"] for m in r["evaluated"].values())  # results stay on the nodes
    assert metrics["config"]["fraction-evaluate"] == 0.5
