"""The deployment commands print the Flower command lines they run: TLS and node authentication always on.

Fast (no process is started): ``--dry-run`` and ``--help`` only. The commands themselves run for real in
``test_transport_security.py``.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from experiments.cli.app import app
from experiments.runners.deployment import write_dev_certificates

runner = CliRunner()


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    write_dev_certificates(tmp_path / "certs", ["acme"])
    return tmp_path / "certs"


def _dry_run(*args: str) -> list[str]:
    """The first command line the dry run prints."""
    return _dry_run_lines(*args)[0]


def _dry_run_lines(*args: str) -> list[list[str]]:
    result = runner.invoke(app, [*args, "--dry-run"])
    assert result.exit_code == 0, result.output
    return [shlex.split(line) for line in result.output.strip().splitlines() if not line.startswith("#")]


def _value(words: list[str], flag: str) -> str:
    return words[words.index(flag) + 1]


@pytest.mark.parametrize("command", [["node"], ["server", "dev-certs"], ["server", "superlink"]])
def test_help_has_an_example(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0 and f"Example: optin {' '.join(command)}" in result.output


def test_node_runs_a_supernode_with_tls_node_auth_and_its_workspace(certs: Path, tmp_path: Path) -> None:
    words, executor = _dry_run_lines("node", "--workspace", str(tmp_path), "--superlink", "10.0.0.5:8000",
                                     "--root-certificates", str(certs / "ca.crt"),
                                     "--auth-key", str(certs / "nodes" / "acme.key"))
    home = tmp_path.resolve() / ".flower"
    # No ClientApp from a run's app bundle: the SuperNode starts none, Optin's executor answers with the node's.
    assert _value(words, "--isolation") == "process"
    assert _value(words, "--superexec-auth-secret-file") == str(home / "superexec.secret")
    assert executor[3:] == ["-m", "clients.node_executor", "--runtime-api-address",
                            f"127.0.0.1:{_value(words, '--port')}", "--secret-file", str(home / "superexec.secret"),
                            "--curves-dir", str(home / "rdp-curves")]
    assert words[:2] == [f"FLWR_HOME={home}", "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1"]
    assert Path(words[2]).name == "flower-supernode" and "--insecure" not in words
    assert _value(words, "--superlink") == "10.0.0.5:8000"
    assert _value(words, "--root-certificates") == str((certs / "ca.crt").resolve())
    assert _value(words, "--auth-supernode-private-key") == str((certs / "nodes" / "acme.key").resolve())
    assert _value(words, "--node-config") == f'workspace="{tmp_path.resolve()}" max-seq-len=1024 max-local-steps=1000'
    assert _value(words, "--host") == "127.0.0.1"
    words = _dry_run("node", "--workspace", str(tmp_path), "--max-seq-len", "256", "--max-local-steps", "50",
                     "--root-certificates", str(certs / "ca.crt"), "--auth-key", str(certs / "nodes" / "acme.key"))
    assert _value(words, "--node-config").endswith(" max-seq-len=256 max-local-steps=50")


def test_superlink_runs_with_tls_node_auth_and_no_runtime_installs(certs: Path, tmp_path: Path) -> None:
    words = _dry_run("server", "superlink", "--certs", str(certs), "--state", str(tmp_path / "state"))
    assert Path(words[2]).name == "flower-superlink" and "--insecure" not in words
    assert {"--enable-supernode-auth", "--disable-runtime-dependency-installation"} <= set(words)
    assert _value(words, "--ssl-certfile") == str((certs / "server.pem").resolve())
    assert _value(words, "--database") == str((tmp_path / "state" / "state.db").resolve())


def test_user_mistakes_are_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["server", "superlink", "--certs", str(tmp_path), "--dry-run"])
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "ca.crt" in result.output
    result = runner.invoke(app, ["node", "--workspace", str(tmp_path / "missing"), "--root-certificates",
                                 str(tmp_path), "--auth-key", str(tmp_path)])
    assert result.exit_code == 1 and result.output.startswith("error:")
