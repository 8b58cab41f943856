"""Optin on Flower's Deployment Engine, end to end: a real SuperLink and 3 SuperNodes on 127.0.0.1.

TLS and SuperNode authentication are on; every node's key is registered; one workspace has not opted
in. ``flwr run`` submits Optin's ServerApp for 2 rounds of the flagship task (tiny: 3 local steps, small
workspaces); then a hostile federation operator submits a modified copy of the app (same name and
component, a ClientApp that consents for everyone and marks its import). The fixture leaves the deployment
(every process stopped by PID) before any check runs. About 3 minutes on 2 cores; every wait is bounded
(each run by ``RUN_TIMEOUT_S``).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from experiments.runners.deployment import LoopbackDeployment, write_dev_certificates
from experiments.runners.in_process import make_synthetic_federation
from experiments.runners.processes import APP_DIR, find_processes
from federated.audit import AUDIT_FILE, read_entries, verify
from federated.config import RunConfig
from federated.data import SyntheticSpec

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not Path("/proc").is_dir(), reason="process checks read /proc")]

SPEC = SyntheticSpec(num_workspaces=3, seed=11, min_messages=60, max_messages=120)
OPTED_OUT = 1  # no policy file at all: consent defaults to no
ROUNDS = 2
RUN_TIMEOUT_S = 240


@dataclass
class DeployedRun:
    metrics: dict[str, Any]
    results: Path
    workspace_of: dict[str, Path]  # node id (as metrics.json writes it) -> workspace folder
    homes: list[Path]
    pids_while_running: list[int]
    run_id: int
    hostile_run_id: int
    hostile_metrics: str  # the hostile run's metrics.json, as written
    hostile_imported: Path  # the modified ClientApp writes this file when it is imported
    streamed: str  # what ``flwr run --stream`` printed for the honest run


def hostile_copy(root: Path, marker: Path) -> Path:
    """A copy of the app whose ClientApp consents for every workspace and writes ``marker`` when imported."""
    copy = root / "hostile-app"
    shutil.copytree(APP_DIR, copy, ignore=shutil.ignore_patterns(".*", "tests", "results", "docs",
                                                                 "*.egg-info", "__pycache__"))
    app = copy / "clients" / "app.py"
    text = app.read_text(encoding="utf-8")
    honest = ('answer = {"consent": decision.consent, "reason": decision.reason, "can-afford": False,\n'
              '              "remaining-epsilon": 0.0, "label": decision.policy.label if decision.policy is not None '
              'else ""}')
    assert honest in text
    text = text.replace(honest, 'answer = {"consent": True, "reason": "hostile-app", "can-afford": True, '
                                '"remaining-epsilon": 99.0, "label": ""}')
    app.write_text(text + f"\n__import__('pathlib').Path({str(marker)!r}).write_text('imported')\n",
                   encoding="utf-8")
    return copy


@pytest.fixture(scope="module")
def deployed_run(tmp_path_factory: pytest.TempPathFactory) -> DeployedRun:
    root = tmp_path_factory.mktemp("deployment")
    layout = make_synthetic_federation(root / "workspaces", SPEC, opted_out=[OPTED_OUT])
    certs, keys = write_dev_certificates(root / "certs", [f.name for f in layout.folders])
    config = RunConfig(num_rounds=ROUNDS, local_steps=3, batch_size=8, min_available_nodes=SPEC.num_workspaces,
                       seed=SPEC.seed, results_dir=str(root / "results"))
    with LoopbackDeployment(root / "flower", certs) as deployment:
        cli = deployment.start_superlink()
        workspace_of = {}
        for key, folder in zip(keys, layout.folders):
            workspace_of[str(cli.register(key.public_key, key.name))] = folder
            deployment.start_supernode(key, folder)
        cli.wait_online([int(n) for n in workspace_of])
        outcome = cli.run(config, deployment.log_of("flwr-run"), timeout=RUN_TIMEOUT_S)
        pids = sorted(pid for home in deployment.homes for pid in find_processes(home))
        marker = root / "HOSTILE_CLIENTAPP_IMPORTED"
        hostile = cli.run(replace(config, num_rounds=1, results_dir=str(root / "hostile-results")),
                          deployment.log_of("flwr-run-hostile"), timeout=RUN_TIMEOUT_S,
                          app_dir=hostile_copy(root, marker))
    metrics = json.loads((outcome.results / "metrics.json").read_text(encoding="utf-8"))
    return DeployedRun(metrics, outcome.results, workspace_of, list(deployment.homes), pids, outcome.run_id,
                       hostile.run_id, (hostile.results / "metrics.json").read_text(encoding="utf-8"), marker,
                       deployment.log_of("flwr-run").read_text(encoding="utf-8", errors="replace"))


def _node_of(run: DeployedRun, index: int) -> str:
    return next(node for node, folder in run.workspace_of.items() if folder.name.startswith(f"ws{index:02d}"))


def test_results_come_back_for_every_round(deployed_run: DeployedRun) -> None:
    metrics = deployed_run.metrics
    assert [r["round"] for r in metrics["rounds"]] == list(range(ROUNDS + 1))
    assert set(metrics["nodes"]) == set(deployed_run.workspace_of)
    for r in metrics["rounds"][1:]:
        assert len(r["trained"]) == SPEC.num_workspaces - 1, r
        assert r["metrics"]["updates"] == len(r["trained"]) and r["metrics"]["max-epsilon"] > 0, r
        assert set(r["evaluated"]) == set(r["trained"]) and all(m == {} for m in r["evaluated"].values()), r
    for node, folder in deployed_run.workspace_of.items():
        if node != _node_of(deployed_run, OPTED_OUT):  # the held-out figures stayed in each node's audit log
            evaluations = [e for e in read_entries(folder / AUDIT_FILE)
                           if e["kind"] == "evaluation" and e["run_id"] == str(deployed_run.run_id)]
            assert len(evaluations) == ROUNDS + 1 and all(0 <= e["kept_local"]["accuracy"] <= 1 for e in evaluations)


def test_opted_out_node_is_skipped_and_gets_no_train_message(deployed_run: DeployedRun) -> None:
    out = _node_of(deployed_run, OPTED_OUT)
    for r in deployed_run.metrics["rounds"]:
        assert r["skipped"] == {out: "policy-missing"}, r
        assert out not in r["trained"] and out not in r["evaluated"], r
    entries = [e for e in read_entries(deployed_run.workspace_of[out] / AUDIT_FILE)
               if e["run_id"] == str(deployed_run.run_id) and e["kind"] != "run-app"]
    assert verify(deployed_run.workspace_of[out] / AUDIT_FILE).ok
    assert [e["kind"] for e in entries] == ["consent"] * (ROUNDS + 1)  # one query per round, nothing else
    assert all(e["consent"] is False and e["reason"] == "policy-missing" for e in entries)
    for server_round in range(1, ROUNDS + 1):  # the submitter sees each skip and its reason as the run goes
        assert f"round {server_round}: skipping node {out} (policy-missing)" in deployed_run.streamed


def test_each_release_the_server_received_is_one_a_node_recorded(deployed_run: DeployedRun) -> None:
    received = {e["sha256"] for e in read_entries(deployed_run.results / AUDIT_FILE) if e["kind"] == "release-received"}
    released = set()
    for node, folder in deployed_run.workspace_of.items():
        if node == _node_of(deployed_run, OPTED_OUT):
            continue
        entries = [e for e in read_entries(folder / AUDIT_FILE)
                   if e["kind"] == "release" and e["run_id"] == str(deployed_run.run_id)]
        assert len(entries) == ROUNDS, folder
        released |= {e["sha256"] for e in entries}
    assert received == released and len(received) == ROUNDS * (SPEC.num_workspaces - 1)


def test_a_modified_app_never_runs_on_a_node(deployed_run: DeployedRun) -> None:
    """The attack: a federation operator ships a ClientApp that consents for everyone. Each node answers with its
    own installed ClientApp: the opted-out workspace still says no, and the modified code is never imported."""
    assert not deployed_run.hostile_imported.exists()
    hostile = json.loads(deployed_run.hostile_metrics)
    assert "hostile-app" not in deployed_run.hostile_metrics
    out = _node_of(deployed_run, OPTED_OUT)
    assert all(r["skipped"] == {out: "policy-missing"} for r in hostile["rounds"]), hostile["rounds"]
    assert all(len(r["trained"]) == SPEC.num_workspaces - 1 for r in hostile["rounds"][1:])
    for folder in deployed_run.workspace_of.values():
        apps = {e["run_id"]: e for e in read_entries(folder / AUDIT_FILE) if e["kind"] == "run-app"}
        assert set(apps) == {str(deployed_run.run_id), str(deployed_run.hostile_run_id)}, folder
        honest, modified = apps[str(deployed_run.run_id)], apps[str(deployed_run.hostile_run_id)]
        assert honest["clientapp"] == modified["clientapp"] == "clients.app:app"
        assert len(honest["fab_sha256"]) == 64 and honest["fab_sha256"] != modified["fab_sha256"]
        assert honest["served"] and modified["served"]


def test_every_process_was_stopped_by_pid(deployed_run: DeployedRun) -> None:
    # SuperLink, 3 SuperNodes, the executor each node runs and its prestarted worker were alive during the run.
    assert len(deployed_run.pids_while_running) >= 2 * (1 + SPEC.num_workspaces), deployed_run.pids_while_running
    for pid in deployed_run.pids_while_running:
        stat = Path(f"/proc/{pid}/stat")
        assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z", f"pid {pid} still alive"
    assert all(find_processes(home) == [] for home in deployed_run.homes)



def test_a_failure_inside_the_deployment_still_stops_every_process(tmp_path: Path) -> None:
    certs, _ = write_dev_certificates(tmp_path / "certs")
    started: list[int] = []
    with pytest.raises(RuntimeError, match="a step of the caller failed"):
        with LoopbackDeployment(tmp_path / "flower", certs) as deployment:
            deployment.start_superlink()
            deadline = time.monotonic() + 30
            while len(started := find_processes(tmp_path / "flower" / "superlink")) < 2 and time.monotonic() < deadline:
                time.sleep(0.2)  # the SuperLink starts its flower-superexec just after it opens its port
            raise RuntimeError("a step of the caller failed")
    assert len(started) >= 2, started  # the SuperLink and the flower-superexec it started (its own session)
    assert all(find_processes(home) == [] for home in deployment.homes)
