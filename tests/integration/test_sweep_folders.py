"""A sweep over a folder of raw Slack exports, one held opted out, in process: the user's folder is only read,
the opted-out workspace is never trained nor evaluated and spends nothing, the others are trained at the
target ε (each workspace calibrated from what its node runs, its training-split size recorded), at the
message and the member level; and the new keys' mistakes name the file, the key, the value and the expectation."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest

from experiments.research.sweep import load_and_run
from experiments.research.sweep_cells import build_dataset, prepare_cell
from experiments.research.sweep_config import FolderDataset, load_sweep
from federated.audit import AUDIT_FILE, read_entries
from federated.data import SyntheticSpec
from federated.data.synthetic import generate_workspace, write_slack_export
from federated.errors import ConfigError
from federated.privacy.ledger import LEDGER_FILE, Ledger

NAMES = ("acme", "globex", "initech")
SWEEP = """
name = "slack"
target-epsilons = [4.0]
seeds = [0]
dp-modes = ["local"]
privacy-units = ["message", "member"]
max-messages-per-member = 4
delta = 1e-4

[run]
num-rounds = 2
local-steps = 2
sample-rate = 0.25
batch-size = 16
lr = 0.1

[[datasets]]
kind = "folder"
name = "exports"
path = "exports"
opted-out = ["initech"]
"""
CELLS = ("exports-local-eps4-seed0", "exports-local-member-eps4-seed0")


def slack_exports(root: Path) -> Path:
    """Three raw Slack admin exports of different sizes (users.json, channels.json, <channel>/<day>.json)."""
    spec = SyntheticSpec(num_workspaces=3, seed=7, min_messages=70, max_messages=160)
    for index, name in enumerate(NAMES):
        write_slack_export(generate_workspace(index, spec), root / "exports" / name)
    return root / "exports"


def tree_digest(root: Path) -> str:
    """Every path under ``root`` with its content (files) or kind (folders), hashed."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes() if path.is_file() else b"<dir>")
    return digest.hexdigest()


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    root = tmp_path_factory.mktemp("folders")
    exports = slack_exports(root)
    before = tree_digest(exports)
    config = root / "sweep.toml"
    config.write_text(SWEEP, encoding="utf-8")
    outcome = load_and_run(config, root / "results", None)
    assert sorted(outcome.ran) == sorted(CELLS)
    return outcome.run_dir, before, tree_digest(exports)


def test_the_source_folder_is_never_written(swept: tuple[Path, str, str]) -> None:
    _, before, after = swept
    assert before == after


@pytest.mark.parametrize("cell", CELLS)
def test_the_opted_out_workspace_refuses_everything_and_spends_nothing(swept: tuple[Path, str, str],
                                                                       cell: str) -> None:
    run_dir = swept[0]
    copy = run_dir / "cells" / cell / "workspaces" / "initech"
    assert (copy / "data" / "users.json").is_file()  # the raw export, copied into the cell's workspace folder
    entries = list(read_entries(copy / AUDIT_FILE))
    kinds = {e["kind"] for e in entries}
    assert "consent" in kinds and kinds <= {"consent", "refusal"}  # no release, no evaluation
    assert not any(e.get("consent") for e in entries)
    if (copy / LEDGER_FILE).exists():
        with Ledger(copy / LEDGER_FILE) as ledger:
            assert ledger.releases() == []
    metrics = json.loads((run_dir / "cells" / cell / "metrics.json").read_text())
    assert metrics["opted_out"] == ["initech"]
    assert sorted(w["name"] for w in metrics["workspaces"]) == ["acme", "globex"]
    node_local = json.loads((run_dir / "cells" / cell / "run" / "metrics.json").read_text())["node_local"]
    assert node_local["workspaces"]["initech"]["rounds"] == {} and node_local["workspaces"]["acme"]["rounds"]
    assert all(r["evaluating"] == 2 for r in node_local["rounds"])  # of three nodes, the two that consent
    assert all(r["trained"] == 2 for r in metrics["rounds"][1:])


@pytest.mark.parametrize("cell, unit", zip(CELLS, ("message", "member")))
def test_each_workspace_lands_at_the_target_with_the_noise_the_run_asked_for(swept: tuple[Path, str, str],
                                                                               cell: str, unit: str) -> None:
    run_dir = swept[0]
    metrics = json.loads((run_dir / "cells" / cell / "metrics.json").read_text())
    noise = metrics["run_config"]["noise-multiplier"]
    assert noise > 0 and metrics["local_noise"]["noise_multiplier"] == noise
    sizes = set()
    for w in metrics["workspaces"]:
        with Ledger(run_dir / "cells" / cell / "workspaces" / w["name"] / LEDGER_FILE) as ledger:
            releases = ledger.releases()
        assert len(releases) == 2 and {r.privacy_unit for r in releases} == {unit}
        # What ran is what the run config asked for and the policy floor held: one z, recorded by the node.
        assert {r.noise_multiplier for r in releases} == {noise} and w["noise_multipliers_run"] == [noise]
        assert w["noise_multiplier"] == noise and w["privacy_unit"] == unit
        assert 0.95 * 4.0 <= w["epsilon"] <= 4.0 and w["epsilon"] == releases[-1].epsilon_total
        assert w["training_samples"] > 0
        sizes.add(w["training_samples"])
    assert len(sizes) == 2  # workspaces of different sizes, each at the target
    with (run_dir / "results.csv").open() as f:
        rows = {r["cell"]: r for r in csv.DictReader(f)}
    assert rows[cell]["privacy_unit"] == unit and rows[cell]["opted_out"] == "initech"
    assert "held opted out: initech" in (run_dir / "report.md").read_text()


def test_member_level_counts_members_not_messages(swept: tuple[Path, str, str]) -> None:
    run_dir = swept[0]
    message, member = (json.loads((run_dir / "cells" / c / "metrics.json").read_text()) for c in CELLS)
    for w_message, w_member in zip(message["workspaces"], member["workspaces"], strict=True):
        assert w_member["training_samples"] < w_message["training_samples"]


def write_sweep(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sweep.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_folder_of_workspace_folders_is_read_too(tmp_path: Path) -> None:
    exports = slack_exports(tmp_path)
    for name in NAMES:  # workspace folders: data/ beside a policy, as an operator keeps them
        (exports / name).rename(tmp_path / name)
        (exports / name).mkdir()
        (tmp_path / name).rename(exports / name / "data")
        (exports / name / "policy.toml").write_text("consent = true\n", encoding="utf-8")
    sweep = load_sweep(write_sweep(tmp_path, SWEEP))
    (dataset,) = sweep.datasets
    assert isinstance(dataset, FolderDataset) and dataset.workspaces() == list(NAMES)
    assert dataset.opted_out == ["initech"] and sweep.privacy_units == ("message", "member")
    assert [c.id for c in sweep.cells()] == list(CELLS)


@pytest.mark.parametrize("old, new, key, value, expected", [
    ('path = "exports"', 'path = "nowhere"', "datasets[0].path", "'nowhere'", "a folder of workspaces"),
    ('opted-out = ["initech"]', 'opted-out = ["umbrella"]', "datasets[0].opted-out", "['umbrella']",
     "['acme', 'globex', 'initech']"),
    ('opted-out = ["initech"]', 'opted-out = ["acme", "globex", "initech"]', "datasets[0].opted-out", None,
     "at least one workspace must stay in"),
    ('opted-out = ["initech"]', 'opted-out = "initech"', "datasets[0].opted-out", "'initech'",
     "a list of distinct workspace names"),
    ('privacy-units = ["message", "member"]', 'privacy-units = ["person"]', "privacy-units", "['person']",
     "privacy units from ['message', 'member']"),
    ("max-messages-per-member = 4", "max-messages-per-member = 0", "max-messages-per-member", "0",
     "an integer >= 1"),
    ('kind = "folder"', 'kind = "slack"', "datasets[0].kind", "'slack'", "'folder', 'synthetic' or 'irc'"),
    ('path = "exports"', 'path = "exports"\npartitions = ["x"]', "datasets[0].partitions", None,
     "expected one of"),
])
def test_new_keys_name_file_key_value_and_expectation(tmp_path: Path, old: str, new: str, key: str,
                                                      value: str | None, expected: str) -> None:
    slack_exports(tmp_path)
    path = write_sweep(tmp_path, SWEEP.replace(old, new, 1))
    with pytest.raises(ConfigError) as info:
        load_sweep(path)
    message = str(info.value)
    assert str(path) in message and repr(key) in message and expected in message, message
    if value is not None:
        assert value in message


def test_a_sub_folder_in_no_known_layout_is_named(tmp_path: Path) -> None:
    exports = slack_exports(tmp_path)
    (exports / "notes").mkdir()
    (exports / "notes" / "readme.txt").write_text("not a workspace", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_sweep(write_sweep(tmp_path, SWEEP))
    message = str(info.value)
    assert "'datasets[0].path'" in message and "notes" in message and "unknown workspace data layout" in message


def test_opted_out_names_of_a_synthetic_dataset_are_checked_before_training(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, SWEEP.replace('kind = "folder"\nname = "exports"\npath = "exports"\n',
                                               'kind = "synthetic"\nnum-workspaces = 2\nmin-messages = 60\n'
                                               'max-messages = 80\n').replace('["initech"]', '["nobody"]'))
    with pytest.raises(ConfigError, match=r"'datasets\[0\]\.opted-out'.*\['nobody'\]"):
        load_and_run(path, tmp_path / "results", None)
    assert not list((tmp_path / "results").rglob(LEDGER_FILE))


def test_a_canary_audit_on_a_folder_plants_no_canary_in_an_opted_out_workspace(tmp_path: Path) -> None:
    slack_exports(tmp_path)
    sweep = load_sweep(write_sweep(tmp_path, SWEEP.replace('opted-out = ["initech"]', 'opted-out = ["acme"]')),
                       audit=True)
    assert sweep.audit is not None
    cell = sweep.cells()[0]
    folders = build_dataset(sweep.dataset(cell.dataset), tmp_path / "datasets" / cell.dataset)
    plan = prepare_cell(sweep, cell, folders, tmp_path / "cell")
    assert plan.canaries is not None and plan.canaries.exposure_workspace == "globex"  # index 0 of those in
    assert plan.canaries.injected("acme") == () and plan.canaries.receiver == "initech"
    acme = next(w for w in plan.workspaces if w.name == "acme")
    assert acme.opted_out and acme.canaries == 0 and acme.local is None
    assert "consent = false" in (tmp_path / "cell" / "workspaces" / "acme" / "policy.toml").read_text()


def test_the_shipped_slack_report_config_is_valid_on_a_folder_of_exports(tmp_path: Path) -> None:
    shipped = Path(__file__).parents[2] / "experiments" / "configs" / "slack_report.toml"
    config = tmp_path / "repo" / "experiments" / "configs" / shipped.name
    config.parent.mkdir(parents=True)
    config.write_text(shipped.read_text(encoding="utf-8"), encoding="utf-8")
    slack_exports(tmp_path)
    (tmp_path / "exports").rename(tmp_path / "slack-exports")
    sweep = load_sweep(config)
    assert len(sweep.cells()) == 12 and sweep.run.init_model == "irc-ubuntu-2004-2011"
    assert list(sweep.baselines) == ["alone"]


def test_the_shipped_slack_folder_config_is_valid_on_a_folder_of_exports(tmp_path: Path) -> None:
    shipped = Path(__file__).parents[2] / "experiments" / "configs" / "sweep_slack_folder.toml"
    text = shipped.read_text(encoding="utf-8")
    config = tmp_path / "repo" / "experiments" / "configs" / shipped.name
    config.parent.mkdir(parents=True)
    config.write_text(text, encoding="utf-8")
    slack_exports(tmp_path)
    (tmp_path / "exports").rename(tmp_path / "slack-exports")  # where the shipped path points, beside the repo
    sweep = load_sweep(config)
    (dataset,) = sweep.datasets
    assert dataset.workspaces() == list(NAMES) and dataset.opted_out == ["globex"]
    assert {c.privacy_unit for c in sweep.cells()} == {"message", "member"}
