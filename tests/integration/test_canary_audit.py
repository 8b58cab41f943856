"""Canary audit end to end: without DP a planted secret is exposed in the global model another workspace
receives, with DP at a small ε it stays near chance; the shipped audit config has power (a positive one-run
bound without DP); canaries never reach a file; a lower bound above the claimed ε fails the audit loudly."""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

import pytest
import torch
from flwr.app import ArrayRecord
from typer.testing import CliRunner

from experiments.research.canary_audit import audit_model, plan_canaries
from experiments.cli.app import app
from experiments.cli.common import EXIT_AUDIT_FAILED
from experiments.research.report import CSV_FILE, REPORT_FILE, load_cells
from experiments.research.sweep_config import load_sweep
from federated.config import RunConfig
from federated.tasks.nextchar import NextCharTask

pytestmark = pytest.mark.slow

CONFIG = """
name = "canaries"
target-epsilons = [inf, 1.0]
seeds = [0]
dp-modes = ["local"]
delta = 1e-5

[run]
num-rounds = 3
local-steps = 20
sample-rate = 0.08
batch-size = 16
lr = 0.1

[[datasets]]
kind = "synthetic"
num-workspaces = 2
min-messages = 150
max-messages = 250

[audit]
length = 4
repeats = [32]
one-run-canaries = 64
guesses = 16
"""


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(sweep file, results folder) of one audited run: no DP, and local DP at ε = 1."""
    root = tmp_path_factory.mktemp("audit")
    config = root / "audit.toml"
    config.write_text(CONFIG, encoding="utf-8")
    result = CliRunner().invoke(app, ["audit", "canaries", str(config), "--results", str(root / "results")])
    assert result.exit_code == 0, result.output
    (run_dir,) = (root / "results").iterdir()
    return config, run_dir


def test_without_dp_the_canary_is_exposed_with_dp_it_stays_near_chance(audited: tuple[Path, Path]) -> None:
    _, run_dir = audited
    cells = {c["cell"]["dp_mode"]: c for c in load_cells(run_dir)}
    none, local = cells["none"]["audit"], cells["local"]["audit"]
    assert none["receiver"] != none["exposure_workspace"]
    assert none["exposure"][0]["method"] == "exact"
    assert none["exposure"][0]["bits"] >= 10, none["exposure"]
    # Each run draws fresh OS noise, so the exposure varies between runs (up to ~4 bits over chance was seen at
    # ε = 1 with 32 copies, a group DP bounds only loosely); without DP it is over 10 bits.
    assert local["exposure"][0]["bits"] <= local["chance_exposure"] + 5, local["exposure"]
    assert math.isinf(none["claimed_epsilon"])
    assert local["claimed_epsilon"] == pytest.approx(max(w["epsilon"] for w in cells["local"]["workspaces"]))
    assert local["claimed_epsilon"] <= 1.0
    for audit in (none, local):
        assert audit["one_run"]["canaries"] == 64 and audit["one_run"]["guesses"] == 16
        assert not audit["violation"]
        assert audit["one_run"]["epsilon_lower_bound"] <= audit["claimed_epsilon"]
    report = (run_dir / REPORT_FILE).read_text(encoding="utf-8")
    assert "## Empirical privacy audit (canaries)" in report and "FAILED" not in report


def test_the_shipped_audit_config_gives_a_positive_bound_and_clear_exposure_without_dp(tmp_path: Path) -> None:
    """The no-DP cell of experiments/configs/audit_canaries.toml (about 50 s on 1 thread): the audit has power."""
    shipped = (Path(__file__).parents[2] / "experiments/configs/audit_canaries.toml").read_text(encoding="utf-8")
    grid = "target-epsilons = [inf, 8.0, 1.0]"
    assert grid in shipped
    config = tmp_path / "audit.toml"
    config.write_text(shipped.replace(grid, "target-epsilons = [inf]"), encoding="utf-8")
    result = CliRunner().invoke(app, ["audit", "canaries", str(config), "--results", str(tmp_path / "results")])
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "results").iterdir()
    (cell,) = load_cells(run_dir)
    audit = cell["audit"]
    one_run = audit["one_run"]
    assert (one_run["canaries"], one_run["guesses"]) == (256, 64)
    # Measured 1.68-3.03 (59-64 of 64 right) in six runs; 0.5 needs 47 right, chance is 32.
    assert one_run["epsilon_lower_bound"] > 0.5, one_run
    bits = {e["copies"]: e["bits"] for e in audit["exposure"]}
    # Measured 13.5-18.9 bits (8 copies) and 19.1-19.9 (32 copies) of at most 19.93; chance 1.44.
    assert bits[8] > audit["chance_exposure"] + 5 and bits[32] > 12, audit["exposure"]
    assert not audit["violation"]


def test_canaries_never_reach_a_file(audited: tuple[Path, Path]) -> None:
    config, run_dir = audited
    sweep = load_sweep(config, audit=True)
    cells = load_cells(run_dir)
    for cell in cells:
        folder = run_dir / "cells" / cell["cell"]["id"] / "workspaces"
        names = sorted(p.name for p in folder.iterdir())
        plan = plan_canaries(sweep.audit, names, cell["cell"]["seed"])
        secrets = [text.encode() for _, text in plan.exposure] + [c.text.encode() for c in plan.one_run]
        files = [p for p in run_dir.rglob("*") if p.is_file()]
        assert any(p.name == "ledger.sqlite" for p in files)
        for path in files:
            content = path.read_bytes()
            assert not any(secret in content for secret in secrets), path
        injected = {w["name"]: w["canaries"] for w in cell["workspaces"]}
        assert injected[plan.exposure_workspace] == len(plan.injected(plan.exposure_workspace)) > 32


def test_a_lower_bound_above_the_claim_fails_the_audit_loudly(audited: tuple[Path, Path], tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    config, run_dir = audited
    sweep = load_sweep(config, audit=True)
    copy = tmp_path / run_dir.name
    shutil.copytree(run_dir, copy)
    path = next((copy / "cells").glob("*-local-*/metrics.json"))
    cell = json.loads(path.read_text(encoding="utf-8"))
    run = RunConfig.from_mapping(cell["run_config"])
    plan = plan_canaries(sweep.audit, sorted(w["name"] for w in cell["workspaces"]), cell["cell"]["seed"])
    overfit = _memorize([c.text for c in plan.one_run if c.included], run)
    with caplog.at_level(logging.ERROR, logger="optin.canary_audit"):
        audit = audit_model(sweep.audit, plan, run, overfit, 1e-5, (0.05, "a claim this model does not meet"))
    assert audit["one_run"]["correct"] == 16 and audit["one_run"]["epsilon_lower_bound"] > 0.05
    assert audit["violation"] and "PRIVACY AUDIT FAILED" in caplog.text
    cell["audit"] = audit
    path.write_text(json.dumps(cell), encoding="utf-8")
    result = CliRunner().invoke(app, ["audit", "canaries", str(config), "--results", str(tmp_path),
                                      "--resume", str(copy)])
    assert result.exit_code == EXIT_AUDIT_FAILED, result.output
    assert "PRIVACY AUDIT FAILED" in result.output
    result = CliRunner().invoke(app, ["sweep", str(config), "--results", str(tmp_path), "--resume", str(copy)])
    assert result.exit_code == EXIT_AUDIT_FAILED and "PRIVACY AUDIT FAILED" in result.output, result.output
    report = (copy / REPORT_FILE).read_text(encoding="utf-8")
    assert report.split("\n")[2].startswith("> **PRIVACY AUDIT FAILED — a bug, or a 5% chance")
    assert "True" in (copy / CSV_FILE).read_text(encoding="utf-8")


def _memorize(texts: list[str], run: RunConfig) -> ArrayRecord:
    """A model trained without any privacy on ``texts`` alone, until it has memorized them."""
    task = NextCharTask(seq_len=run.seq_len)
    model = task.build_model(run.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    inputs, targets = task.encode_texts(texts).tensors
    for _ in range(150):
        optimizer.zero_grad()
        task.loss(model(inputs), targets).backward()
        optimizer.step()
    return ArrayRecord(model.state_dict())
