"""Ten workspaces on Flower's Deployment Engine, one of which stops answering in the middle of a round.

A real SuperLink and 10 SuperNodes on 127.0.0.1 (TLS, SuperNode authentication), 2 rounds of the flagship
task. Two workspaces have not opted in (one has no policy file, one says ``consent = false``). In round 2,
as soon as the server's audit log has the consenting answer of one node, every process of that node is
frozen (SIGSTOP): it is sent its ``train`` message and never answers. Flower's SuperLink reports it
unavailable once it has missed its heartbeats (within 2 x 30 s), and the round completes with the others.

Checked against each node's own ledger and audit log: opted-out nodes are only ever asked, and skipped
with their reason every round; every release a healthy node recorded is one the server received, and the
other way round; the frozen node is skipped as not replying in round 2 and nothing of it was aggregated
that round; every audit log verifies; every process is gone afterwards. About 4 minutes on 2 cores; every
wait is bounded (the run by ``RUN_TIMEOUT_S``).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from experiments.runners.deployment import LoopbackDeployment, write_dev_certificates
from experiments.runners.in_process import make_synthetic_federation
from experiments.runners.processes import find_processes
from federated.audit import AUDIT_FILE, read_entries, verify
from federated.config import RunConfig
from federated.data import SyntheticSpec
from federated.privacy.ledger import LEDGER_FILE, Ledger

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not Path("/proc").is_dir(), reason="process checks read /proc")]

SPEC = SyntheticSpec(num_workspaces=10, seed=23, min_messages=30, max_messages=60)
OPTED_OUT = {2: "policy-missing", 7: "consent-off"}  # make_synthetic_federation: the first gets no policy file
FROZEN = 4  # consents, and freezes in round FROZEN_ROUND once the server has its answer
FROZEN_ROUND = 2
ROUNDS = 2
RUN_TIMEOUT_S = 600


@dataclass
class DeployedRun:
    metrics: dict[str, Any]
    results: Path
    workspace_of: dict[str, Path]  # node id (as metrics.json writes it) -> workspace folder
    node_of: dict[int, str]  # workspace index -> node id
    frozen_pids: list[int]
    homes: list[Path]


@pytest.fixture(scope="module")
def deployed_run(tmp_path_factory: pytest.TempPathFactory) -> DeployedRun:
    root = tmp_path_factory.mktemp("load-deployment")
    layout = make_synthetic_federation(root / "workspaces", SPEC, opted_out=sorted(OPTED_OUT))
    certs, keys = write_dev_certificates(root / "certs", [f.name for f in layout.folders])
    config = RunConfig(num_rounds=ROUNDS, local_steps=1, batch_size=12, seq_len=32,
                       min_available_nodes=SPEC.num_workspaces, seed=SPEC.seed,
                       results_dir=str((root / "results").resolve()))
    with LoopbackDeployment(root / "flower", certs) as deployment:
        cli = deployment.start_superlink()
        node_of = {}
        for i, (key, folder) in enumerate(zip(keys, layout.folders)):
            node_of[i] = str(cli.register(key.public_key, key.name))
            deployment.start_supernode(key, folder)
        cli.wait_online([int(n) for n in node_of.values()])
        frozen_pids: list[int] = []
        answered = _server_has_answer(Path(config.results_dir) / AUDIT_FILE, int(node_of[FROZEN]), FROZEN_ROUND)
        watcher = _WhenTrue(answered, lambda: frozen_pids.extend(deployment.freeze_node(keys[FROZEN].name)))
        watcher.start()
        try:
            outcome = cli.run(config, deployment.log_of("flwr-run"), timeout=RUN_TIMEOUT_S)
        finally:
            watcher.finish()
    metrics = json.loads((outcome.results / "metrics.json").read_text(encoding="utf-8"))
    return DeployedRun(metrics, outcome.results, {node_of[i]: f for i, f in enumerate(layout.folders)}, node_of,
                       frozen_pids, list(deployment.homes))


class _WhenTrue(threading.Thread):
    """Polls ``condition`` every 0.2 s and runs ``action`` once when it holds; ``finish`` stops polling and
    re-raises what either raised."""

    def __init__(self, condition: Callable[[], bool], action: Callable[[], None]) -> None:
        super().__init__(daemon=True)
        self._condition, self._action = condition, action
        self._done = threading.Event()
        self._error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self._done.is_set():
                if self._condition():
                    self._action()
                    return
                self._done.wait(0.2)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread by finish()
            self._error = exc

    def finish(self) -> None:
        self._done.set()
        self.join(timeout=30)
        if self._error is not None:
            raise self._error


def _server_has_answer(audit: Path, node_id: int, server_round: int) -> Callable[[], bool]:
    """Whether the server's audit log records ``node_id``'s consenting answer for ``server_round`` (the log is
    read as the ServerApp writes it: a line without its newline yet is not read)."""

    def answered() -> bool:
        if not audit.exists():
            return False
        for line in audit.read_text(encoding="utf-8").splitlines(keepends=True):
            entry = json.loads(line) if line.endswith("\n") else {}
            if (entry.get("kind"), entry.get("round"), entry.get("node"), entry.get("reason")) == (
                    "consent", server_round, node_id, "consent-on"):
                return True
        return False

    return answered


def _server_audit(run: DeployedRun, kind: str) -> list[dict[str, Any]]:
    return [e for e in read_entries(run.results / AUDIT_FILE) if e["kind"] == kind]


def test_every_round_completes_with_the_consenting_nodes_that_answer(deployed_run: DeployedRun) -> None:
    metrics, node_of = deployed_run.metrics, deployed_run.node_of
    consenting = {node_of[i] for i in range(SPEC.num_workspaces) if i not in OPTED_OUT}
    assert deployed_run.frozen_pids  # the node was frozen while the run went on
    assert [r["round"] for r in metrics["rounds"]] == list(range(ROUNDS + 1))
    assert set(metrics["rounds"][1]["trained"]) == consenting
    assert set(metrics["rounds"][FROZEN_ROUND]["trained"]) == consenting - {node_of[FROZEN]}
    for r in metrics["rounds"][1:]:
        assert r["metrics"]["updates"] == len(r["trained"]) and r["metrics"]["max-epsilon"] > 0, r
        assert r["dropped"] == {}, r


def test_opted_out_nodes_are_only_asked_and_skipped_with_their_reason_every_round(deployed_run: DeployedRun) -> None:
    out = {deployed_run.node_of[i]: reason for i, reason in OPTED_OUT.items()}
    for r in deployed_run.metrics["rounds"]:
        frozen = {deployed_run.node_of[FROZEN]: "no-reply"} if r["round"] == FROZEN_ROUND else {}
        assert r["skipped"] == out | frozen, r
        assert not set(out) & (set(r["trained"]) | set(r["evaluated"])), r
    skips = {(e["round"], str(e["node"]), e["reason"]) for e in _server_audit(deployed_run, "skip")}
    assert {(n, node, reason) for n in range(1, ROUNDS + 1) for node, reason in out.items()} <= skips
    for node, reason in out.items():
        folder = deployed_run.workspace_of[node]
        entries = list(read_entries(folder / AUDIT_FILE))
        # The run's app, recorded at first sight, then one query per round and nothing more.
        assert [e["kind"] for e in entries] == ["run-app"] + ["consent"] * (ROUNDS + 1), folder
        assert all(e["consent"] is False and e["reason"] == reason for e in entries[1:]), folder
        assert not (folder / LEDGER_FILE).exists(), folder


def test_the_frozen_node_is_logged_as_not_replying_and_nothing_of_it_was_aggregated(
        deployed_run: DeployedRun) -> None:
    node = deployed_run.node_of[FROZEN]
    assert (FROZEN_ROUND, int(node), "no-reply") in {(e["round"], e["node"], e["reason"])
                                                     for e in _server_audit(deployed_run, "skip")}
    received = {e["round"] for e in _server_audit(deployed_run, "release-received") if str(e["node"]) == node}
    assert received == {1}
    assert deployed_run.metrics["nodes"][node]["rounds_joined"] == 1
    with Ledger(deployed_run.workspace_of[node] / LEDGER_FILE) as ledger:
        recorded = [r.round for r in ledger.releases()]
    # Frozen as soon as the server had its answer, long before a training process could have started and
    # finished; a ledger with a round-2 release would still be safe (it is written before a release leaves).
    assert recorded == [1]


def test_every_healthy_node_recorded_exactly_the_releases_the_server_received(deployed_run: DeployedRun) -> None:
    received: dict[str, set[tuple[int, str]]] = {}
    for e in _server_audit(deployed_run, "release-received"):
        received.setdefault(str(e["node"]), set()).add((e["round"], e["sha256"]))
    rounds = deployed_run.metrics["rounds"]
    healthy = [i for i in range(SPEC.num_workspaces) if i not in OPTED_OUT and i != FROZEN]
    for i in healthy:
        node = deployed_run.node_of[i]
        folder = deployed_run.workspace_of[node]
        with Ledger(folder / LEDGER_FILE) as ledger:
            releases = ledger.releases()
        assert [(r.round, r.epsilon_total) for r in releases] == [
            (r["round"], r["trained"][node]["epsilon"]) for r in rounds if node in r["trained"]], folder
        assert [r.round for r in releases] == list(range(1, ROUNDS + 1)), folder
        sent = {(e["round"], e["sha256"]) for e in read_entries(folder / AUDIT_FILE) if e["kind"] == "release"}
        assert sent == received[node], folder


def test_every_audit_log_verifies(deployed_run: DeployedRun) -> None:
    for folder in deployed_run.workspace_of.values():
        assert verify(folder / AUDIT_FILE).ok, folder
    server = verify(deployed_run.results / AUDIT_FILE)
    assert server.ok, server


def test_every_process_is_gone_the_frozen_ones_too(deployed_run: DeployedRun) -> None:
    for pid in deployed_run.frozen_pids:
        stat = Path(f"/proc/{pid}/stat")
        assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z", f"pid {pid} still alive"
    assert all(find_processes(home) == [] for home in deployed_run.homes)
