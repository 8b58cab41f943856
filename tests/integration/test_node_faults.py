"""A node that crashes in the middle of training: the round completes with the others, nothing
half-made is sent, its ledger stays consistent; too few updates leave the model unchanged."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.server.superlink.linkstate.utils import create_message_error_unavailable_res_message

import clients.app as node_app
from clients.app import app as client_app
from experiments.runners.in_process import make_synthetic_federation
from federated.data import SyntheticSpec
from federated.inprocess import run_in_process, stamp
from federated.privacy.ledger import LEDGER_FILE, Ledger
from server.app import app as server_app
from server.run_record import RunRecord
from server.strategy import ConsentAwareFedAvg, TrainingRound
from tests.conftest import SMALL_CONFIG


@pytest.mark.slow
def test_a_node_crashing_mid_training_does_not_stop_the_round(tmp_path: Path, monkeypatch) -> None:
    spec = SyntheticSpec(num_workspaces=3, seed=8, min_messages=100, max_messages=150)
    folders = make_synthetic_federation(tmp_path / "ws", spec, opted_out=[]).folders
    crashing = str(folders[0])
    real_train = node_app.train_dp_sgd

    def crash_in_round_two(task, model, data, settings, generator):
        if current["workspace"] == crashing and current["round"] == "2":
            raise MemoryError("simulated crash in the middle of DP-SGD")
        return real_train(task, model, data, settings, generator)

    current: dict[str, str] = {}

    def client(msg: Message, context: Context) -> Message:
        current.update(workspace=str(context.node_config["workspace"]), round=msg.metadata.group_id)
        return client_app(msg, context)

    monkeypatch.setattr(node_app, "train_dp_sgd", crash_in_round_two)
    config = replace(SMALL_CONFIG, num_rounds=3, local_steps=3, results_dir=str(tmp_path / "res"))
    grid = run_in_process(server_app, client, [{"workspace": str(f)} for f in folders], config.to_mapping())
    node = {str(n.context.node_config["workspace"]): str(n.node_id) for n in grid.nodes}[crashing]
    metrics = json.loads((tmp_path / "res" / "metrics.json").read_text())
    two = metrics["rounds"][2]
    assert node not in two["trained"] and len(two["trained"]) == 2
    assert two["skipped"][node] == "train-error: refused: egress-blocked"  # the crash text stayed home
    assert node in metrics["rounds"][3]["trained"]  # and it serves the next round
    with Ledger(folders[0] / LEDGER_FILE) as ledger:  # no release recorded for the crashed round
        assert [r.round for r in ledger.releases()] == [1, 3]


def test_missing_replies_are_logged_and_too_few_updates_leave_the_model_unchanged() -> None:
    record = RunRecord(config={})
    strategy = ConsentAwareFedAvg(record, ConfigRecord(), min_train_nodes=2)
    strategy._training[1] = TrainingRound(ArrayRecord(), [5, 6])
    assert strategy.aggregate_train(1, []) == (None, None)
    assert record.round(1).skipped == {5: "no-reply", 6: "no-reply"}


def test_a_node_the_superlink_reports_unavailable_is_skipped_as_not_replying() -> None:
    # Flower's SuperLink answers for a node that missed its heartbeats: the error reply comes from the
    # SuperLink itself (node id 1) and names the message it stands in for.
    record = RunRecord(config={})
    strategy = ConsentAwareFedAvg(record, ConfigRecord())
    messages = [Message(RecordDict(), node, "train", group_id="1") for node in (5, 6)]
    for message in messages:
        stamp(message, message_id=message.object_id)
    strategy._training[1] = TrainingRound(ArrayRecord(), [5, 6], messages)
    unavailable = create_message_error_unavailable_res_message(messages[0].metadata,
                                                               "node_unavail")
    assert strategy.aggregate_train(1, [unavailable]) == (None, None)
    assert record.round(1).skipped == {5: "no-reply", 6: "no-reply"}
