"""``optin data stats`` and ``optin data irc``: tables, one-line errors, --skip-bad-files, the data root."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from experiments.cli.app import app
from federated.data import DATA_ENV, SyntheticSpec, generate_federation
from tests.unit.test_irc_corpus import write_mini_corpus

runner = CliRunner()


def _invoke(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, list(args), env={"COLUMNS": "200", **(env or {})})


def test_stats_prints_one_row_per_workspace_and_a_total(tmp_path: Path) -> None:
    generate_federation(tmp_path / "ws", SyntheticSpec(num_workspaces=2, min_messages=30, max_messages=30))
    result = _invoke("data", "stats", str(tmp_path / "ws"))
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if line.startswith("│")]
    assert [r.split("│")[1].strip() for r in rows] == ["ws00-cooking", "ws01-devops", "total"]
    assert [r.split("│")[3].strip() for r in rows] == ["30", "30", "60"]  # messages
    assert all(r.split("│")[2].strip() == "slack" for r in rows[:2])


def test_stats_error_is_one_line_and_exit_1(tmp_path: Path) -> None:
    result = _invoke("data", "stats", str(tmp_path / "missing"))
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [f"error: {tmp_path / 'missing'}: not a folder"]


def test_skip_bad_files_flag_lists_what_was_skipped(tmp_path: Path) -> None:
    data = tmp_path / "team" / "data"
    data.mkdir(parents=True)
    (data / "a.jsonl").write_text(json.dumps({"ts": 1, "user": "u", "channel": "c", "text": "hello"}) + "\n",
                                  encoding="utf-8")
    (data / "b.jsonl").write_text("{broken\n", encoding="utf-8")
    failed = _invoke("data", "stats", str(tmp_path / "team"))
    assert failed.exit_code == 1 and "b.jsonl: line 1: malformed JSON" in failed.output
    result = _invoke("data", "stats", str(tmp_path / "team"), "--skip-bad-files")
    assert result.exit_code == 0, result.output
    assert f"team: not read: {data / 'b.jsonl'}: {data / 'b.jsonl'}: line 1: malformed JSON" in result.output
    assert "(+1 files)" in result.output


@pytest.mark.parametrize("via", ["option", "env"])
def test_irc_builds_workspaces_from_the_data_root(tmp_path: Path, via: str) -> None:
    write_mini_corpus(tmp_path / "shared" / "irc-disentanglement")
    args = ["data", "irc", "--out", str(tmp_path / "out")]
    env = {DATA_ENV: str(tmp_path / "shared")} if via == "env" else {DATA_ENV: str(tmp_path / "elsewhere")}
    if via == "option":
        args += ["--data", str(tmp_path / "shared")]
    result = _invoke(*args, env=env)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["linux", "rust", "ubuntu-2006", "ubuntu-2007",
                                                                    "ubuntu-2010-2011"]
    assert "5 workspaces in" in result.output and "ubuntu-2006" in result.output


def test_irc_without_corpus_is_a_one_line_error(tmp_path: Path) -> None:
    result = _invoke("data", "irc", "--out", str(tmp_path / "out"), "--data", str(tmp_path / "empty"))
    assert result.exit_code == 1
    assert len(result.output.strip().splitlines()) == 1 and "IRC corpus not found" in result.output


@pytest.mark.parametrize("command", ["stats", "irc", "synthetic"])
def test_help_has_an_example(command: str) -> None:
    result = _invoke("data", command, "--help")
    assert result.exit_code == 0 and f"Example: optin data {command}" in result.output


def test_synthetic_makes_fresh_workspaces_without_consent_ledger_or_log(tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "synthetic", "--out", str(tmp_path / "try"), "--workspaces", "2"])
    assert result.exit_code == 0, result.output
    folders = sorted((tmp_path / "try").iterdir())
    assert len(folders) == 2 and all(sorted(p.name for p in f.iterdir()) == ["data"] for f in folders)
    assert "consent is off" in result.output
    again = runner.invoke(app, ["data", "synthetic", "--out", str(tmp_path / "try")])
    assert again.exit_code == 1 and "refusing to write" in again.output  # never over an existing workspace


def test_stats_reads_a_folder_of_raw_exports_and_lists_skip_reasons(tmp_path: Path) -> None:
    """Raw exports (no data/ folder around them) side by side, as a researcher unpacks them."""
    import shutil

    generate_federation(tmp_path / "ws", SyntheticSpec(num_workspaces=2, min_messages=30, max_messages=30))
    for folder in sorted((tmp_path / "ws").iterdir()):
        shutil.copytree(folder / "data", tmp_path / "raw" / folder.name)
    day = next((tmp_path / "raw" / "ws00-cooking").glob("*/*.json"))
    entries = json.loads(day.read_text())
    entries.append({"type": "message", "subtype": "channel_join", "user": "U1", "text": "joined", "ts": "1.0"})
    day.write_text(json.dumps(entries))
    result = _invoke("data", "stats", str(tmp_path / "raw"))
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if line.startswith("│")]
    assert [r.split("│")[1].strip() for r in rows] == ["ws00-cooking", "ws01-devops", "total"]
    assert "ws00-cooking: skipped entries: subtype:channel_join 1" in result.output
