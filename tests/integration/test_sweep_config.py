"""A bad sweep file stops the sweep with one ConfigError naming the file, the key, the value and the
expectation, before any training starts (no ledger, no run folder of any cell)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from experiments.cli.app import app
from experiments.research.sweep import load_and_run
from experiments.research.sweep_config import Cell, load_sweep
from federated.data import resolve_data_root
from federated.errors import ConfigError

GOOD = """
name = "tiny"
target-epsilons = [inf, 8.0, 1.0]
seeds = [0, 1]
dp-modes = ["local", "central"]
delta = 1e-5

[run]
num-rounds = 2
local-steps = 3
sample-rate = 0.2
batch-size = 16

[[datasets]]
kind = "synthetic"
num-workspaces = 2
min-messages = 80
max-messages = 120
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sweep.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_grid_runs_no_dp_once_per_seed_and_every_finite_target_per_mode(tmp_path: Path) -> None:
    sweep = load_sweep(write(tmp_path, GOOD))
    assert sweep.cells() == [
        Cell("synthetic", "none", math.inf, 0), Cell("synthetic", "none", math.inf, 1),
        Cell("synthetic", "local", 8.0, 0), Cell("synthetic", "local", 8.0, 1),
        Cell("synthetic", "local", 1.0, 0), Cell("synthetic", "local", 1.0, 1),
        Cell("synthetic", "central", 8.0, 0), Cell("synthetic", "central", 8.0, 1),
        Cell("synthetic", "central", 1.0, 0), Cell("synthetic", "central", 1.0, 1),
    ]
    assert [c.id for c in sweep.cells()][::4] == ["synthetic-none-epsinf-seed0", "synthetic-local-eps1-seed0",
                                                   "synthetic-central-eps1-seed0"]


def test_the_shipped_configs_are_valid() -> None:
    folder = Path(__file__).parents[2] / "experiments" / "configs"
    configs = sorted([*folder.glob("sweep_*.toml"), *folder.glob("audit_*.toml"), folder / "irc_report.toml"])
    assert len(configs) >= 3
    corpus_here = (resolve_data_root() / "irc-disentanglement" / "data").is_dir()
    for path in configs:
        if 'kind = "irc"' in path.read_text(encoding="utf-8") and not corpus_here:
            continue  # needs the IRC corpus, which this machine does not have (test_sweep_irc skips too)
        if 'kind = "folder"' in path.read_text(encoding="utf-8"):
            continue  # the researcher's own folder: test_sweep_folders checks it on exports made there
        sweep = load_sweep(path)
        assert sweep.cells()
        assert (sweep.audit is not None) == path.name.startswith("audit_")


@pytest.mark.parametrize("old, new, key, value, expected", [
    ('name = "tiny"', 'name = "tiny"\ncolour = "blue"', "colour", None, "expected one of"),
    ("batch-size = 16", "batch-size = 16\nbatch = 3", "batch", None, "expected one of"),
    ('kind = "synthetic"', 'kind = "synthetic"\nworkspaces = 3', "datasets[0].workspaces", None, "expected one of"),
    ("[inf, 8.0, 1.0]", "[inf, 8.0, 0.0]", "target-epsilons", "[inf, 8.0, 0.0]", "numbers > 0"),
    ("[inf, 8.0, 1.0]", "[8.0, -1.0]", "target-epsilons", "[8.0, -1.0]", "numbers > 0"),
    ("delta = 1e-5", "delta = 1.0", "delta", "1.0", "a number in (0, 1)"),
    ('dp-modes = ["local", "central"]', 'dp-modes = ["none"]', "dp-modes", "['none']", "no DP is target-epsilons"),
    ("batch-size = 16", "batch-size = 16\nnoise-multiplier = 1.0", "run.noise-multiplier", "1.0",
     "the sweep sets it for each cell"),
    ("batch-size = 16", "batch-size = 16.5", "batch-size", "16.5", "expected int"),
    ('kind = "synthetic"', 'kind = "irc"\npath = "no/such/folder"', "datasets[0].path", "'no/such/folder'",
     "a data root holding irc-disentanglement/data"),
    ('kind = "synthetic"', 'kind = "tweets"', "datasets[0].kind", "'tweets'", "'synthetic' or 'irc'"),
    ("max-messages = 120\n", "max-messages = 120\n[audit]\ncopies = 3\n", "audit.copies", None, "expected one of"),
    ("max-messages = 120\n", 'max-messages = 120\n[audit]\ntemplate = "my pin"\n', "audit.template", "'my pin'",
     "exactly one '{}'"),
    ("max-messages = 120\n", "max-messages = 120\n[audit]\none-run-canaries = 10\nguesses = 20\n", "audit.guesses",
     "20", "an even integer from 2 to one-run-canaries (10)"),
    ("max-messages = 120\n", "max-messages = 120\n[audit]\nlength = 40\n", "audit.template", None,
     "canaries of at most seq-len = 64 bytes"),
    ("max-messages = 120\n", "max-messages = 120\n[audit]\nrepeats = [0]\n", "audit.repeats", "[0]",
     "integers >= 1"),
    ("delta = 1e-5", 'delta = 1e-5\nrun-mode = "flower-sim"\n[audit]\n', "run-mode", "'flower-sim'",
     "canaries are injected in memory"),
])
def test_bad_keys_and_values_name_file_key_value_and_expectation(tmp_path: Path, old: str, new: str, key: str,
                                                                  value: str | None, expected: str) -> None:
    text = GOOD.replace(old, new, 1)
    if 'kind = "irc"' in text:
        text = text.replace("num-workspaces = 2\nmin-messages = 80\nmax-messages = 120\n", "")
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_sweep(path)
    message = str(info.value)
    assert str(path) in message and repr(key) in message and expected in message
    if value is not None:
        assert value in message


def test_an_audit_workspace_beyond_the_dataset_stops_before_any_training(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + "\n[audit]\nworkspace = 2\n")
    with pytest.raises(ConfigError, match=r"'audit.workspace': audit workspace 2: expected an index below 2"):
        load_and_run(path, tmp_path / "results", None)
    assert not list((tmp_path / "results").glob("*/cells/*/workspaces/*/ledger.sqlite"))


def test_delta_not_below_one_over_n_stops_before_any_training(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("delta = 1e-5", "delta = 0.02").replace("[inf, 8.0, 1.0]", "[8.0]"))
    with pytest.raises(ConfigError) as info:
        load_and_run(path, tmp_path / "results", None)
    message = str(info.value)
    assert str(path) in message and "'delta'" in message and "0.02" in message and "below 1/N" in message
    assert "messages (with canaries) in workspace" in message
    assert not list((tmp_path / "results").rglob("ledger.sqlite"))
    assert not list((tmp_path / "results").rglob("run"))


def test_central_delta_must_be_below_one_over_the_number_of_workspaces(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("delta = 1e-5", "delta = 0.6").replace("[inf, 8.0, 1.0]", "[8.0]")
                 .replace('["local", "central"]', '["central"]'))
    with pytest.raises(ConfigError, match=r"below 1/N = 0\.5 \(2 workspaces: central DP protects one workspace"):
        load_and_run(path, tmp_path / "results", None)


def test_cli_prints_one_line_and_exits_1_before_creating_anything(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("[inf, 8.0, 1.0]", "[0]"))
    result = CliRunner().invoke(app, ["sweep", str(path), "--results", str(tmp_path / "results")])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "'target-epsilons'" in lines[0]
    assert not (tmp_path / "results").exists()


def test_resume_refuses_a_folder_of_another_sweep(tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "sweep.toml").write_text(GOOD.replace('"tiny"', '"other"'), encoding="utf-8")
    with pytest.raises(ConfigError, match="differs from"):
        load_and_run(write(tmp_path, GOOD), tmp_path / "results", other)
    with pytest.raises(ConfigError, match="expected a sweep results folder"):
        load_and_run(write(tmp_path, GOOD), tmp_path / "results", tmp_path / "nowhere")


def test_sweep_help_has_an_example() -> None:
    result = CliRunner().invoke(app, ["sweep", "--help"])
    assert result.exit_code == 0 and "Example: optin sweep" in result.output
    assert "With an [audit] table" in result.output  # printed as written, not eaten as Rich markup
