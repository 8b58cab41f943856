"""``optin demo`` wall time, quiet and beside busy processes, with the thread defaults before and after.

What is measured: the README's main job, ``optin demo`` (8 synthetic workspaces, 5 rounds, in process), run
as a fresh process of the entry point, in four cells, interleaved, side by side in one run:

- *defaults before*: the source tree ``--before DIR`` (e.g. ``git archive c60271d^ | tar -x -C DIR``), where
  torch picks its own thread count (the CPU count) and OpenMP's own wait policy (spin, then sleep);
- *defaults now*: this tree, where ``optin`` sets ``OMP_WAIT_POLICY=PASSIVE`` and threads from the cores free
  (``experiments.cli.threads``);

each on a quiet machine and with ``--busy`` processes spinning beside it (``while True: pass``, one core each).
``OMP_*`` variables are removed from the environment of every run, so each side uses its own defaults. A run
that passes ``--timeout`` seconds is stopped and reported as ``> timeout``. The machine's 1-minute load
average before each cell is printed beside it: "quiet" is only as quiet as the machine was.

Run: ``.venv/bin/python -m experiments.bench.demo_threads --before /tmp/optin-before`` (about 15 minutes).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

from experiments.bench.common import Seed, bench_app

REPO = Path(__file__).resolve().parents[2]
DEMO = "from experiments.cli.app import app; app()"


def _demo(tree: Path, timeout: float, seed: int) -> float | None:
    """Seconds ``optin demo`` took with the code in ``tree``, or None if it passed ``timeout``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMP_")}
    env["PYTHONPATH"] = str(tree)
    with tempfile.TemporaryDirectory(prefix="optin-demo-bench-") as results:
        started = time.monotonic()
        try:
            subprocess.run([sys.executable, "-c", DEMO, "demo", "--seed", str(seed), "--results", results], cwd=tree, env=env,
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=timeout, check=True, start_new_session=True)
        except subprocess.TimeoutExpired:
            return None
        return time.monotonic() - started


@contextmanager
def _busy(count: int) -> Iterator[None]:
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def main(
    before: Path = typer.Option(..., help="Source tree with the thread defaults before (torch's own)."),
    busy: int = typer.Option(2, help="Busy processes beside the loaded runs."),
    timeout: float = typer.Option(600.0, help="Seconds after which a demo run is stopped."),
    seed: Seed = 0,
) -> None:
    """Time optin demo: quiet and loaded, thread defaults before and now."""
    print(f"optin demo wall time; {os.cpu_count()} CPUs; timeout {timeout:.0f} s")
    print(f"{'machine':<22} {'defaults':<8} {'load before':>11} {'seconds':>9}")
    for load in (0, busy):
        with _busy(load):
            for name, tree in (("before", before.resolve()), ("now", REPO)):
                load_before = os.getloadavg()[0]
                seconds = _demo(tree, timeout, seed)
                shown = f"> {timeout:.0f}" if seconds is None else f"{seconds:.0f}"
                machine = "quiet" if load == 0 else f"{load} busy processes"
                print(f"{machine:<22} {name:<8} {load_before:>11.1f} {shown:>9}", flush=True)


app = bench_app(main, __doc__)

if __name__ == "__main__":
    app()
