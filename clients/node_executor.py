"""The node's executor: takes each message the SuperNode receives and has Optin's installed ClientApp answer it.

``optin node`` starts the SuperNode with ``--isolation process`` (it then starts no ClientApp itself) and this
executor next to it. The executor claims each task from the SuperNode's runtime API (``AcquireTask``,
authenticated with the node's SuperExec secret so no other local process can claim the node's tasks), and
hands its token to a prestarted single-use worker (``clients.node_worker``), which answers with the node's
own ClientApp. A new worker is started as soon as one is taken, so the next message finds one ready.

Guarantees: the FAB a run uploads is never imported (the worker reads it as data); every task is answered,
an unsupported task type with an error, so the SuperNode never waits on a task nobody takes; a task is
claimed only when a worker is ready (a claimed task must start within Flower's 30 s activation window).
Each message still runs in a fresh process.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType

from flwr.proto.runtime_pb2 import AcquireTaskRequest  # pylint: disable=no-name-in-module
from flwr.supercore import task_worker
from flwr.supercore.constant import TaskType
from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor, SuperExecAuthHttpInterceptor
from flwr.supercore.retry import make_simple_http_retry_invoker
from flwr.supercore.runtime import RuntimeHttpClient

log = logging.getLogger("optin.node.executor")

ACQUIRE_METHOD = "/flwr.proto.Runtime/AcquireTask"
TASK_TYPES = [TaskType.CLIENT_APP, TaskType.AGENT_APP]
"""Every task type a SuperNode creates: the worker answers the ones it does not serve with an error."""
WORKER_START_TIMEOUT_S = 600.0


# Workers are forked from one server process that imported the ClientApp (torch, Opacus, Flower) once: a
# fresh process per message that starts in milliseconds instead of seconds.
_WORKERS = multiprocessing.get_context("forkserver")
_WORKERS.set_forkserver_preload(["clients.node_worker"])


class Worker:
    """A prestarted ``clients.node_worker`` process and its private socket folder."""

    def __init__(self, root: Path, curves: Path) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="worker-", dir=root))
        self.started = time.monotonic()
        # In the executor's process group: stopping the node stops its workers.
        self.process = _WORKERS.Process(target=_serve, args=(self.folder, curves), name="optin-node-worker")
        self.process.start()

    @property
    def ready(self) -> bool:
        return self.process.is_alive() and (self.folder / "ready").is_file()

    @property
    def failed(self) -> bool:
        return self.process.exitcode is not None or time.monotonic() - self.started > WORKER_START_TIMEOUT_S

    def run(self, payload: dict[str, object]) -> None:
        """Hand one task to the worker and wait until it has answered."""
        try:
            code = task_worker.dispatch_prestarted_task(payload, self.folder / "worker.sock", "ClientApp")
            if code != 0:
                log.warning("worker %d finished with code %d", self.process.pid, code)
            self.process.join(timeout=60)
            if self.process.is_alive():
                self.process.kill()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def stop(self) -> None:
        self.process.terminate()
        shutil.rmtree(self.folder, ignore_errors=True)


def _serve(folder: Path, curves: Path) -> None:
    from clients.node_worker import serve  # imported in the fork server already: costs nothing here

    sys.exit(serve(folder, curves))


def replace_failed(spare: Worker | None, root: Path, curves: Path) -> Worker:
    """``spare`` while it is starting or ready; else a new worker, a second after a failed one, so that a worker
    that cannot start is retried rather than stopping the node's executor, and not in a busy loop."""
    if spare is not None and not spare.failed:
        return spare
    if spare is not None:
        log.error("a worker failed to start (exit code %s); starting another", spare.process.exitcode)
        spare.stop()
        time.sleep(1.0)
    return Worker(root, curves)


def serve(runtime_api_address: str, secret: bytes, curves: Path, poll_interval: float = 0.2) -> None:
    """Claim and hand out tasks until the process is stopped (SIGTERM or Ctrl-C); workers keep the accountant's
    RDP curves in ``curves``."""
    client = RuntimeHttpClient.from_server_address(
        server_address=runtime_api_address, insecure=True, root_certificates=None,
        interceptors=[RuntimeVersionHttpInterceptor(component_name="SuperExec"),
                      SuperExecAuthHttpInterceptor(master_secret=secret, protected_methods={ACQUIRE_METHOD})],
        retry_invoker=make_simple_http_retry_invoker())
    root = Path(tempfile.mkdtemp(prefix="optin-executor-"))
    spare: Worker | None = None
    try:
        while True:
            spare = replace_failed(spare, root, curves)
            if not spare.ready:
                time.sleep(0.05)
                continue
            response = client.AcquireTask(AcquireTaskRequest(supported_task_types=TASK_TYPES))
            if not (response.HasField("task") and response.token):
                time.sleep(poll_interval)
                continue
            payload = {"token": response.token, "runtime_api_address": runtime_api_address, "insecure": True,
                       "root_certificates_path": None, "task_type": response.task.type}
            threading.Thread(target=spare.run, args=(payload,), daemon=True).start()
            spare = None
    finally:
        if spare is not None:
            spare.stop()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime-api-address", required=True, help="The SuperNode's runtime API, HOST:PORT.")
    parser.add_argument("--secret-file", type=Path, required=True,
                        help="The SuperExec secret the SuperNode was started with (--superexec-auth-secret-file).")
    parser.add_argument("--curves-dir", type=Path, required=True,
                        help="Where workers keep the accountant's RDP curves between messages (the node's own folder).")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per poll, five a second, says nothing

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        serve(args.runtime_api_address, args.secret_file.read_bytes(), args.curves_dir)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
