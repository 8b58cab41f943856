"""Load: one in-process federation of 200 workspaces for 3 rounds, 20 of them opted out.

What must hold at that size, as at three workspaces: an opted-out node is only ever asked for its
consent (no ``train`` or ``evaluate`` message, no ledger, not one read of its messages), and the
server records it as skipped, with its reason, in every round; every consenting node's ledger holds
exactly the releases the server's ``metrics.json`` records for it and its audit log exactly the
updates the server's audit log received (nothing lost, nothing extra); every audit log verifies.

Workspaces are tiny (16-30 messages, one DP-SGD step per round at the public sampling rate 0.5, so
about 6 to 12 messages, 16-byte sequences) so the run takes a minute or two on 2 cores. An empty
Poisson batch would only make that step noise alone: replies carry no loss, so no reply is dropped
for it.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import torch
from flwr.app import Context, Message

from clients.app import app as client_app
from clients.workspace_node import DATA_FOLDER
from experiments.runners.in_process import make_synthetic_federation
from federated.audit import AUDIT_FILE, read_entries, verify
from federated.config import RunConfig
from federated.data import SyntheticSpec
from federated.inprocess import run_in_process
from federated.privacy.ledger import LEDGER_FILE, Ledger
from federated.privacy.policy import POLICY_FILE
from server.app import app as server_app

pytestmark = pytest.mark.slow

SPEC = SyntheticSpec(num_workspaces=200, seed=17, min_messages=16, max_messages=30)
OPTED_OUT = tuple(range(3, SPEC.num_workspaces, 10))  # 20, spread over the federation
NO_POLICY = frozenset(OPTED_OUT[::2])  # half have no policy file at all, half say consent = false
ROUNDS = 3
CONFIG = RunConfig(num_rounds=ROUNDS, local_steps=1, sample_rate=0.5, batch_size=9, seq_len=16, noise_multiplier=1.5,
                   min_available_nodes=SPEC.num_workspaces, seed=SPEC.seed)

OPENED: list[str] = []


def _record_opens(event: str, args: tuple[Any, ...]) -> None:
    if event == "open" and isinstance(args[0], (str, Path)):
        OPENED.append(str(args[0]))


sys.addaudithook(_record_opens)  # audit hooks cannot be removed; this one only appends paths


@dataclass
class LoadRun:
    folders: tuple[Path, ...]
    node_of: dict[Path, str]  # workspace folder -> node id as metrics.json writes it
    delivered: dict[Path, list[str]]  # workspace folder -> message types it received, in order
    data_read: set[Path]  # workspace folders of which a file under data/ was opened
    metrics: dict[str, Any]
    results: Path
    run_id: str

    def consenting(self) -> Iterator[Path]:
        return (f for i, f in enumerate(self.folders) if i not in OPTED_OUT)

    def opted_out(self) -> dict[Path, str]:
        """Opted-out folder -> the reason its node gives."""
        return {self.folders[i]: "policy-missing" if i in NO_POLICY else "consent-off" for i in OPTED_OUT}


@pytest.fixture(scope="module")
def load_run(tmp_path_factory: pytest.TempPathFactory) -> LoadRun:
    root = tmp_path_factory.mktemp("load")
    layout = make_synthetic_federation(root / "workspaces", SPEC, opted_out=OPTED_OUT)
    for i in NO_POLICY:
        (layout.folders[i] / POLICY_FILE).unlink(missing_ok=True)
    delivered: dict[Path, list[str]] = defaultdict(list)

    def recording_client(msg: Message, context: Context) -> Message:
        delivered[Path(str(context.node_config["workspace"]))].append(msg.metadata.message_type)
        return client_app(msg, context)

    config = replace(CONFIG, results_dir=str(root / "results"))
    threads = torch.get_num_threads()
    # Each node's tensors are tiny: on a small shared machine, intra-op threads only spin against
    # each other (several times slower than one thread here).
    torch.set_num_threads(1)
    OPENED.clear()
    try:
        grid = run_in_process(server_app, recording_client, [{"workspace": str(f)} for f in layout.folders],
                              config.to_mapping())
    finally:
        torch.set_num_threads(threads)
    node_of = {Path(str(n.context.node_config["workspace"])): str(n.node_id) for n in grid.nodes}
    metrics = json.loads((root / "results" / "metrics.json").read_text(encoding="utf-8"))
    return LoadRun(layout.folders, node_of, dict(delivered), _data_read(root / "workspaces", OPENED), metrics,
                   root / "results", str(grid.run.run_id))


def _data_read(workspaces: Path, opened: list[str]) -> set[Path]:
    """The workspace folders under ``workspaces`` of which some file in ``data/`` was opened."""
    read = set()
    for path in opened:
        parts = Path(path).parts[len(workspaces.parts):]
        if path.startswith(f"{workspaces}/") and len(parts) > 1 and parts[1] == DATA_FOLDER:
            read.add(workspaces / parts[0])
    return read


def test_opted_out_nodes_are_only_asked_and_keep_no_ledger_and_no_data_read(load_run: LoadRun) -> None:
    for folder in load_run.opted_out():
        assert load_run.delivered[folder] == ["query"] * (ROUNDS + 1), folder  # round 0 and each round
        assert not (folder / LEDGER_FILE).exists(), folder
        assert folder not in load_run.data_read, folder
    for folder in load_run.consenting():
        assert load_run.delivered[folder].count("train") == ROUNDS, folder
        assert folder in load_run.data_read, folder  # the hook does see reads


def test_server_lists_each_opted_out_node_as_skipped_with_its_reason_every_round(load_run: LoadRun) -> None:
    expected = {load_run.node_of[f]: reason for f, reason in load_run.opted_out().items()}
    assert len(expected) == len(OPTED_OUT) and set(expected.values()) == {"policy-missing", "consent-off"}
    rounds = load_run.metrics["rounds"]
    assert [r["round"] for r in rounds] == list(range(ROUNDS + 1))
    for r in rounds:
        assert r["skipped"] == expected, r["round"]
        assert {n: c for n, c in r["consent"].items() if c != "consent-on"} == expected, r["round"]
        assert r["dropped"] == {}, r["round"]
    audited = {(e["round"], str(e["node"]), e["reason"]) for e in read_entries(load_run.results / AUDIT_FILE)
               if e["kind"] == "skip"}
    assert audited == {(n, node, reason) for n in range(1, ROUNDS + 1) for node, reason in expected.items()}


def test_each_consenting_ledger_holds_exactly_the_releases_the_server_recorded(load_run: LoadRun) -> None:
    rounds = load_run.metrics["rounds"]
    received: dict[str, set[tuple[int, str]]] = defaultdict(set)
    for e in read_entries(load_run.results / AUDIT_FILE):
        if e["kind"] == "release-received":
            received[str(e["node"])].add((e["round"], e["sha256"]))
    consenting = list(load_run.consenting())
    assert len(consenting) == SPEC.num_workspaces - len(OPTED_OUT)
    for folder in consenting:
        node = load_run.node_of[folder]
        recorded = [(r["round"], r["trained"][node]["epsilon"]) for r in rounds if node in r["trained"]]
        with Ledger(folder / LEDGER_FILE) as ledger:
            releases = ledger.releases()
        assert [(r.round, r.epsilon_total) for r in releases] == recorded, folder
        assert [r.round for r in releases] == list(range(1, ROUNDS + 1)), folder
        assert {r.run_id for r in releases} == {load_run.run_id}, folder
        sent = {(e["round"], e["sha256"]) for e in read_entries(folder / AUDIT_FILE) if e["kind"] == "release"}
        assert sent == received.pop(node), folder
    assert received == {}  # the server received no update from any other node


def test_every_audit_log_verifies(load_run: LoadRun) -> None:
    for folder in load_run.folders:
        assert verify(folder / AUDIT_FILE).ok, folder
    server = verify(load_run.results / AUDIT_FILE)
    assert server.ok, server
