"""Prepare a synthetic federation on disk and run Optin's apps on it in process."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from clients.app import app as client_app
from experiments.runners.node_metrics import merge_node_local
from federated.config import RunConfig
from federated.data import SyntheticSpec, generate_federation
from federated.inprocess import InProcessGrid, Observer, run_in_process
from federated.privacy.policy import Policy, write_policy
from server.app import app as server_app


@dataclass(frozen=True)
class FederationLayout:
    """Workspace folders, and which of them consent (a missing policy file means no)."""

    folders: tuple[Path, ...]
    opted_out: tuple[int, ...]


def make_synthetic_federation(root: Path, spec: SyntheticSpec, opted_out: Sequence[int]) -> FederationLayout:
    """Generate ``spec`` under ``root``; every workspace consents except those at ``opted_out``.

    Of the opted-out workspaces, the first gets no policy file at all (the default is no) and the rest an
    explicit ``consent = false``.
    """
    folders = generate_federation(root, spec)
    bad = sorted(set(opted_out) - set(range(len(folders))))
    if bad:
        raise ValueError(f"opted_out: indices {bad} outside 0..{len(folders) - 1}")
    for i, folder in enumerate(folders):
        if i not in opted_out:
            write_policy(folder, Policy(consent=True))
        elif i != min(opted_out):
            write_policy(folder, Policy(consent=False))
    return FederationLayout(tuple(folders), tuple(sorted(opted_out)))


def run_federation(folders: Sequence[Path], config: RunConfig,
                   observer: Observer | None = None) -> dict[int, Path]:
    """Run Optin's ServerApp and ClientApp in process; returns which node id served which folder.

    With ``results-dir`` set, the ServerApp writes ``metrics.json`` and the final global model (``model.safetensors``
    and ``model.json``, ``federated.tasks.model_file``) there, and ``metrics.json`` also gets the node-local figures
    (held-out loss and accuracy, training loss) read back from the workspaces' audit logs
    (``experiments.runners.node_metrics``): this caller holds every folder, which a deployment's server never does.
    """
    grid = run_in_process(server_app, client_app, [{"workspace": str(f)} for f in folders], config.to_mapping(),
                          observer=observer)
    served = served_folders(grid)
    if config.results_dir:
        merge_node_local(Path(config.results_dir) / "metrics.json", list(folders), str(grid.run.run_id),
                         {folder: node_id for node_id, folder in served.items()})
    return served


def served_folders(grid: InProcessGrid) -> dict[int, Path]:
    """Node id to the workspace folder its node config names."""
    return {node.node_id: Path(str(node.context.node_config["workspace"])) for node in grid.nodes}
