"""``optin --threads N`` sets torch's intra-op threads for the command that follows."""

import torch
from typer.testing import CliRunner

from experiments.cli.app import app


def test_threads_option_sets_torchs_threads_and_rejects_zero() -> None:
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        result = CliRunner().invoke(app, ["--threads", "1", "privacy", "epsilon", "--sampling-rate", "0.1",
                                          "--noise-multiplier", "1.0", "--steps", "10"])
        assert result.exit_code == 0, result.output
        assert torch.get_num_threads() == 1
        assert CliRunner().invoke(app, ["--threads", "0", "privacy", "--help"]).exit_code != 0
    finally:
        torch.set_num_threads(before)
