"""TLS and SuperNode authentication, through the operator commands, with real processes on 127.0.0.1.

``optin server dev-certs`` makes the certificates and keys, ``optin server superlink`` runs the SuperLink,
``flwr supernode register`` allows one node key, and ``optin node`` runs SuperNodes: the registered one
comes online; one with an unregistered key, and one that does not trust the federation's CA, are turned
away and exit. Every command is stopped with SIGTERM and must leave no process behind (checked by PID).
Every wait is bounded; about a minute on 2 cores.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from experiments.runners.deployment import CONNECTION, DeploymentError, FlowerCli, stop_all, write_dev_certificates
from experiments.runners.in_process import make_synthetic_federation
from experiments.runners.processes import find_processes, free_ports
from federated.data import SyntheticSpec

OPTIN = Path(sys.executable).parent / "optin"
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not Path("/proc").is_dir(), reason="process checks read /proc"),
              pytest.mark.skipif(not OPTIN.exists(), reason="the optin console script is not installed")]
EXIT_TIMEOUT_S = 90


@dataclass
class Link:
    root: Path
    certs: Path
    workspace: Path
    cli: FlowerCli
    member_id: int


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([str(OPTIN), *args], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _terminate(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM to the ``optin`` process alone: it must stop what it started itself."""
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=EXIT_TIMEOUT_S)


@pytest.fixture(scope="module")
def link(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Link]:
    root = tmp_path_factory.mktemp("transport")
    (workspace,) = make_synthetic_federation(root / "workspaces", SyntheticSpec(num_workspaces=1, seed=4,
                                                                                 min_messages=30, max_messages=40),
                                             opted_out=[]).folders
    certs = root / "certs"
    made = subprocess.run([str(OPTIN), "server", "dev-certs", str(certs), "--node", "member", "--node", "stranger"],
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stdout + made.stderr
    port = free_ports(1)[0]
    superlink = _start(["server", "superlink", "--certs", str(certs), "--state", str(root / "state"),
                        "--port", str(port)], root / "superlink.log")
    try:
        deadline = time.monotonic() + 60
        while not _listening(port):
            assert superlink.poll() is None and time.monotonic() < deadline, (root / "superlink.log").read_text()
            time.sleep(0.2)
        cli = FlowerCli.connect(root / "cli", f"127.0.0.1:{port}", certs / "ca.crt")
        yield Link(root, certs, workspace, cli, cli.register(certs / "nodes" / "member.pub", "member"))
        assert _terminate(superlink) == 130
        assert find_processes(root / "state" / "flwr-home") == []
    finally:
        stop_all([superlink], [root / "state" / "flwr-home"])  # a no-op unless a check above failed


def _node(link: Link, name: str, key: str, ca: Path, *extra: str) -> tuple[subprocess.Popen[bytes], Path, Path]:
    home, log = link.root / f"home-{name}", link.root / f"node-{name}.log"
    process = _start(["node", "--workspace", str(link.workspace), "--superlink", link.cli.address,
                      "--root-certificates", str(ca), "--auth-key", str(link.certs / "nodes" / f"{key}.key"),
                      "--port", str(free_ports(1)[0]), "--flwr-home", str(home), *extra], log)
    return process, home, log


def test_dev_certificates_are_marked_and_keys_private(link: Link) -> None:
    assert "DEVELOPMENT ONLY" in (link.certs / "DEV-ONLY.txt").read_text()
    for cert in ("ca.crt", "server.pem"):
        subject = x509.load_pem_x509_certificate((link.certs / cert).read_bytes()).subject.rfc4514_string()
        assert "DEVELOPMENT" in subject
    for secret in (link.certs / "server.key", link.certs / "nodes" / "member.key"):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600


def test_the_registered_node_comes_online_and_stops_cleanly(link: Link) -> None:
    process, home, log = _node(link, "member", "member", link.certs / "ca.crt")
    try:
        link.cli.wait_online([link.member_id], timeout=60)
        assert _terminate(process) == 130, log.read_text()
        assert find_processes(home) == []
    finally:
        stop_all([process], [home])


def test_a_node_stopped_with_sigterm_comes_back_online_at_once(link: Link) -> None:
    """A node restarted right after SIGTERM is not turned away: the first one signed off at the SuperLink (a node
    that did not stays listed online for a minute, and activating it again fails with Flower's code 2004)."""
    first, home, log = _node(link, "member", "member", link.certs / "ca.crt")
    try:
        link.cli.wait_online([link.member_id], timeout=60)
        assert _terminate(first) == 130, log.read_text()
        assert link.member_id not in link.cli.online()
        _start_again_until_online(link, EXIT_TIMEOUT_S)
    finally:
        stop_all([first], [home])


def test_a_node_that_was_killed_comes_back_once_the_superlink_lets_it(link: Link) -> None:
    """A SuperNode killed outright cannot sign off: the SuperLink lists it online until it misses its heartbeats
    and refuses to activate it meanwhile (Flower's code 2004). ``optin node`` started again says so and keeps
    trying until it is let in, instead of exiting."""
    first, home, log = _node(link, "member", "member", link.certs / "ca.crt")
    try:
        link.cli.wait_online([link.member_id], timeout=60)
        supernode = next(pid for pid in find_processes(home)
                         if "flower-supernode" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace"))
        os.kill(supernode, signal.SIGKILL)
        assert first.wait(timeout=EXIT_TIMEOUT_S) != 0
        assert find_processes(home) == []
        text = _start_again_until_online(link, 4 * EXIT_TIMEOUT_S)
        assert "[code: 2004]" in text and "refused to activate this node: it still lists it online" in text, text
    finally:
        stop_all([first], [home])


def _start_again_until_online(link: Link, timeout: float) -> str:
    """Start the member's node again; it must get its SuperNode id and come online within ``timeout`` s, then stop
    cleanly on SIGTERM. Returns its output."""
    again, home, log = _node(link, "member", "member", link.certs / "ca.crt")
    try:
        deadline = time.monotonic() + timeout
        while "SuperNode ID" not in log.read_text() and again.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "SuperNode ID" in log.read_text() and again.poll() is None, log.read_text()
        link.cli.wait_online([link.member_id], timeout=60)
        text = log.read_text()
        assert _terminate(again) == 130, log.read_text()
        return text
    finally:
        stop_all([again], [home])


def test_a_node_whose_key_is_not_registered_is_rejected(link: Link) -> None:
    process, home, log = _node(link, "stranger", "stranger", link.certs / "ca.crt", "--max-wait-time", "10")
    try:
        assert process.wait(timeout=EXIT_TIMEOUT_S) == 1
        assert "Failed to activate SuperNode" in log.read_text()
        assert "No SuperNode found with the given public key" in (link.root / "superlink.log").read_text()
        assert link.cli.online() <= {link.member_id}
        registered = {int(n["node-id"]) for n in link.cli.json("supernode", "list", CONNECTION)["nodes"]}
        assert registered == {link.member_id}
        assert find_processes(home) == []
    finally:
        stop_all([process], [home])


def test_a_node_that_does_not_trust_the_federation_ca_cannot_connect(link: Link) -> None:
    other, _ = write_dev_certificates(link.root / "other-ca")
    process, home, log = _node(link, "untrusting", "member", other.ca_cert, "--max-wait-time", "10")
    try:
        assert process.wait(timeout=EXIT_TIMEOUT_S) == 1
        assert "CERTIFICATE_VERIFY_FAILED" in log.read_text()
        assert find_processes(home) == []
    finally:
        stop_all([process], [home])
    with pytest.raises(DeploymentError):
        FlowerCli.connect(link.root / "cli-other", link.cli.address, other.ca_cert).online()


def test_the_tls_handshake_needs_the_federation_ca(link: Link) -> None:
    host, port = link.cli.address.split(":")
    with pytest.raises(ssl.SSLCertVerificationError):
        with socket.create_connection((host, int(port)), timeout=10) as raw:
            ssl.create_default_context().wrap_socket(raw, server_hostname=host)
    trusting = ssl.create_default_context(cafile=str(link.certs / "ca.crt"))
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with trusting.wrap_socket(raw, server_hostname=host) as tls:
            assert ("IP Address", "127.0.0.1") in tls.getpeercert()["subjectAltName"]
