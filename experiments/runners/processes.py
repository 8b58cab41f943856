"""The processes Flower starts, found and stopped as a group; loopback ports; the small file helpers the
Flower simulation and the deployment runners share.

Flower's SuperLink and SuperNode start ``flower-superexec`` children that survive a kill of their parent,
so a run's processes are found by their ``FLWR_HOME`` (inherited by everything ``flwr`` starts) and stopped
one PID at a time: SIGTERM, a grace period, then SIGKILL. Linux only (reads ``/proc``).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import tomli_w

log = logging.getLogger("optin")

APP_DIR = Path(__file__).resolve().parents[2]
STOP_GRACE_S = 5.0
COMPLETED = "finished:completed"
RUN_ID_PATTERN = re.compile(r"Successfully started run (\d+)")


def find_processes(flwr_home: Path) -> list[int]:
    """Live processes of a Flower run with this ``FLWR_HOME``, and their descendants (sorted PIDs).

    A process belongs to the run when its environment has ``FLWR_HOME=<flwr_home>`` (everything ``flwr``
    starts inherits it) or its command line names the folder (the SuperLink's ``--log-file``). Zombies,
    this process and its ancestors are never returned. Linux only (reads ``/proc``); elsewhere, empty.
    """
    home = str(Path(flwr_home).resolve())
    marker = f"FLWR_HOME={home}".encode()
    home_b = home.encode()
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    excluded = _ancestors(os.getpid())
    parents: dict[int, int] = {}
    matched: set[int] = set()
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        stat = _stat(pid)
        if stat is None or stat[0] == "Z":
            continue
        parents[pid] = stat[1]
        if pid in excluded:
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # gone, a kernel thread, or not ours
            continue
        if marker in environ or any(a == home_b or home_b + b"/" in a for a in args):
            matched.add(pid)
    # Descendants, in case one was started with a cleaned environment.
    grown = True
    while grown:
        children = {pid for pid, ppid in parents.items() if ppid in matched and pid not in matched}
        children -= excluded
        grown = bool(children)
        matched |= children
    return sorted(matched)


def stop_processes(flwr_home: Path, grace: float = STOP_GRACE_S) -> list[int]:
    """SIGTERM every process of :func:`find_processes`, SIGKILL those left after ``grace`` s.

    Each signal goes to one PID, found again just before it is sent. Returns the PIDs still alive after
    the SIGKILL and another ``grace`` s (empty when everything stopped).
    """
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = find_processes(flwr_home)
        if not pids:
            return []
        log.info("stopping Flower processes of %s with %s: %s", flwr_home, sig.name, pids)
        _signal_all(pids, sig)
        deadline = time.monotonic() + grace
        while find_processes(flwr_home) and time.monotonic() < deadline:
            time.sleep(0.2)
    survivors = find_processes(flwr_home)
    if survivors:
        log.error("Flower processes of %s survived SIGKILL: %s", flwr_home, survivors)
    return survivors


def _signal_all(pids: Iterable[int], sig: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) from ``/proc/<pid>/stat``, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2:].split()  # the command name may hold spaces and parentheses
    return fields[0], int(fields[1])


def _ancestors(pid: int) -> set[int]:
    chain = {pid}
    while (stat := _stat(pid)) is not None and stat[1] > 1 and stat[1] not in chain:
        pid = stat[1]
        chain.add(pid)
    return chain


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports free right now (the OS picks them)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def toml_table(values: Mapping[str, int | float | str]) -> str:
    """A flat TOML table of scalars (the run-config override file); ∞ and NaN as TOML's ``inf`` and ``nan``."""
    return tomli_w.dumps(dict(values))


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    return "\n" + "\n".join(text[-lines:]) if text else ""
