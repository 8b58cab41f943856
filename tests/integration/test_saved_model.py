"""The global model a real in-process run saves: it reloads to the model the nodes evaluated last, and
``optin evaluate`` scores it on workspaces that did not train without writing to their ledger or audit log."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from experiments.cli.app import app
from experiments.runners.in_process import make_synthetic_federation, run_federation
from experiments.runners.local_evaluation import evaluate_locally
from experiments.runners.node_metrics import workspace_figures
from federated.audit import AUDIT_FILE
from federated.privacy.ledger import LEDGER_FILE
from federated.privacy.node_secret import SECRET_FILE
from federated.privacy.policy import Policy, write_policy
from federated.tasks.model_file import load_model
from tests.conftest import SMALL_CONFIG, SMALL_SPEC

OPTED_OUT = 1  # no policy file: never consented, never read its data


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("saved-model")
    layout = make_synthetic_federation(root / "workspaces", SMALL_SPEC, opted_out=[OPTED_OUT])
    config = replace(SMALL_CONFIG, num_rounds=2, local_steps=8, results_dir=str(root / "results"))
    run_federation(layout.folders, config)
    metrics = json.loads((root / "results" / "metrics.json").read_text())
    return config, layout, root / "results", metrics


@pytest.mark.slow
def test_the_saved_model_gives_the_held_out_figures_the_nodes_recorded_for_the_final_round(saved_run) -> None:
    config, layout, results, metrics = saved_run
    loaded = load_model(results)
    assert loaded.card["rounds"] == {"configured": config.num_rounds, "updated": [1, 2]}
    assert loaded.card["run_config"] == config.to_mapping()
    checked = 0
    for i, folder in enumerate(layout.folders):
        if i == OPTED_OUT:
            continue
        recorded = workspace_figures(metrics, folder.name)[config.num_rounds]
        scores = evaluate_locally(loaded, folder).scores["model"]
        assert scores["loss"] == pytest.approx(recorded["eval-loss"], rel=1e-9), folder.name
        assert scores["accuracy"] == pytest.approx(recorded["eval-accuracy"], rel=1e-9), folder.name
        # Not vacuous: the initial model scored otherwise on the same split.
        assert workspace_figures(metrics, folder.name)[0]["eval-loss"] != pytest.approx(scores["loss"], rel=1e-6)
        checked += 1
    assert checked == SMALL_SPEC.num_workspaces - 1


def _files(folder: Path) -> dict[str, bytes | None]:
    names = (LEDGER_FILE, AUDIT_FILE, f"{AUDIT_FILE}.head")
    return {name: (folder / name).read_bytes() if (folder / name).exists() else None for name in names}


@pytest.mark.slow
def test_optin_evaluate_on_opted_out_workspaces_writes_nothing_to_ledger_or_audit_log(saved_run) -> None:
    _, layout, results, _ = saved_run
    never = layout.folders[OPTED_OUT]
    revoked = layout.folders[0]  # trained in the run, then its operator opted out
    write_policy(revoked, Policy(consent=False))
    assert _files(revoked)[LEDGER_FILE] is not None and not (never / SECRET_FILE).exists()
    for folder in (never, revoked):
        before = _files(folder)
        result = CliRunner().invoke(app, ["evaluate", str(results), str(folder)])
        assert result.exit_code == 0, result.output
        for predictor in ("model", "unigram", "bigram"):
            assert any(line.split()[1:2] == [predictor] for line in result.output.splitlines()), result.output
        assert _files(folder) == before, folder.name
    assert _files(never)[LEDGER_FILE] is None
    assert (never / SECRET_FILE).exists()  # the node's split key, created as the node would on first use
