"""Node-side enforcement: every refusal reason, lifetime budget across runs, revocation, stricter-wins,
member-level samples, and tamper-evident audit logs."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from opacus.accountants import RDPAccountant

from clients.workspace_node import DATA_FOLDER, WorkspaceNode, member_groups
from experiments.runners.in_process import make_synthetic_federation, run_federation
from federated.audit import AUDIT_FILE, read_entries, verify
from federated.data import SyntheticSpec, load_workspace, split_messages
from federated.privacy.ledger import LEDGER_FILE, Ledger
from federated.privacy.node_secret import node_secret
from federated.privacy.policy import Policy, write_policy
from federated.tasks import get_task
from tests.conftest import SMALL_CONFIG
from tests.node_calls import send_query, send_train, train_config

SPEC = SyntheticSpec(num_workspaces=3, seed=11, min_messages=120, max_messages=200)
CONFIG = replace(SMALL_CONFIG, num_rounds=2, local_steps=4, batch_size=16)


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, ...]:
    return make_synthetic_federation(tmp_path / "ws", SPEC, opted_out=[]).folders


def releases(folder: Path) -> list:
    if not (folder / LEDGER_FILE).exists():
        return []
    with Ledger(folder / LEDGER_FILE) as ledger:
        return ledger.releases()


def run(folders, config, tmp_path: Path, name: str, observer=None) -> dict:
    config = replace(config, results_dir=str(tmp_path / name))
    served = run_federation(folders, config, observer)
    metrics = json.loads((tmp_path / name / "metrics.json").read_text())
    metrics["node_of"] = {folder: str(node_id) for node_id, folder in served.items()}
    return metrics


@pytest.mark.parametrize("policy_text, reason", [
    (None, "policy-missing"),
    ("consent = false\n", "consent-off"),
    ("consent = yes\n", "policy-invalid"),
    ("consent = true\nexpires = 2020-01-01\n", "policy-expired"),
    ('consent = true\n[scope]\ntasks = ["classifier"]\n', "scope-mismatch"),
    ('consent = true\n[scope]\nfederations = ["acme"]\n', "scope-mismatch"),
    ("consent = true\nmax_epsilon = 0.05\n", "budget-exhausted"),
])
def test_each_refusal_reason_refuses_train_and_releases_nothing(folders, policy_text, reason) -> None:
    folder = folders[0]
    (folder / "policy.toml").unlink()
    if policy_text is not None:
        (folder / "policy.toml").write_text(policy_text)
    answer = send_query(folder, CONFIG)
    assert answer["reason"] == reason and answer["can-afford"] is False
    reply = send_train(folder, CONFIG)
    assert reply.has_error() and reply.error.reason == f"refused: {reason}"
    assert releases(folder) == []
    assert [e["reason"] for e in read_entries(folder / AUDIT_FILE) if e["kind"] == "refusal"] == [reason]


def test_corrupt_ledger_fails_closed_and_is_left_untouched(folders) -> None:
    folder = folders[0]
    assert not send_train(folder, CONFIG).has_error()
    ledger = folder / LEDGER_FILE
    damaged = bytearray(ledger.read_bytes())
    damaged[:16] = b"not a sqlite db!"
    ledger.write_bytes(bytes(damaged))
    for wal in folder.glob(LEDGER_FILE + "-*"):
        wal.unlink()
    reply = send_train(folder, CONFIG, server_round=2)
    assert reply.has_error() and reply.error.reason == "refused: ledger-unsound"
    assert ledger.read_bytes() == bytes(damaged)
    assert send_query(folder, CONFIG)["reason"] == "ledger-unsound"
    (refusal,) = [e for e in read_entries(folder / AUDIT_FILE) if e["kind"] == "refusal"]
    assert "optin ledger show --workspace" in refusal["detail"]


def test_deleted_ledger_does_not_reset_the_budget(folders) -> None:
    folder = folders[0]
    assert not send_train(folder, CONFIG).has_error()
    (folder / LEDGER_FILE).unlink()
    reply = send_train(folder, CONFIG, server_round=2)
    assert reply.has_error() and reply.error.reason == "refused: ledger-unsound"
    assert not (folder / LEDGER_FILE).exists()


def test_stricter_of_server_and_policy_wins(folders) -> None:
    folder = folders[0]
    write_policy(folder, Policy(consent=True, noise_multiplier=2.5, max_grad_norm=0.3))
    reply = send_train(folder, CONFIG, **{"noise-multiplier": 0.5, "max-grad-norm": 4.0})
    assert reply.content["metrics"]["noise-multiplier"] == 2.5
    (release,) = releases(folder)
    assert release.noise_multiplier == 2.5
    (entry,) = [e for e in read_entries(folder / AUDIT_FILE) if e["kind"] == "release"]
    assert (entry["noise_multiplier"], entry["max_grad_norm"]) == (2.5, 0.3)
    # More privacy than the policy asks for is accepted as it is.
    send_train(folder, CONFIG, server_round=2, **{"noise-multiplier": 3.0, "max-grad-norm": 0.1})
    assert releases(folder)[-1].noise_multiplier == 3.0


@pytest.mark.slow
def test_budget_spans_runs_and_exhaustion_skips_before_sampling(folders, tmp_path: Path) -> None:
    first = run(folders, CONFIG, tmp_path, "run1")
    spent = {f: releases(f)[-1].epsilon_total for f in folders}
    # A budget that the two rounds of run 1 fit in, but not one round more.
    for folder in folders:
        write_policy(folder, Policy(consent=True, max_epsilon=spent[folder] * 1.01))
    second = run(folders, CONFIG, tmp_path, "run2")
    for folder in folders:
        node = second["node_of"][folder]
        assert [len(releases(folder))] == [2]  # run 2 released nothing
        for r in second["rounds"][1:]:
            assert r["skipped"][node] == "budget-exhausted" and node not in r["trained"]
            assert node in r["evaluated"]  # evaluation releases no DP update and still runs
    assert all(len(r["trained"]) == 3 for r in first["rounds"][1:])


@pytest.mark.slow
def test_revocation_after_round_two_stops_updates_from_round_three(folders, tmp_path: Path) -> None:
    revoked = folders[2]

    def revoke_after_round_two(message_type: str, group_id: str, replies) -> None:
        if message_type == "evaluate" and group_id == "2":
            write_policy(revoked, Policy(consent=False))

    metrics = run(folders, replace(CONFIG, num_rounds=4), tmp_path, "revoke", revoke_after_round_two)
    node = metrics["node_of"][revoked]
    joined = [r["round"] for r in metrics["rounds"] if node in r["trained"]]
    assert joined == [1, 2]
    assert [r.round for r in releases(revoked)] == [1, 2]
    # Round 3's consent was asked with round 2's evaluations, before the change: the node itself refuses its train
    # message (the revocation bound, server/strategy.py); from round 4 the server no longer asks it to train.
    assert metrics["rounds"][3]["skipped"][node] == "train-error: refused: consent-off"
    assert metrics["rounds"][4]["skipped"][node] == "consent-off"


@pytest.mark.slow
def test_audit_logs_verify_and_record_every_release(folders, tmp_path: Path) -> None:
    metrics = run(folders, CONFIG, tmp_path, "audited")
    server_log = tmp_path / "audited" / AUDIT_FILE
    assert verify(server_log).ok
    received = [e for e in read_entries(server_log) if e["kind"] == "release-received"]
    assert len(received) == 3 * CONFIG.num_rounds
    for folder in folders:
        assert verify(folder / AUDIT_FILE).ok
        sent = [e for e in read_entries(folder / AUDIT_FILE) if e["kind"] == "release"]
        assert [e["round"] for e in sent] == [1, 2]
        node = int(metrics["node_of"][folder])
        # What the node says it sent is what the server says it received, byte for byte.
        assert {e["sha256"] for e in sent} == {e["sha256"] for e in received if e["node"] == node}
        assert all(e["l2_norm"] > 0 and e["bytes"] > 0 for e in sent)


def _tamper(path: Path, how: str) -> None:
    lines = path.read_text().splitlines()
    if how == "edit":
        entry = json.loads(lines[1])
        entry["reason"] = "consent-on" if entry.get("reason") != "consent-on" else "consent-off"
        lines[1] = json.dumps(entry, sort_keys=True)
    elif how == "delete":
        del lines[1]
    elif how == "reorder":
        lines[1], lines[2] = lines[2], lines[1]
    elif how == "truncate":
        lines = lines[:-1]
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("how", ["edit", "delete", "reorder", "truncate"])
def test_audit_verify_detects_each_kind_of_tampering(folders, how: str) -> None:
    folder = folders[0]
    for r in range(1, 3):
        send_query(folder, CONFIG)
        send_train(folder, CONFIG, server_round=r)
    log = folder / AUDIT_FILE
    assert verify(log).ok and verify(log).entries == 4
    _tamper(log, how)
    result = verify(log)
    assert not result.ok and result.problems


def test_member_level_unit_makes_one_sample_per_member(folders) -> None:
    folder = folders[1]
    write_policy(folder, Policy(consent=True, privacy_unit="member", max_messages_per_member=3))
    reply = send_train(folder, CONFIG)
    assert not reply.has_error()
    messages = load_workspace(folder / DATA_FOLDER).messages  # scrubbed, as the node splits them
    train, _ = split_messages(list(messages), Policy().held_out_fraction, node_secret(folder))
    members = {m.user for m in train}
    groups = member_groups(train, 3, node_secret(folder))
    assert len(groups) == len(members) and max(len(g) for g in groups) == 3
    samples = WorkspaceNode(folder).training_samples(get_task(CONFIG.task, CONFIG.seq_len), CONFIG,
                                                      Policy(consent=True, privacy_unit="member",
                                                             max_messages_per_member=3))
    assert len(samples) == len(members)
    (release,) = releases(folder)
    assert release.sample_rate == train_config()["sample-rate"]  # public, whatever the number of members
    accountant = RDPAccountant()
    for _ in range(3):
        accountant.step(noise_multiplier=1.0, sample_rate=release.sample_rate)
    assert release.epsilon_total == pytest.approx(accountant.get_epsilon(delta=Policy().delta))


def test_member_groups_respect_the_contribution_bound() -> None:
    from federated.data import ChatMessage
    messages = [ChatMessage(f"{i}.0", "U1" if i % 3 else "U2", "general", f"text {i}") for i in range(1, 30)]
    groups = member_groups(messages, 4, bytes(32))
    assert [len(g) for g in groups] == [4, 4]
    assert {m.user for m in groups[0]} == {"U1"} and {m.user for m in groups[1]} == {"U2"}
    assert set(groups[0]) <= set(messages)
