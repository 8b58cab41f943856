"""The IRC experiment's TOML config: the shipped one is valid; mistakes name the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from experiments.research.irc_experiment import DEFAULT_CONFIG, Comparison, IrcExperiment, WorkspaceResult, load_experiment
from federated.config import RunConfig
from federated.errors import ConfigError


def test_shipped_config_trains_the_flagship_task_on_all_workspaces() -> None:
    experiment = load_experiment(DEFAULT_CONFIG)
    assert experiment.run.task == "nextchar"
    assert experiment.workspaces == ()
    assert experiment.max_lines is not None and experiment.max_lines > 0
    # One public Poisson rate for every workspace: small enough for the largest (~4,700 training messages)
    # to keep batches near the normalizer, large enough for the smallest (~1,500) to draw non-empty ones.
    run = experiment.run
    assert 10 <= run.sample_rate * 1500 and run.sample_rate * 4700 <= 2 * run.batch_size


@pytest.mark.parametrize(("body", "message"), [
    ("[experiment]\nmax-line = 5\n", "unknown key 'experiment.max-line'"),
    ("[experiment]\nmax-lines = '5'\n", "key 'experiment.max-lines': expected an integer >= 1 (lines read from "
                                        "each workspace's log), got '5'"),
    ("[experiment]\nworkspaces = ['ubuntu-1999']\n", "key 'experiment.workspaces': expected a list of distinct "
                                                      "workspace names from"),
    ("[experiment]\nmax-epsilon = 0\n", "key 'experiment.max-epsilon': expected a number > 0 (each policy's budget), "
                                         "got 0"),
    ("[run]\nnum-round = 3\n", "unknown key 'num-round'"),
    ("[run]\nresults-dir = 'x'\n", "key 'run.results-dir': expected no value (the runner sets it), got 'x'"),
    ("[runs]\n", "unknown key 'runs'; expected one of ['experiment', 'run']"),
    ("[run\n", "cannot be read as TOML"),
])
def test_mistakes_name_the_file_and_key(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "exp.toml"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    assert str(path) in str(info.value) and message in str(info.value)


def test_means_use_workspaces_with_all_three_numbers() -> None:
    comparison = Comparison(Path("run"), (
        WorkspaceResult("a", 100, 0.01, 0.30, 0.20),
        WorkspaceResult("b", 300, 0.03, 0.50, 0.40),
        WorkspaceResult("c", 50, 0.02, None, 0.10),
    ))
    assert comparison.mean("federated") == pytest.approx(0.40)
    assert comparison.mean("alone", weighted=True) == pytest.approx((0.2 * 100 + 0.4 * 300) / 400)
    assert comparison.to_json()["federated-beats-alone"] is True
    assert IrcExperiment(RunConfig()).max_lines is None
