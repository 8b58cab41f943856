"""Central workspace-level DP-FedAvg (server.central_dp) in a real in-process run of Optin's apps.

Checks the mechanism from what crossed the wire: each update clipped to C, the equal-weight average
of the clipped updates, Gaussian noise of std z·C/m; consent gating intact with central DP;
and the ε the server records per round.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Context, Message
from typer.testing import CliRunner

from clients.app import app as client_app
from experiments.cli.app import app
from experiments.runners.in_process import make_synthetic_federation, run_federation
from federated.config import RunConfig
from federated.data import SyntheticSpec
from federated.errors import ConfigError
from federated.inprocess import run_in_process
from federated.privacy.accounting import epsilon
from federated.privacy.policy import Policy, write_policy
from federated.tasks.model_file import CARD_FILE
from server.app import app as server_app

SPEC = SyntheticSpec(num_workspaces=4, seed=8, min_messages=60, max_messages=90)
CONFIG = RunConfig(num_rounds=2, local_steps=3, sample_rate=0.25, batch_size=16, lr=0.1, noise_multiplier=1.0,
                   max_grad_norm=1.0, seed=8, dp_mode="both", central_noise_multiplier=1e-4, central_clipping_norm=1.0,
                   central_delta=1e-3)
OPTED_OUT = 1


@pytest.fixture(scope="module")
def central_run(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("central")
    layout = make_synthetic_federation(root / "ws", SPEC, opted_out=[OPTED_OUT])
    config = replace(CONFIG, results_dir=str(root / "results"))
    seen: list[tuple[str, str, str, list[np.ndarray]]] = []  # (workspace, type, round, arrays in or out)

    def recording_client(msg: Message, context: Context) -> Message:
        workspace = str(context.node_config["workspace"])
        kind, group = msg.metadata.message_type, msg.metadata.group_id
        if "arrays" in msg.content:
            seen.append((workspace, f"{kind}-in", group, msg.content["arrays"].to_numpy_ndarrays()))
        reply = client_app(msg, context)
        if not reply.has_error() and "arrays" in reply.content:
            seen.append((workspace, f"{kind}-out", group, reply.content["arrays"].to_numpy_ndarrays()))
        return reply

    run_in_process(server_app, recording_client, [{"workspace": str(f)} for f in layout.folders],
                   config.to_mapping())
    metrics = json.loads((root / "results" / "metrics.json").read_text())
    return layout, metrics, seen


@pytest.mark.slow
def test_released_model_is_the_noised_equal_weight_average_of_clipped_updates(central_run) -> None:
    _, metrics, seen = central_run
    clip, z = CONFIG.central_clipping_norm, CONFIG.central_noise_multiplier
    for server_round in ("1", "2"):
        sent = next(a for _, kind, g, a in seen if kind == "train-in" and g == server_round)
        replies = [a for _, kind, g, a in seen if kind == "train-out" and g == server_round]
        released = next(a for _, kind, g, a in seen if kind == "evaluate-in" and g == server_round)
        assert len(replies) == 3
        norms, clipped = [], []
        for reply in replies:
            update = [r.astype(np.float64) - s for r, s in zip(reply, sent)]
            norm = math.sqrt(sum(float(np.sum(u * u)) for u in update))
            norms.append(norm)
            clipped.append([s + u * min(1.0, clip / norm) for s, u in zip(sent, update)])
        assert max(norms) > clip  # clipping really was active
        mean = [sum(column) / len(clipped) for column in zip(*clipped)]
        residual = np.concatenate([(r - m).ravel() for r, m in zip(released, mean)])
        # Noise of std z·C/m: with m = 3 and z = 1e-4 any unequal weighting (nodes send no sizes) would show here.
        assert residual.std() == pytest.approx(z * clip / 3, rel=0.05)
        assert abs(residual.mean()) < 5 * z * clip / 3 / math.sqrt(residual.size)
        record = metrics["rounds"][int(server_round)]["metrics"]
        assert record["central-cohort"] == 3 and record["central-releases"] == int(server_round)
        assert record["central-noise-std"] == pytest.approx(z * clip / 3)
        assert record["central-epsilon"] == epsilon([(z, 1.0, int(server_round))], CONFIG.central_delta)


@pytest.mark.slow
def test_central_dp_keeps_consent_gating(central_run) -> None:
    layout, metrics, seen = central_run
    out = str(layout.folders[OPTED_OUT])
    assert not [kind for ws, kind, _, _ in seen if ws == out]  # neither train nor evaluate ever reached it
    for r in metrics["rounds"][1:]:
        assert len(r["trained"]) == 3 and r["skipped"][next(iter(set(r["consent"]) - set(r["trained"])))] \
            == "policy-missing"


@pytest.mark.slow
def test_central_only_dp_trains_without_local_noise(tmp_path: Path) -> None:
    folders = make_synthetic_federation(tmp_path / "ws", SPEC, opted_out=[]).folders
    for folder in folders:
        write_policy(folder, Policy(consent=True, max_epsilon=math.inf, noise_multiplier=0.0))
    config = replace(CONFIG, dp_mode="central", noise_multiplier=0.0, central_noise_multiplier=1.0,
                     results_dir=str(tmp_path / "results"))
    run_federation(folders, config)
    metrics = json.loads((tmp_path / "results" / "metrics.json").read_text())
    assert all(len(r["trained"]) == 4 for r in metrics["rounds"][1:])
    assert metrics["rounds"][-1]["metrics"]["central-epsilon"] == epsilon([(1.0, 1.0, 2)], CONFIG.central_delta)
    # The saved model's card states the central ε the server's accountant reported, and no local claim.
    privacy = json.loads((tmp_path / "results" / CARD_FILE).read_text())["privacy"]
    assert privacy["central"]["epsilon"] == epsilon([(1.0, 1.0, 2)], CONFIG.central_delta)
    assert privacy["central"]["delta"] == CONFIG.central_delta and "local" not in privacy
    # Where the workspace's operator looks: the ledger spends ∞ (no local noise) and shows the central claim.
    shown = CliRunner().invoke(app, ["ledger", "show", "-w", str(folders[0])], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "spent ε = ∞ of ∞" in shown.output
    claimed = epsilon([(1.0, 1.0, 2)], Policy().delta)
    assert f"central DP, as the runs stated it: ε = {claimed:.3f} at δ={Policy().delta:g} over 2 round(s)" \
        in " ".join(shown.output.split())


@pytest.mark.parametrize("overrides, fragment", [
    ({"dp-mode": "global"}, "dp-mode: expected one of"),
    ({"dp-mode": "central"}, "noise-multiplier: dp-mode 'central' asks nodes for no local noise"),
    ({"dp-mode": "none", "noise-multiplier": 0.5}, "expected 0, got 0.5"),
    ({"dp-mode": "both", "central-noise-multiplier": 0.0}, "central-noise-multiplier: expected a value > 0"),
    ({"central-clipping-norm": 0.0}, "central-clipping-norm: expected a positive value"),
    ({"central-delta": 1.0}, "central-delta: expected a value in (0, 1)"),
])
def test_central_dp_config_errors_name_the_key(overrides: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        RunConfig.from_mapping(overrides)
    assert fragment in str(info.value)
