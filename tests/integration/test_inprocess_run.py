"""A whole federated run in process: consent gating, honest ε, and learning that helps (as the nodes measure it)."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path

import pytest
from flwr.app import Context, Message
from opacus.accountants import RDPAccountant

from clients.app import app as client_app
from clients.workspace_node import DATA_FOLDER
from experiments.runners.in_process import FederationLayout, make_synthetic_federation, served_folders
from experiments.runners.node_metrics import merge_node_local
from federated.audit import AUDIT_FILE, read_entries
from federated.inprocess import InProcessGrid, run_in_process
from federated.privacy.policy import POLICY_FILE, Policy, read_policy, write_policy
from server.app import app as server_app
from tests.conftest import SMALL_CONFIG, SMALL_SPEC
from tests.node_calls import send_train

OPENED: list[str] = []


def _record_opens(event: str, args: tuple) -> None:
    if event == "open" and isinstance(args[0], (str, Path)):
        OPENED.append(str(args[0]))


sys.addaudithook(_record_opens)  # audit hooks cannot be removed; this one only appends paths


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory):
    """One federated run shared by the tests that read its outcome."""
    tmp_path = tmp_path_factory.mktemp("run")
    small_federation = make_synthetic_federation(tmp_path / "workspaces", SMALL_SPEC, opted_out=[1])
    config = replace(SMALL_CONFIG, results_dir=str(tmp_path / "results"))
    delivered: list[tuple[str, str]] = []

    def recording_client(msg: Message, context: Context) -> Message:
        delivered.append((str(context.node_config["workspace"]), msg.metadata.message_type))
        return client_app(msg, context)

    OPENED.clear()
    grid = run_in_process(server_app, recording_client, [{"workspace": str(f)} for f in small_federation.folders],
                          config.to_mapping())
    node_of = {str(n.context.node_config["workspace"]): str(n.node_id) for n in grid.nodes}
    server_view = json.loads((tmp_path / "results" / "metrics.json").read_text())
    # What the researcher holding every workspace adds: each node's own figures, from its audit log.
    metrics = merge_node_local(tmp_path / "results" / "metrics.json", list(small_federation.folders),
                               str(grid.run.run_id), {f: n for n, f in served_folders(grid).items()})
    assert {k: v for k, v in metrics.items() if k != "node_local"} == server_view
    return config, small_federation, metrics, delivered, node_of, list(OPENED)


@pytest.mark.slow
def test_opted_out_workspace_gets_no_train_message_and_its_messages_are_never_read(finished_run) -> None:
    config, layout, metrics, delivered, node_of, opened = finished_run
    out = str(layout.folders[1])
    assert [t for ws, t in delivered if ws == out] == ["query"] * (config.num_rounds + 1)
    assert not [p for p in opened if p.startswith(str(layout.folders[1] / DATA_FOLDER))]
    assert [p for p in opened if p.startswith(str(layout.folders[0] / DATA_FOLDER))]  # the hook does see reads
    for r in metrics["rounds"]:
        assert r["skipped"][node_of[out]] == "policy-missing"
        if r["round"] > 0:
            assert sorted(r["trained"]) == sorted(node_of[str(f)] for i, f in enumerate(layout.folders) if i != 1)


@pytest.mark.slow
def test_reported_epsilon_equals_an_independent_accountant(finished_run) -> None:
    config, layout, metrics, _, node_of, _ = finished_run
    for i, folder in enumerate(layout.folders):
        entry = metrics["nodes"][node_of[str(folder)]]
        if i == 1:
            assert entry["rounds_joined"] == 0 and entry["epsilon"] == 0.0
            continue
        # The sampling rate is the run's public one, whatever the workspace's size: no size enters ε.
        accountant = RDPAccountant()
        for _ in range(config.num_rounds * config.local_steps):
            accountant.step(noise_multiplier=config.noise_multiplier, sample_rate=config.sample_rate)
        assert entry["rounds_joined"] == config.num_rounds
        assert entry["epsilon"] == pytest.approx(accountant.get_epsilon(delta=Policy().delta), rel=1e-9)
        assert entry["delta"] == Policy().delta


@pytest.mark.slow
def test_held_out_accuracy_beats_the_initial_model_clearly(finished_run) -> None:
    _, layout, metrics, _, node_of, _ = finished_run
    # The server learned who evaluated, nothing of the results.
    assert all(r["evaluated"] and not any(r["evaluated"].values()) for r in metrics["rounds"])
    local = metrics["node_local"]["rounds"]
    accuracy = [r["eval-accuracy"] for r in local]
    assert len(accuracy) == SMALL_CONFIG.num_rounds + 1
    assert all(r["evaluating"] == 3 for r in local)
    assert accuracy[-1] > accuracy[0] + 0.10
    assert local[0]["train-loss"] is None and all(r["training"] == 3 and r["train-loss"] > 0 for r in local[1:])
    opted_out = metrics["node_local"]["workspaces"][layout.folders[1].name]
    assert opted_out == {"node_id": node_of[str(layout.folders[1])], "rounds": {}}


def test_node_without_consent_refuses_before_touching_its_data(small_federation: FederationLayout) -> None:
    folder = small_federation.folders[1]
    shutil.rmtree(folder / DATA_FOLDER)  # any attempt to read it would now fail with a data error
    reply = send_train(folder, SMALL_CONFIG)
    assert reply.has_error() and reply.error.reason == "refused: policy-missing"


def test_missing_data_folder_is_an_error_naming_the_path_kept_on_the_node(small_federation: FederationLayout) -> None:
    folder = small_federation.folders[0]
    shutil.rmtree(folder / DATA_FOLDER)
    reply = send_train(folder, SMALL_CONFIG)
    assert reply.has_error() and reply.error.reason == "refused: data-error"  # paths do not leave the node
    (refusal,) = [e for e in read_entries(folder / AUDIT_FILE) if e["kind"] == "refusal"]
    assert f"workspace data folder not found: {folder / DATA_FOLDER}" in refusal["detail"]


@pytest.mark.slow
def test_consent_revoked_after_the_server_asked_ahead_releases_nothing(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The revocation bound: round 2's consent is asked in round 1's evaluate exchange. A workspace that revokes
    right after answering is still sent round 2's ``train``; its node refuses it, so no release follows the
    change, and the server records the refusal."""
    layout = make_synthetic_federation(tmp_path / "workspaces", SMALL_SPEC, opted_out=[])
    revoking = layout.folders[2]
    config = replace(SMALL_CONFIG, num_rounds=2, local_steps=2, results_dir=str(tmp_path / "results"))
    delivered: list[tuple[str, str, str]] = []

    def revoke_once_asked(message_type: str, group_id: str, replies: Sequence[Message]) -> None:
        if (message_type, group_id) == ("query", "2"):
            write_policy(revoking, replace(read_policy(revoking / POLICY_FILE), consent=False))

    def recording_client(msg: Message, context: Context) -> Message:
        delivered.append((str(context.node_config["workspace"]), msg.metadata.message_type, msg.metadata.group_id))
        return client_app(msg, context)

    exchanges: list[list[tuple[str, str]]] = []
    send_and_receive = InProcessGrid.send_and_receive

    def recording_exchanges(grid: InProcessGrid, messages: Iterable[Message], *,
                            timeout: float | None = None) -> Iterable[Message]:
        messages = list(messages)
        exchanges.append(sorted({(m.metadata.message_type, m.metadata.group_id) for m in messages}))
        return send_and_receive(grid, messages, timeout=timeout)

    monkeypatch.setattr(InProcessGrid, "send_and_receive", recording_exchanges)
    grid = run_in_process(server_app, recording_client, [{"workspace": str(f)} for f in layout.folders],
                          config.to_mapping(), observer=revoke_once_asked)
    # Two exchanges a round: each round's consent is asked with the previous round's evaluations.
    assert exchanges == [[("query", "0")], [("evaluate", "0"), ("query", "1")], [("train", "1")],
                         [("evaluate", "1"), ("query", "2")], [("train", "2")], [("evaluate", "2")]]
    node = next(str(n.node_id) for n in grid.nodes if n.context.node_config["workspace"] == str(revoking))
    rounds = json.loads((tmp_path / "results" / "metrics.json").read_text())["rounds"]
    assert [(t, g) for ws, t, g in delivered if ws == str(revoking)] == [
        ("query", "0"), ("evaluate", "0"), ("query", "1"), ("train", "1"), ("evaluate", "1"), ("query", "2"),
        ("train", "2"), ("evaluate", "2")]
    assert rounds[2]["consent"][node] == "consent-on"  # its answer before the change
    assert rounds[2]["skipped"][node] == "train-error: refused: consent-off"
    assert node not in rounds[2]["trained"] and node not in rounds[2]["evaluated"]
    releases = [e for e in read_entries(revoking / AUDIT_FILE) if e["kind"] == "release"]
    assert [e["round"] for e in releases] == [1]
    refusals = [(e["message_type"], e["reason"]) for e in read_entries(revoking / AUDIT_FILE) if e["kind"] == "refusal"]
    assert refusals == [("train", "consent-off"), ("evaluate", "consent-off")]
