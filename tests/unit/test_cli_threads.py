"""Thread defaults: ``--threads`` wins, then ``OMP_NUM_THREADS``, then the cores free; idle threads sleep."""

import os
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from experiments.cli.app import app
from experiments.cli.threads import apply_thread_defaults, free_cores


def test_threads_option_sets_torchs_threads_and_the_childrens_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        result = CliRunner().invoke(app, ["--threads", "1", "privacy", "epsilon", "--sampling-rate", "0.1",
                                          "--noise-multiplier", "1.0", "--steps", "10"])
        assert result.exit_code == 0, result.output
        assert torch.get_num_threads() == 1
        assert os.environ["OMP_NUM_THREADS"] == "1"
        assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
        assert CliRunner().invoke(app, ["--threads", "0", "privacy", "--help"]).exit_code != 0
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(("cpus", "load", "expected"), [(2, 0.0, 2), (2, 0.7, 1), (2, 10.0, 1), (16, 3.2, 13),
                                                        (4, -1.0, 4)])
def test_free_cores_is_cpu_count_minus_load_within_1_and_the_cpu_count(cpus: int, load: float, expected: int) -> None:
    assert free_cores(cpus, load) == expected


def test_a_set_omp_num_threads_is_kept_and_an_invalid_one_ignored() -> None:
    env = {"OMP_NUM_THREADS": "3", "OMP_WAIT_POLICY": "ACTIVE"}
    assert apply_thread_defaults(None, env) == 3
    assert env == {"OMP_NUM_THREADS": "3", "OMP_WAIT_POLICY": "ACTIVE"}  # the user's explicit choice stands
    env = {"OMP_NUM_THREADS": "zero"}
    chosen = apply_thread_defaults(None, env)
    assert 1 <= chosen <= (os.cpu_count() or 1) and env["OMP_NUM_THREADS"] == str(chosen)


def test_a_command_imports_torch_with_the_chosen_threads() -> None:
    """Run in a fresh process: torch reads OMP_NUM_THREADS at import, after the callback set it."""
    code = ("import sys; from experiments.cli.app import app; sys.argv = ['optin', '--threads', '1', 'privacy', "
            "'epsilon', '--sampling-rate', '0.1', '--noise-multiplier', '1', '--steps', '3']\n"
            "try:\n    app()\nexcept SystemExit:\n    pass\n"
            "import torch, os; print(torch.get_num_threads(), os.environ['OMP_WAIT_POLICY'])")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMP_")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.splitlines()[-1] == "1 PASSIVE"
