"""Operator commands on a real workspace folder."""

from pathlib import Path

from flwr.app import ArrayRecord, RecordDict
from typer.testing import CliRunner

from experiments.cli.app import app
from experiments.runners.in_process import make_synthetic_federation
from federated.data import SyntheticSpec
from federated.privacy.policy import read_policy
from federated.tasks import get_task
from tests.conftest import SMALL_CONFIG
from tests.node_calls import send, send_query, send_train

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_policy_and_consent_commands(tmp_path: Path) -> None:
    ws = str(tmp_path)
    assert invoke("policy", "init", "-w", ws, "--max-epsilon", "3", "--privacy-unit", "member",
                  "--held-out-fraction", "0.3").exit_code == 0
    assert read_policy(tmp_path / "policy.toml").consent is False
    again = invoke("policy", "init", "-w", ws)
    assert again.exit_code == 1 and "already exists (use --force" in again.output
    assert invoke("consent", "on", "-w", ws).exit_code == 0
    policy = read_policy(tmp_path / "policy.toml")
    assert (policy.consent, policy.max_epsilon, policy.privacy_unit, policy.held_out_fraction) == (
        True, 3.0, "member", 0.3)
    shown = invoke("policy", "show", "-w", ws)
    assert "consent = true" in shown.output and "max_epsilon = 3.0" in shown.output
    assert invoke("consent", "off", "-w", ws).exit_code == 0
    assert read_policy(tmp_path / "policy.toml").consent is False

    (tmp_path / "policy.toml").write_text("consent = true\ndelta = 2\n")
    check = invoke("policy", "check", "-w", ws)
    assert check.exit_code == 1 and "field 'delta' must be a number in (0, 1), got 2" in check.output
    broken = invoke("consent", "on", "-w", ws)
    assert broken.exit_code == 1 and "policy init --force" in broken.output
    assert (tmp_path / "policy.toml").read_text() == "consent = true\ndelta = 2\n"  # left as it was
    bad_init = invoke("policy", "init", "-w", ws, "--force", "--privacy-unit", "person")
    assert bad_init.exit_code == 1 and "privacy_unit" in bad_init.output
    bad_fraction = invoke("policy", "init", "-w", ws, "--force", "--held-out-fraction", "1")
    assert bad_fraction.exit_code == 1 and "held_out_fraction" in bad_fraction.output


def test_ledger_and_audit_commands(tmp_path: Path) -> None:
    spec = SyntheticSpec(num_workspaces=1, seed=2, min_messages=100, max_messages=100)
    (folder,) = make_synthetic_federation(tmp_path, spec, opted_out=[]).folders
    fresh = invoke("ledger", "show", "-w", str(folder))  # nothing released yet: nothing spent, not an error
    assert fresh.exit_code == 0 and "no releases yet; spent ε = 0" in fresh.output
    assert not (folder / "ledger.sqlite").exists()
    send_query(folder, SMALL_CONFIG)
    for r in (1, 3):
        assert not send_train(folder, SMALL_CONFIG, server_round=r).has_error()
    shown = invoke("ledger", "show", "-w", str(folder))
    assert shown.exit_code == 0 and "spent ε =" in shown.output and "remaining" in shown.output
    assert "1, 3" in shown.output and "1-3" not in shown.output  # not a range that claims round 2
    assert invoke("audit", "verify", str(folder)).exit_code == 0
    arrays = RecordDict({"arrays": ArrayRecord(get_task(SMALL_CONFIG.task, SMALL_CONFIG.seq_len).build_model(0)
                                               .state_dict())})
    assert not send(folder, "evaluate", SMALL_CONFIG, arrays, group_id="2").has_error()
    summary = invoke("audit", "show", str(folder))
    assert "release 2" in summary.output and "consent 1" in summary.output and "evaluation 1" in summary.output
    assert "Kept here, never sent" in summary.output
    log = folder / "audit.jsonl"
    log.write_text(log.read_text().replace('"round": 1', '"round": 5', 1))
    tampered = invoke("audit", "verify", str(folder))
    assert tampered.exit_code == 1 and "was edited" in tampered.output
