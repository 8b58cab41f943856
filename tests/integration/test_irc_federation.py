"""A federated run on a small slice of the real IRC workspaces beats the initial model (skipped without the corpus)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from experiments.research.irc_experiment import IrcExperiment, print_comparison, run_irc_experiment
from federated.config import RunConfig
from federated.data import MANIFEST_FILE, irc_corpus_dir, resolve_data_root
from federated.data.paths import IRC_CORPUS
from federated.data.roster import ROSTER_FILE


@pytest.mark.slow
def test_federated_irc_run_beats_the_initial_model_and_copies_no_text(tmp_path: Path) -> None:
    root = resolve_data_root()
    if not (root / IRC_CORPUS / "data").is_dir():
        pytest.skip(f"IRC corpus not found under {root} (set OPTIN_DATA to the folder holding {IRC_CORPUS}/)")
    experiment = IrcExperiment(
        run=RunConfig(num_rounds=2, local_steps=6, sample_rate=0.05, batch_size=8, lr=0.1, noise_multiplier=1.0,
                      max_grad_norm=1.0, seed=0),
        max_lines=200, workspaces=("linux", "rust"))
    out = io.StringIO()
    comparison = run_irc_experiment(experiment, irc_corpus_dir(root), tmp_path / "results", Console(file=out))

    assert [w.name for w in comparison.workspaces] == ["linux", "rust"]
    for w in comparison.workspaces:
        assert w.held_out > 0
        assert w.federated is not None and w.initial is not None and w.federated > w.initial
    assert comparison.mean("federated") > comparison.mean("initial") + 0.05

    run_dir = comparison.run_dir
    saved = json.loads((run_dir / "comparison.json").read_text(encoding="utf-8"))
    assert saved["means"]["federated"] == pytest.approx(comparison.mean("federated"))
    for path in ("report.md", "config.toml", "federated/metrics.json", "alone/linux/metrics.json",
                 "alone/rust/metrics.json", "plots/federated.png"):
        assert (run_dir / path).is_file(), path
    # The accuracies are the nodes' own figures (their audit logs); the server saw none of them.
    federated = json.loads((run_dir / "federated/metrics.json").read_text(encoding="utf-8"))
    assert all(not m for r in federated["rounds"] for m in r["evaluated"].values())
    assert set(federated["node_local"]["workspaces"]) == {"linux", "rust"}
    for data in run_dir.rglob("data"):
        assert sorted(p.name for p in data.iterdir()) == sorted([MANIFEST_FILE, ROSTER_FILE])  # no log text
    print_comparison(comparison, Console(file=out, width=120))
    assert "weighted mean" in out.getvalue()
