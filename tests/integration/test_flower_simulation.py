"""Optin's apps on Flower's Simulation Engine (``flwr run`` + local SuperLink + Ray), end to end.

One run of a 4-workspace federation (one without consent) for 2 rounds; then
checks on what the ServerApp recorded, and that nothing of the run is left
running. About 40 s on 2 cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from experiments.runners.in_process import make_synthetic_federation
from experiments.runners.flower_simulation import SimulationResources, run_flower_simulation
from federated.config import RunConfig
from federated.data import SyntheticSpec
from federated.tasks.model_file import load_model

pytest.importorskip("ray", reason="Flower's Simulation Engine needs flwr[simulation] (Ray)")

SPEC = SyntheticSpec(num_workspaces=4, seed=5, min_messages=150, max_messages=250)
OPTED_OUT = 1  # the first opted-out workspace gets no policy file at all: consent defaults to no
ROUNDS = 2


def _live_processes_of(home: Path) -> list[str]:
    """Processes (not zombies) whose environment or command line names this Flower home; from /proc."""
    marker = f"FLWR_HOME={home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            stat = (entry / "stat").read_text()
            environ = (entry / "environ").read_bytes().split(b"\0")
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if stat[stat.rfind(")") + 2:].startswith("Z"):
            continue
        if marker in environ or any(str(home).encode() in a for a in cmdline):
            found.append(f"{entry.name}: {b' '.join(cmdline).decode(errors='replace')[:120]}")
    return found


@pytest.fixture(scope="module")
def simulated_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    root = tmp_path_factory.mktemp("flower-sim")
    make_synthetic_federation(root / "workspaces", SPEC, opted_out=[OPTED_OUT])
    home = root / "flwr-home"
    config = RunConfig(num_rounds=ROUNDS, local_steps=5, sample_rate=0.1, batch_size=16, seed=5,
                       workspaces_root=str(root / "workspaces"), results_dir=str(root / "results"))
    # 2 cores: one CPU per ClientApp actor, Ray limited to the machine's cores (at most 2 actors at once).
    resources = SimulationResources(client_cpus=1, total_cpus=min(2, os.cpu_count() or 1))
    results = run_flower_simulation(config, num_supernodes=SPEC.num_workspaces, resources=resources,
                                    timeout=240, flwr_home=home)
    return json.loads((results / "metrics.json").read_text(encoding="utf-8")), home, results


@pytest.mark.slow
def test_simulated_run_completes_every_round(simulated_run) -> None:
    metrics, _, _ = simulated_run
    assert [r["round"] for r in metrics["rounds"]] == list(range(ROUNDS + 1))
    assert metrics["config"]["num-rounds"] == ROUNDS
    assert len(metrics["nodes"]) == SPEC.num_workspaces


@pytest.mark.slow
def test_simulated_run_saves_the_final_global_model(simulated_run) -> None:
    metrics, _, results = simulated_run
    loaded = load_model(results)
    assert loaded.card["run_config"] == metrics["config"]
    assert loaded.card["rounds"] == {"configured": ROUNDS, "updated": list(range(1, ROUNDS + 1))}
    assert loaded.card["run_id"] in (results / "flwr-run.log").read_text(encoding="utf-8")


@pytest.mark.slow
def test_opted_out_workspace_is_skipped_with_its_reason_and_never_trains(simulated_run) -> None:
    metrics, _, _ = simulated_run
    refusing = {node: info for node, info in metrics["nodes"].items() if info["consent"] != "consent-on"}
    assert len(refusing) == 1, metrics["nodes"]
    (out, info), = refusing.items()
    assert info["consent"] == "policy-missing"
    assert info["rounds_joined"] == 0
    for r in metrics["rounds"]:
        assert len(r["consent"]) == SPEC.num_workspaces, r
        assert out not in r["trained"], r
        assert out not in r["evaluated"], r
        assert r["skipped"] == {out: "policy-missing"}, r
    for r in metrics["rounds"][1:]:
        assert len(r["trained"]) == SPEC.num_workspaces - 1, r
        assert len(r["evaluated"]) == SPEC.num_workspaces - 1, r


@pytest.mark.slow
def test_training_through_flower_improves_held_out_accuracy(simulated_run) -> None:
    metrics, _, _ = simulated_run
    # The nodes' own figures (partition i = i-th sorted folder), read back from their audit logs.
    local = metrics["node_local"]
    first, last = local["rounds"][0], local["rounds"][-1]
    assert first["evaluating"] == last["evaluating"] == SPEC.num_workspaces - 1, local["rounds"]
    assert last["eval-accuracy"] > first["eval-accuracy"], (first, last)
    assert last["training"] == SPEC.num_workspaces - 1 and last["train-loss"] > 0
    silent = [name for name, w in local["workspaces"].items() if not w["rounds"]]
    assert len(silent) == 1 and silent[0].startswith(f"ws{OPTED_OUT:02d}")
    assert not any(m for r in metrics["rounds"] for m in r["evaluated"].values())  # the server saw none


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="process discovery reads /proc")
def test_no_process_of_the_run_survives(simulated_run) -> None:
    _, home, _ = simulated_run
    assert _live_processes_of(home.resolve()) == []
    # The scan is not vacuous: a process started with that FLWR_HOME is found.
    probe = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"],
                             env={**os.environ, "FLWR_HOME": str(home.resolve())})
    try:
        assert [p for p in _live_processes_of(home.resolve()) if p.startswith(f"{probe.pid}:")]
    finally:
        probe.kill()
        probe.wait()
