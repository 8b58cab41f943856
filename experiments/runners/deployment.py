"""Flower's Deployment Engine for Optin: development certificates, the SuperLink and SuperNode command
lines, and a loopback deployment whose processes are always stopped.

This is the third of the three ways to run the same apps (DESIGN.md): a real SuperLink, one SuperNode
per workspace, TLS on every connection and SuperNode authentication on. Optin adds no transport of its
own; this module only writes the files and command lines Flower's tools take, and runs them.

What it guarantees:

- **Development certificates are marked and loopback-only.** :func:`write_dev_certificates` makes a
  throw-away CA (its private key is never written, so nothing else can ever be signed with it), a
  server certificate valid only for ``localhost``, ``127.0.0.1`` and ``::1``, and EC P-384 node key
  pairs in OpenSSH format (what ``flower-supernode --auth-supernode-private-key`` and
  ``flwr supernode register`` read). Every subject says "DEVELOPMENT"; the folder gets a
  ``DEV-ONLY.txt``; private keys are written with mode 0600. They expire after ``DEV_CERT_DAYS`` days.
- **TLS, node authentication, no runtime installs.** :func:`superlink_command` always has
  ``--enable-supernode-auth`` and the TLS files, :func:`supernode_command` always has
  ``--root-certificates`` and ``--auth-supernode-private-key``; neither ever has ``--insecure``.
  :func:`flower_environment` sets ``FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1`` (and the SuperLink
  gets ``--disable-runtime-dependency-installation``), so Flower runs the apps in this environment
  instead of ``uv sync``-ing a CUDA torch. Telemetry and the update check are off.
- **Every process is stopped, by PID.** Each Flower process gets its own ``FLWR_HOME`` and is started in
  its own session. SuperLinks and SuperNodes start ``flower-superexec`` children that outlive them, so
  stopping means: SIGTERM to each started process group, then every live process whose environment or
  command line names one of those homes (``experiments.runners.flower_simulation.stop_processes``: SIGTERM, then
  SIGKILL, one PID at a time), then a check that none is left. Linux only (process discovery reads
  ``/proc``).
- **A frozen node runs no more code.** :meth:`LoopbackDeployment.freeze_node` stops (SIGSTOP) every
  process of one node; leaving the deployment kills them where they stand (SIGKILL), so the node's
  workspace files stay exactly as they were when it froze.
- **Bounded time.** Every wait (a port opening, nodes coming online, a ``flwr`` command, a run) has a
  timeout and ends in :class:`DeploymentError` naming the log to read.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from experiments.runners.processes import (
    APP_DIR,
    COMPLETED,
    RUN_ID_PATTERN,
    STOP_GRACE_S,
    find_processes,
    free_ports,
    log_tail,
    stop_processes,
    toml_table,
)
from clients.node_limits import MAX_LOCAL_STEPS_KEY, MAX_SEQ_LEN_KEY, NodeLimits
from federated.config import RunConfig
from federated.errors import ConfigError, OptinError

log = logging.getLogger("optin.deploy")

DEV_CERT_DAYS = 30
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
"""The only names the development server certificate is valid for."""
CA_FILE, SERVER_CERT_FILE, SERVER_KEY_FILE, NODES_FOLDER = "ca.crt", "server.pem", "server.key", "nodes"
DEV_NOTICE = """DEVELOPMENT ONLY - made by `optin server dev-certs` for a federation on this machine.
The certificates are valid for localhost, 127.0.0.1 and ::1 only and expire after {days} days.
The CA's private key was never written: nothing else can be signed with this CA.
Do not use these files across machines: there, each workspace operator makes their own node key
(ssh-keygen -t ecdsa -b 384 -N "" -f node) and the federation operator uses a real CA.
"""
CONNECTION = "optin-deploy"
"""Name of the SuperLink connection in the private Flower config of a :class:`LoopbackDeployment`."""
FLWR_TIMEOUT_S = 60.0
START_TIMEOUT_S = 60.0
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


class DeploymentError(OptinError):
    """A Flower process of the deployment failed, timed out, or could not be stopped."""


@dataclass(frozen=True)
class ServerCertificates:
    """The SuperLink's TLS files and the CA certificate every client needs to trust it."""

    ca_cert: Path
    server_cert: Path
    server_key: Path

    @classmethod
    def in_folder(cls, folder: Path) -> ServerCertificates:
        """The files ``optin server dev-certs`` wrote to ``folder``; ``ConfigError`` if one is missing."""
        certs = cls(folder / CA_FILE, folder / SERVER_CERT_FILE, folder / SERVER_KEY_FILE)
        for path in (certs.ca_cert, certs.server_cert, certs.server_key):
            if not path.is_file():
                raise ConfigError(f"{path}: no such file (expected the output of `optin server dev-certs`)")
        return certs


@dataclass(frozen=True)
class NodeKey:
    """One SuperNode's authentication key pair (OpenSSH format, EC P-384)."""

    name: str
    private_key: Path
    public_key: Path


def write_dev_certificates(folder: Path, node_names: Sequence[str] = (), *,
                           force: bool = False) -> tuple[ServerCertificates, list[NodeKey]]:
    """A development CA, a loopback server certificate and one key pair per node name, in ``folder``.

    Refuses (``ConfigError``) to overwrite existing files unless ``force``, and node names that are not
    ``[A-Za-z0-9][A-Za-z0-9_-]*`` (at most 64 characters) or repeat.
    """
    bad = [n for n in node_names if not _NAME.fullmatch(n)]
    if bad or len(set(node_names)) != len(node_names):
        raise ConfigError(f"node names: expected distinct names of letters, digits, '-' and '_', "
                          f"got {list(node_names)}")
    certs = ServerCertificates(folder / CA_FILE, folder / SERVER_CERT_FILE, folder / SERVER_KEY_FILE)
    nodes = [NodeKey(n, folder / NODES_FOLDER / f"{n}.key", folder / NODES_FOLDER / f"{n}.pub") for n in node_names]
    targets = [certs.ca_cert, certs.server_cert, certs.server_key] + [p for k in nodes
                                                                       for p in (k.private_key, k.public_key)]
    existing = [str(p) for p in targets if p.exists()]
    if existing and not force:
        raise ConfigError(f"{folder}: would overwrite {', '.join(existing)} (use --force to replace them)")
    (folder / NODES_FOLDER).mkdir(parents=True, exist_ok=True)

    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = _name("Optin DEVELOPMENT CA (loopback only, do not deploy)")
    ca = (_builder(ca_name, ca_name, ca_key.public_key(), now)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA384()))
    server_key = ec.generate_private_key(ec.SECP384R1())
    alt_names = [x509.DNSName(n) if n == "localhost" else x509.IPAddress(ipaddress.ip_address(n))
                 for n in LOOPBACK_NAMES]
    server = (_builder(_name("localhost (Optin DEVELOPMENT server, loopback only)"), ca_name,
                       server_key.public_key(), now)
              .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
              .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
              .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
              .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
              .sign(ca_key, hashes.SHA384()))
    _write(certs.ca_cert, ca.public_bytes(serialization.Encoding.PEM))
    _write(certs.server_cert, server.public_bytes(serialization.Encoding.PEM))
    _write(certs.server_key, server_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()), secret=True)
    for node in nodes:
        write_node_key(node)
    (folder / "DEV-ONLY.txt").write_text(DEV_NOTICE.format(days=DEV_CERT_DAYS), encoding="utf-8")
    log.info("wrote development certificates (loopback only) and %d node key pair(s) to %s", len(nodes), folder)
    return certs, nodes


def write_node_key(node: NodeKey) -> None:
    """A fresh EC P-384 key pair: private key (OpenSSH, mode 0600) and public key (one OpenSSH line)."""
    key = ec.generate_private_key(ec.SECP384R1())
    node.private_key.parent.mkdir(parents=True, exist_ok=True)
    _write(node.private_key, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                               serialization.NoEncryption()), secret=True)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    _write(node.public_key, public + f" optin-node-{node.name}\n".encode())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Optin development"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey,
             now: dt.datetime) -> x509.CertificateBuilder:
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=DEV_CERT_DAYS))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False))


def _write(path: Path, data: bytes, secret: bool = False) -> None:
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if secret else 0o644)
    with os.fdopen(descriptor, "wb") as f:
        f.write(data)


def superlink_command(certs: ServerCertificates, database: Path, *, host: str = "127.0.0.1",
                      port: int = 8000) -> list[str]:
    """``flower-superlink`` with TLS, SuperNode authentication, a file database and no runtime installs.

    One port serves the Fleet API (SuperNodes), the Control API (``flwr``) and the ServerApp's runtime API.
    """
    return [_flower_bin("flower-superlink"), "--ssl-ca-certfile", str(certs.ca_cert),
            "--ssl-certfile", str(certs.server_cert), "--ssl-keyfile", str(certs.server_key),
            "--enable-supernode-auth", "--disable-runtime-dependency-installation",
            "--database", str(database), "--host", host, "--port", str(port)]


RDP_CURVES_DIR = "rdp-curves"
"""In a node's Flower home: the accountant's RDP curves, kept between messages (``federated.privacy.rdp_curves``)."""
SUPEREXEC_SECRET_FILE = "superexec.secret"
"""In a node's Flower home: the secret its SuperNode and executor share, so only the executor can claim tasks."""


def supernode_command(workspace: Path, superlink: str, root_certificates: Path, auth_key: Path, *,
                      home: Path, port: int = 9094, max_wait_time: float | None = None,
                      limits: NodeLimits = NodeLimits()) -> list[str]:
    """``flower-supernode`` serving one workspace folder over TLS, authenticated with ``auth_key``.

    It runs with ``--isolation process``: it starts no ClientApp itself, and the node's executor
    (``executor_command``) answers each message with Optin's installed ClientApp, never the run's FAB
    (``clients.node_executor``). The ClientApp finds the workspace (policy, data, ledger, audit log) in the
    node config key ``workspace``, and what it accepts from a server in ``max-seq-len`` and
    ``max-local-steps`` (``clients.node_limits``). ``port`` is the node's local runtime API (loopback),
    where only the holder of ``home``'s SuperExec secret may claim tasks. ``max_wait_time`` bounds how long
    the node keeps trying to reach the SuperLink (``None``: forever).
    """
    node_config = (f"workspace={json.dumps(str(workspace.resolve()))} {MAX_SEQ_LEN_KEY}={limits.max_seq_len} "
                   f"{MAX_LOCAL_STEPS_KEY}={limits.max_local_steps}")
    command = [_flower_bin("flower-supernode"), "--superlink", superlink,
               "--root-certificates", str(root_certificates), "--auth-supernode-private-key", str(auth_key),
               "--node-config", node_config, "--isolation", "process",
               "--superexec-auth-secret-file", str(home / SUPEREXEC_SECRET_FILE),
               "--host", "127.0.0.1", "--port", str(port)]
    if max_wait_time is not None:
        command += ["--max-wait-time", str(max_wait_time)]
    return command


def executor_command(home: Path, port: int = 9094) -> list[str]:
    """The node's executor (``clients.node_executor``) for the SuperNode whose runtime API is on ``port``."""
    return [sys.executable, "-m", "clients.node_executor", "--runtime-api-address", f"127.0.0.1:{port}",
            "--secret-file", str(home / SUPEREXEC_SECRET_FILE), "--curves-dir", str(home / RDP_CURVES_DIR)]


def write_superexec_secret(home: Path) -> Path:
    """A fresh 32-byte secret in ``home`` (mode 0600), replacing any earlier one: a node's SuperNode and executor
    read it when they start."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / SUPEREXEC_SECRET_FILE
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(secrets.token_hex(32).encode())
    return path


def flower_environment(home: Path) -> dict[str, str]:
    """This environment, with ``FLWR_HOME=home``, no runtime installs, no telemetry, and this venv first on PATH.

    Flower starts ``flower-superexec`` and ``flwr-clientapp``/``flwr-serverapp`` by name: they must be this
    environment's.
    """
    env = dict(os.environ)
    env.update({
        "FLWR_HOME": str(home),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
    })
    return env


ACTIVATION_REFUSED = b"[code: 2004]"
"""What a SuperNode prints when the SuperLink refuses to activate it: its key is not registered, or the SuperLink
still lists it online (its last session ended without signing off: killed, crashed, or a timed-out activation
retried). Flower 1.42 prints the same for both."""
RESTART_EVERY_S = 10.0
RESTART_FOR_S = 180.0  # the SuperLink lists a silent node online for 2 x its 30 s heartbeat interval at most


def run_in_foreground(commands: Sequence[list[str]], home: Path, retry_for: float = RESTART_FOR_S) -> int:
    """Run Flower processes (a SuperLink; or a SuperNode and its executor) until one exits or this process is
    interrupted (Ctrl-C, SIGTERM).

    The first command's output is passed through to this process's: if it exits because the SuperLink refused
    to activate it (``ACTIVATION_REFUSED``), all of them are started again every ``RESTART_EVERY_S`` s for up to
    ``retry_for`` s, which lets in a node the SuperLink still listed online once it has marked it offline.
    Returns the exit code of the first to exit (130 when interrupted). Whatever happens, all of them and every
    process they started (found by ``home``) are stopped before this returns; ``DeploymentError`` if one
    survives.
    """
    home.mkdir(parents=True, exist_ok=True)
    if running := find_processes(home):
        raise DeploymentError(f"{home}: Flower processes {running} are already running with this home; stop them first")
    previous = signal.signal(signal.SIGTERM, _interrupt)
    processes: list[subprocess.Popen[bytes]] = []
    give_up_at = time.monotonic() + retry_for
    try:
        while True:
            first = subprocess.Popen(commands[0], env=flower_environment(home), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
            processes = [first]
            relay = _Relay(first)
            for command in commands[1:]:
                processes.append(subprocess.Popen(command, env=flower_environment(home), stdin=subprocess.DEVNULL,
                                                  start_new_session=True))
            while all(process.poll() is None for process in processes):
                time.sleep(0.2)
            if first.poll() is not None:  # its last lines, and whether it was refused (the executor may exit first)
                relay.join(timeout=10)
            if not (first.returncode and relay.refused and time.monotonic() < give_up_at):
                return next(process.returncode for process in processes if process.returncode is not None)
            stop_all(processes, [home])
            print(f"the SuperLink refused to activate this node: it still lists it online (its last session did not "
                  f"sign off: it clears within a minute), or its key is not registered (flwr supernode register); "
                  f"trying again in {RESTART_EVERY_S:.0f} s, for up to {give_up_at - time.monotonic():.0f} s more",
                  flush=True)
            time.sleep(RESTART_EVERY_S)
    except KeyboardInterrupt:
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        stop_all(processes, [home])


class _Relay(threading.Thread):
    """Copies a process's output to this process's stdout as it comes; notes whether it said
    ``ACTIVATION_REFUSED``."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        super().__init__(daemon=True)
        self.process = process
        self.refused = False
        self.start()

    def run(self) -> None:
        assert self.process.stdout is not None
        out = sys.stdout.buffer
        for line in self.process.stdout:
            self.refused = self.refused or ACTIVATION_REFUSED in line
            out.write(line)
            out.flush()


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _flower_bin(name: str) -> str:
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if found is None:
        raise DeploymentError(f"{name}: command not found next to this interpreter nor on PATH (install flwr)")
    return found


@dataclass
class _Process:
    name: str
    popen: subprocess.Popen[bytes]
    home: Path
    log: Path


@dataclass
class RunOutcome:
    """A finished ``flwr run``: Flower's run id, the submit-to-finish time and the results folder."""

    run_id: int
    seconds: float
    results: Path


@dataclass(frozen=True)
class FlowerCli:
    """The federation operator's ``flwr`` command line, with a private Flower home.

    ``home/config.toml`` holds one connection, ``CONNECTION``: the SuperLink at ``address``, trusted through
    ``ca_cert`` (TLS; never ``insecure``). Every command is bounded by a timeout.
    """

    home: Path
    address: str
    ca_cert: Path

    @classmethod
    def connect(cls, home: Path, address: str, ca_cert: Path) -> FlowerCli:
        """Write the Flower config of ``home`` (replacing it) and return the CLI that uses it."""
        home.mkdir(parents=True, exist_ok=True)
        (home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\naddress = "{address}"\n'
            f'root-certificates = {json.dumps(str(ca_cert.resolve()))}\n', encoding="utf-8")
        return cls(home, address, ca_cert)

    def register(self, public_key: Path, name: str) -> int:
        """Put a node's public key on the SuperLink's list of allowed nodes; returns the node's id."""
        return int(self.json("supernode", "register", str(public_key.resolve()), CONNECTION, "--name", name)["node-id"])

    def online(self) -> set[int]:
        """Ids of the registered nodes the SuperLink lists as online."""
        nodes = self.json("supernode", "list", CONNECTION)["nodes"]
        return {int(n["node-id"]) for n in nodes if n["status"] == "online"}

    def wait_online(self, node_ids: Sequence[int], timeout: float = START_TIMEOUT_S) -> None:
        """Wait until every one of ``node_ids`` is online; ``DeploymentError`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not set(node_ids) <= (online := self.online()):
            if time.monotonic() > deadline:
                raise DeploymentError(f"nodes {sorted(set(node_ids) - online)} not online after {timeout:.0f} s")
            time.sleep(1.0)

    def run(self, config: RunConfig, log_path: Path, *, timeout: float = 600.0, app_dir: Path = APP_DIR) -> RunOutcome:
        """``flwr run <app_dir> <connection> --run-config ... --stream``; returns when the run completed.

        ``config.results_dir`` must be set (made absolute); the streamed output goes to ``log_path``. Raises
        ``DeploymentError`` unless Flower reports ``finished:completed`` and ``metrics.json`` was written,
        within ``timeout`` seconds (``flwr run`` itself exits 0 even when the run failed).
        """
        if not config.results_dir:
            raise ConfigError("results-dir: expected a folder for metrics.json, got ''")
        results = Path(config.results_dir).resolve()
        results.mkdir(parents=True, exist_ok=True)
        (results / "metrics.json").unlink(missing_ok=True)
        overrides = self.home / "run-config.toml"
        overrides.write_text(toml_table(replace(config, results_dir=str(results)).to_mapping()), encoding="utf-8")
        started = time.monotonic()
        with log_path.open("wb") as out:
            try:
                subprocess.run([_flower_bin("flwr"), "run", str(app_dir), CONNECTION, "--run-config", str(overrides),
                                "--stream"], cwd=app_dir, env=flower_environment(self.home),
                               stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, timeout=timeout,
                               check=True)
            except subprocess.TimeoutExpired:
                raise DeploymentError(f"flwr run: no result after {timeout:.0f} s; log {log_path}"
                                      f"{log_tail(log_path)}") from None
            except subprocess.CalledProcessError as exc:
                raise DeploymentError(f"flwr run exited with code {exc.returncode}; log {log_path}"
                                      f"{log_tail(log_path)}") from None
        seconds = time.monotonic() - started
        match = RUN_ID_PATTERN.search(log_path.read_text(encoding="utf-8", errors="replace"))
        if match is None:
            raise DeploymentError(f"flwr run: no run id in its output; log {log_path}{log_tail(log_path)}")
        run = self.json("ls", CONNECTION, "--run-id", match.group(1))["runs"][0]
        if run["status"] != COMPLETED:
            raise DeploymentError(f"flwr run {match.group(1)}: status {run['status']!r} "
                                  f"({run.get('status-details', '')}); log {log_path}{log_tail(log_path)}")
        if not (results / "metrics.json").is_file():
            raise DeploymentError(f"flwr run {match.group(1)} completed but wrote no {results / 'metrics.json'}")
        log.info("flwr run %s: %s in %.1f s; results in %s", match.group(1), COMPLETED, seconds, results)
        return RunOutcome(int(match.group(1)), seconds, results)

    def json(self, *args: str, timeout: float = FLWR_TIMEOUT_S) -> dict[str, Any]:
        """``flwr <args> --format json``: its answer; ``DeploymentError`` unless it succeeded in time."""
        try:
            done = subprocess.run([_flower_bin("flwr"), *args, "--format", "json"], env=flower_environment(self.home),
                                  capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise DeploymentError(f"flwr {' '.join(args)}: no answer in {timeout:.0f} s") from None
        try:
            answer = json.loads(done.stdout[done.stdout.find("{"):])
        except ValueError:
            answer = {}
        if done.returncode != 0 or not isinstance(answer, dict) or not answer.get("success", False):
            raise DeploymentError(f"flwr {' '.join(args)} failed (code {done.returncode}): "
                                  f"{(done.stdout + done.stderr).strip()[-800:]}")
        return answer


@dataclass
class LoopbackDeployment:
    """A SuperLink and SuperNodes on 127.0.0.1 with TLS and node authentication, under ``root``.

    Use as a context manager: leaving it (normally or by an exception) stops every process by PID and
    raises ``DeploymentError`` if one survives. ``root`` gets one ``FLWR_HOME`` per process
    (``superlink/``, ``nodes/<name>/``, ``cli/``) and ``logs/``; it is kept for inspection.
    ``cli`` (the operator's ``flwr``) exists once the SuperLink is up.
    """

    root: Path
    certs: ServerCertificates
    cli: FlowerCli | None = None
    processes: list[_Process] = field(default_factory=list)
    homes: list[Path] = field(default_factory=list)
    frozen: list[Path] = field(default_factory=list)  # Flower homes of the nodes frozen by ``freeze_node``

    def __enter__(self) -> LoopbackDeployment:
        self.root = self.root.resolve()
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def start_superlink(self, timeout: float = START_TIMEOUT_S) -> FlowerCli:
        """Start the SuperLink on a free port, wait until it accepts connections; returns the operator CLI."""
        home = self.root / "superlink"
        port = free_ports(1)[0]
        process = self._start("superlink", superlink_command(self.certs, home / "state.db", port=port), home)
        deadline = time.monotonic() + timeout
        while not _port_open(port):
            if process.popen.poll() is not None or time.monotonic() > deadline:
                raise DeploymentError(f"SuperLink did not start on 127.0.0.1:{port} within {timeout:.0f} s; "
                                      f"log {process.log}{log_tail(process.log)}")
            time.sleep(0.2)
        self.homes.append(self.root / "cli")
        self.cli = FlowerCli.connect(self.root / "cli", f"127.0.0.1:{port}", self.certs.ca_cert)
        log.info("SuperLink up on 127.0.0.1:%d (TLS, SuperNode authentication on)", port)
        return self.cli

    def start_supernode(self, node: NodeKey, workspace: Path, *, ca_cert: Path | None = None,
                        max_wait_time: float | None = None) -> subprocess.Popen[bytes]:
        """Start a SuperNode for ``workspace`` authenticated with ``node``'s key (``ca_cert``: whom it trusts)."""
        if self.cli is None:
            raise DeploymentError("start the SuperLink first")
        home = self.root / "nodes" / node.name
        port = free_ports(1)[0]
        write_superexec_secret(home)
        command = supernode_command(workspace, self.cli.address, ca_cert or self.certs.ca_cert, node.private_key,
                                    home=home, port=port, max_wait_time=max_wait_time)
        popen = self._start(f"node-{node.name}", command, home).popen
        self._start(f"executor-{node.name}", executor_command(home, port), home, exists_ok=True)
        return popen

    def freeze_node(self, name: str) -> list[int]:
        """Stop (SIGSTOP) the node started for key ``name``, and every process it started; returns their PIDs.

        First its SuperNode's process group, then every process of its Flower home (its ``flower-superexec`` and
        any ``flwr-clientapp``, which run in sessions of their own), scanning again until a scan finds no process
        that is not stopped yet (a process started just before its parent stopped is caught by the next scan).
        A frozen node keeps its connections open but sends nothing: no replies and no heartbeats, so Flower's
        SuperLink reports it unavailable once it has missed them (2 x its 30 s heartbeat interval in
        Flower 1.42). It is never resumed: :meth:`stop` kills it as it stands, so it runs no further code.
        """
        process = next((p for p in self.processes if p.name == f"node-{name}"), None)
        if process is None or process.popen.poll() is not None:
            raise DeploymentError(f"no running node {name!r} in this deployment")
        os.killpg(process.popen.pid, signal.SIGSTOP)  # started with start_new_session: group id == pid
        self.frozen.append(process.home)
        stopped: set[int] = set()
        while fresh := set(find_processes(process.home)) - stopped:
            for pid in fresh:
                try:
                    os.kill(pid, signal.SIGSTOP)
                except ProcessLookupError:  # it ended between the scan and the signal
                    pass
            stopped |= fresh
        log.info("froze node %s: pids %s", name, sorted(stopped))
        return sorted(stopped)

    def log_of(self, name: str) -> Path:
        """The output file of the process ``name`` (``superlink``, ``node-<name>``, ``flwr-run``)."""
        return self.root / "logs" / f"{name}.log"

    def stop(self) -> None:
        """Stop every process of the deployment by PID; ``DeploymentError`` if one survives.

        A frozen node's processes get SIGKILL first: stopped, they could not act on SIGTERM, and resumed, they
        would carry on with whatever they were doing when they froze.
        """
        for home in self.frozen:
            for pid in find_processes(home):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.frozen.clear()
        stop_all([p.popen for p in self.processes], self.homes)
        self.processes.clear()

    def _start(self, name: str, command: list[str], home: Path, exists_ok: bool = False) -> _Process:
        """Start ``command`` with Flower home ``home``; unless ``exists_ok`` (a second process of one node), no
        process may run with that home yet."""
        home.mkdir(parents=True, exist_ok=True)
        if not exists_ok and (running := find_processes(home)):
            raise DeploymentError(f"{home}: processes {running} of an earlier deployment are still alive")
        self.homes.append(home)
        env = flower_environment(home)
        # Every node's ClientApps share this machine's cores: torch's default threads per process then spin-wait
        # on each other (a 20-step round: 44 s with the default, 32 s with 1 thread, on 2 cores).
        env.setdefault("OMP_NUM_THREADS", "1")
        with self.log_of(name).open("wb") as out:
            popen = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        process = _Process(name, popen, home, self.log_of(name))
        self.processes.append(process)
        log.info("started %s (pid %d), log %s", name, popen.pid, process.log)
        return process


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def stop_all(popens: Sequence[subprocess.Popen[bytes]], homes: Sequence[Path]) -> None:
    """Stop processes started in their own session (``popens``) and every process of the Flower ``homes``.

    SIGTERM to each started process group, up to ``STOP_GRACE_S`` for them to exit, then ``stop_processes`` on
    each home (SIGTERM, then SIGKILL, one PID at a time) for what is left, then reap ``popens``.
    ``DeploymentError`` names any process still alive after that.

    The grace matters: Flower's processes handle the first SIGTERM and restore the default action, so a second
    one sent at once kills a SuperNode before it signs off at the SuperLink, which then lists it online for
    another minute and refuses to activate it again (code 2004).
    """
    for popen in popens:
        if popen.poll() is None:
            try:
                os.killpg(popen.pid, signal.SIGTERM)  # started with start_new_session: group id == pid
            except (ProcessLookupError, PermissionError):
                pass
    deadline = time.monotonic() + STOP_GRACE_S
    for popen in popens:
        try:
            popen.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    survivors = {str(home): stop_processes(home) for home in homes}
    for popen in popens:  # reap them (they were signalled above or by stop_processes)
        try:
            popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()
    left = {home: pids for home, pids in survivors.items() if pids}
    left.update({str(home): pids for home in homes if (pids := find_processes(home))})
    if left:
        raise DeploymentError(f"Flower processes survived SIGKILL: {left}")
