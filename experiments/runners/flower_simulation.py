"""Run Optin's ServerApp and ClientApp on Flower's Simulation Engine through ``flwr run``.

This is the second of the three ways to run the same apps (DESIGN.md): the
conventional Flower path, ``flwr run . <connection>`` against a local SuperLink
in simulation mode (Ray backend), one simulated SuperNode per workspace folder.
The ClientApp maps simulation partition ``i`` to the ``i``-th sorted sub-folder
of the run config's ``workspaces-root``.

What :func:`run_flower_simulation` guarantees:

- **Isolation.** Every run gets its own Flower home (``FLWR_HOME``: the Flower
  config with one ``:local:`` connection, the installed app, the SuperLink's
  state and log) and its own free loopback ports for the local SuperLink, so it
  never talks to, nor reuses, a SuperLink that something else started.
- **No runtime installs.** ``FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1`` is
  set for ``flwr`` and everything it starts, so Flower runs the apps in this
  interpreter's environment instead of ``uv sync``-ing the app's dependencies
  (which would pull a CUDA build of torch). Telemetry and the update check are
  off (the machine may have no internet).
- **Bounded time.** ``flwr run --stream`` is given at most ``timeout`` seconds;
  querying the run's final status at most ``STATUS_TIMEOUT_S`` more; stopping the
  processes at most ``2 * STOP_GRACE_S`` more.
- **Nothing left behind.** ``flwr run`` starts a detached local SuperLink (its own
  session), which starts ``flower-superexec`` (another session), which starts
  ``flwr-simulation`` and Ray. None of them exit on their own. Whatever happens
  (success, failed run, timeout, exception, KeyboardInterrupt), every live
  process whose environment has this run's ``FLWR_HOME`` or whose command line
  names it, and their descendants, is sent SIGTERM and, after ``STOP_GRACE_S``,
  SIGKILL, each by PID. If one still survives, :class:`FlowerRunError` is raised.
  Zombies (already dead, waiting to be reaped by their parent or init) are not
  counted. Process discovery reads ``/proc``, so this guarantee holds on Linux.
- **Success means success.** The function returns only when Flower reports the
  run as ``finished:completed`` and the ServerApp wrote ``<results-dir>/metrics.json``
  and the final model's card ``model.json`` (``federated.tasks.model_file``) in this run;
  otherwise it raises :class:`FlowerRunError` naming the reason and the log.
- **Node-local figures.** The caller holds every workspace folder, so after a
  completed run ``metrics.json`` gets the figures each node kept in its audit log
  (``experiments.runners.node_metrics``; partition ``i`` is the ``i``-th sorted folder),
  for the run id Flower printed, or, if no log names it, the only run id the logs
  hold (fresh copies). A deployment's server never sees these figures.

The streamed output of ``flwr run`` is kept in ``<results-dir>/flwr-run.log``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from experiments.runners.node_metrics import merge_node_local, run_ids
from experiments.runners.processes import (
    APP_DIR,
    COMPLETED,
    RUN_ID_PATTERN,
    find_processes,
    free_ports,
    log_tail,
    stop_processes,
    toml_table,
)
from federated.config import RunConfig
from federated.errors import ConfigError, OptinError
from federated.tasks.model_file import CARD_FILE

log = logging.getLogger("optin.flower_sim")

"""The Flower app (the folder with Optin's ``pyproject.toml`` and its ``[tool.flwr.app]``)."""
CONNECTION = "optin-local-sim"
"""Name of the SuperLink connection written into the private Flower config."""
LOG_FILE = "flwr-run.log"
STATUS_TIMEOUT_S = 30.0



class FlowerRunError(OptinError):
    """A ``flwr run`` did not complete (failed, timed out, or left processes behind)."""


@dataclass(frozen=True)
class SimulationResources:
    """Ray resources of a local simulation.

    ``client_cpus`` is reserved per ClientApp actor, ``total_cpus`` is what Ray may
    use in all (``None``: every core of this machine). Ray runs
    ``total_cpus // client_cpus`` ClientApps at once; with one CPU each, Ray sets
    ``OMP_NUM_THREADS=1`` in each actor, so the actors do not oversubscribe the
    cores. The ServerApp and the SuperLink run outside Ray (mostly idle while
    nodes train).
    """

    client_cpus: int = 1
    client_gpus: float = 0.0
    total_cpus: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.client_cpus, bool) or not isinstance(self.client_cpus, int) or self.client_cpus < 1:
            raise ConfigError(f"client_cpus: expected an integer >= 1, got {self.client_cpus!r}")
        if self.client_gpus < 0:
            raise ConfigError(f"client_gpus: expected a value >= 0, got {self.client_gpus!r}")
        if self.total_cpus is not None and (isinstance(self.total_cpus, bool) or
                                            not isinstance(self.total_cpus, int) or
                                            self.total_cpus < self.client_cpus):
            raise ConfigError(f"total_cpus: expected an integer >= client_cpus ({self.client_cpus}), "
                              f"got {self.total_cpus!r}")

    def federation_config(self, num_supernodes: int) -> str:
        """The ``flwr run --federation-config`` value for ``num_supernodes`` simulated SuperNodes."""
        total = self.total_cpus if self.total_cpus is not None else max(os.cpu_count() or 1, self.client_cpus)
        return (f"num-supernodes={num_supernodes} client-resources-num-cpus={self.client_cpus} "
                f"client-resources-num-gpus={float(self.client_gpus)} init-args-num-cpus={total}")


def run_flower_simulation(config: RunConfig, *, num_supernodes: int | None = None,
                          resources: SimulationResources | None = None, timeout: float = 600.0,
                          flwr_home: Path | None = None, app_dir: Path = APP_DIR) -> Path:
    """Run ``config`` with ``flwr run <app_dir> <connection> --stream`` on a private local simulation.

    ``config.workspaces_root`` (the workspace folders) and ``config.results_dir`` must be set (relative
    paths are made absolute); every field of ``config`` is passed as a run-config override, so each must be
    a key of ``[tool.flwr.app.config]`` in ``pyproject.toml``. ``num_supernodes`` defaults to the number of
    workspace folders. ``flwr_home`` defaults to a fresh temporary folder, removed after a successful run
    and kept (for its SuperLink log) after a failed one; a given ``flwr_home`` is kept (its ``config.toml``
    is overwritten) and must have no live processes from an earlier run.

    Returns the results folder, which holds ``metrics.json`` and the final model (``model.safetensors``,
    ``model.json``). Raises ``ConfigError`` for a bad argument and
    ``FlowerRunError`` when the run fails, exceeds ``timeout``, or a process of it cannot be stopped. See
    the module docstring for the guarantees on isolation, time and cleanup.
    """
    if timeout <= 0:
        raise ConfigError(f"timeout: expected a positive number of seconds, got {timeout!r}")
    if not config.workspaces_root or not Path(config.workspaces_root).is_dir():
        raise ConfigError(f"workspaces-root: expected an existing folder, got {config.workspaces_root!r}")
    if not config.results_dir:
        raise ConfigError("results-dir: expected a folder for metrics.json, got ''")
    if not (app_dir / "pyproject.toml").is_file():
        raise ConfigError(f"app_dir: expected a Flower app folder with pyproject.toml, got {app_dir}")
    folders = sorted(p for p in Path(config.workspaces_root).iterdir() if p.is_dir())
    num_supernodes = len(folders) if num_supernodes is None else num_supernodes
    if not 1 <= num_supernodes <= len(folders):
        raise ConfigError(f"num_supernodes: expected 1..{len(folders)} (workspace folders in "
                          f"{config.workspaces_root}), got {num_supernodes}")
    resources = resources or SimulationResources()

    own_home = flwr_home is None
    home = Path(tempfile.mkdtemp(prefix="optin-flwr-home-")) if flwr_home is None else flwr_home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    if find_processes(home):
        raise FlowerRunError(f"{home}: processes of an earlier Flower run are still alive; stop them first")
    results = Path(config.results_dir).resolve()
    results.mkdir(parents=True, exist_ok=True)
    # Flower's processes do not run in this working directory: hand them absolute paths.
    config = replace(config, workspaces_root=str(Path(config.workspaces_root).resolve()), results_dir=str(results))
    metrics, card = results / "metrics.json", results / CARD_FILE
    for stale in (metrics, card):  # an earlier run's file must not pass for this run's
        stale.unlink(missing_ok=True)

    http_port, control_port = free_ports(2)
    _write_flower_config(home, http_port)
    overrides = home / "run-config.toml"
    overrides.write_text(toml_table(config.to_mapping()), encoding="utf-8")
    bin_dir = Path(sys.executable).parent
    flwr = bin_dir / "flwr" if (bin_dir / "flwr").exists() else shutil.which("flwr")
    if flwr is None:
        raise FlowerRunError("flwr: command not found next to this interpreter nor on PATH")
    env = _environment(home, bin_dir, http_port, control_port)
    command = [str(flwr), "run", str(app_dir), CONNECTION, "--run-config", str(overrides),
               "--federation-config", resources.federation_config(num_supernodes), "--stream"]
    log_path = results / LOG_FILE

    succeeded = False
    try:
        log.info("flwr run: %d supernodes, %s, FLWR_HOME=%s, SuperLink on 127.0.0.1:%d, log %s",
                 num_supernodes, resources, home, http_port, log_path)
        started = time.monotonic()
        with log_path.open("wb") as out:
            process = subprocess.Popen(command, cwd=app_dir, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                       stderr=subprocess.STDOUT, start_new_session=True)
            try:
                code = process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                raise FlowerRunError(f"flwr run: no result after {timeout:.0f} s; "
                                     f"log {log_path}{log_tail(log_path)}") from None
            finally:
                if process.poll() is None:  # an exception (e.g. KeyboardInterrupt) while waiting
                    process.kill()
                    process.wait()
        elapsed = time.monotonic() - started
        text = log_path.read_text(encoding="utf-8", errors="replace")
        if code != 0:
            raise FlowerRunError(f"flwr run exited with code {code}; log {log_path}{log_tail(log_path)}")
        match = RUN_ID_PATTERN.search(text)
        if match is None:
            raise FlowerRunError(f"flwr run: no run id in its output; log {log_path}{log_tail(log_path)}")
        run_id = match.group(1)
        status, details = _run_status(str(flwr), run_id, env, app_dir)
        if status != COMPLETED:
            raise FlowerRunError(f"flwr run {run_id}: status {status!r} ({details}); log {log_path}"
                                 f"{log_tail(log_path)}")
        for written in (metrics, card):
            if not written.is_file():
                raise FlowerRunError(f"flwr run {run_id} completed but wrote no {written}; log {log_path}")
        served = folders[:num_supernodes]
        merge_node_local(metrics, served, _logged_run_id(run_id, served))
        log.info("flwr run %s: %s in %.1f s; results in %s", run_id, status, elapsed, results)
        succeeded = True
    finally:
        survivors = stop_processes(home)
        if survivors:
            raise FlowerRunError(f"{home}: processes {survivors} survived SIGKILL")
        if own_home and succeeded:
            shutil.rmtree(home, ignore_errors=True)
        elif not succeeded:
            log.warning("flwr run failed; Flower home kept at %s (SuperLink log: %s)", home,
                        home / "local-superlink" / "superlink.log")
    return results


def _logged_run_id(run_id: str, folders: list[Path]) -> str:
    """``run_id`` if the workspaces' audit logs name it, else the only run id they hold (fresh copies)."""
    logged = run_ids(folders)
    if run_id in logged or len(logged) != 1:
        return run_id
    (only,) = logged
    log.warning("flwr run %s: the workspaces' audit logs name run %s only; reading its node-local figures",
                run_id, only)
    return only


def _write_flower_config(home: Path, http_port: int) -> None:
    """The Flower config of the private home: one ``:local:`` connection, the default.

    Simulation options go to ``flwr run --federation-config``: in flwr 1.42 ``options`` in a connection are
    deprecated (still read, with a warning).
    """
    (home / "config.toml").write_text(
        f'# Written by experiments/runners/flower_simulation.py; SuperLink on 127.0.0.1:{http_port}\n'
        f'[superlink]\ndefault = "{CONNECTION}"\n\n'
        f'[superlink.{CONNECTION}]\naddress = ":local:"\n',
        encoding="utf-8",
    )


def _environment(home: Path, bin_dir: Path, http_port: int, control_port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "FLWR_HOME": str(home),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(http_port),
        "FLWR_LOCAL_CONTROL_API_PORT": str(control_port),
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        # `flwr run` starts `flower-superlink` by name: it must be this environment's.
        "PATH": os.pathsep.join([str(bin_dir), env.get("PATH", "")]),
    })
    env.pop("RAY_ADDRESS", None)  # never join someone else's Ray cluster
    return env


def _run_status(flwr: str, run_id: str, env: dict[str, str], app_dir: Path) -> tuple[str, str]:
    """The run's final status and details from ``flwr ls --run-id`` (the SuperLink is still up)."""
    try:
        done = subprocess.run([flwr, "ls", CONNECTION, "--run-id", run_id, "--format", "json"], cwd=app_dir,
                              env=env, capture_output=True, text=True, timeout=STATUS_TIMEOUT_S,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return "unknown", f"flwr ls gave no answer in {STATUS_TIMEOUT_S:.0f} s"
    try:
        run = json.loads(done.stdout)["runs"][0]
        return str(run["status"]), str(run.get("status-details", ""))
    except (ValueError, KeyError, IndexError, TypeError):
        return "unknown", f"flwr ls said: {(done.stdout + done.stderr).strip()[-500:]}"


