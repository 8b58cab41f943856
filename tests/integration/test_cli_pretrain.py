"""``optin pretrain`` on the real corpus: writes a loadable checkpoint naming its files, and never overwrites one."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from experiments.cli.app import app
from federated.data import resolve_data_root
from federated.tasks import get_task
from federated.tasks.checkpoint import initial_state_dict, load_checkpoint
from federated.tasks.pretrain import EVALUATION_PARTITIONS, PRETRAIN_PARTITIONS, pretraining_overlap


@pytest.mark.slow
def test_pretrain_writes_a_checkpoint_a_run_can_start_from(tmp_path: Path) -> None:
    root = resolve_data_root()
    if not (root / "irc-disentanglement" / "data").is_dir():
        pytest.skip(f"IRC corpus not found under {root}")
    out = tmp_path / "pretrained.safetensors"
    result = CliRunner().invoke(app, ["pretrain", "--out", str(out), "--steps", "2", "--data", str(root)])
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == f"Wrote {out}"
    _, metadata = load_checkpoint(out)
    assert metadata["partitions"] == list(PRETRAIN_PARTITIONS) and metadata["steps"] == 2
    assert pretraining_overlap(metadata, root / "irc-disentanglement", EVALUATION_PARTITIONS) == []
    initial_state_dict(get_task("nextchar"), 0, str(out))  # fits the default task's model
    again = CliRunner().invoke(app, ["pretrain", "--out", str(out), "--steps", "1", "--data", str(root)])
    assert again.exit_code == 1 and "refusing to overwrite" in again.output
