"""Thread defaults for ``optin`` and every process it starts: never pathologically slow on a busy machine.

OpenMP threads spin-wait for their peers. On a machine whose cores are taken by other work, a torch op split
over two threads waits for a peer the OS has descheduled, which made ``optin demo`` many times slower under
load (BENCHMARKS.md §7). So before torch is imported (every command imports it lazily):

- ``OMP_WAIT_POLICY=PASSIVE``: an idle OpenMP thread sleeps instead of spinning;
- ``OMP_NUM_THREADS``: the user's ``--threads``, else an ``OMP_NUM_THREADS`` already set, else the cores free
  now (CPU count minus the 1-minute load average, at least 1).

Both go into the environment, so the Flower processes, SuperNodes and node workers started from this command
inherit them. The choice is read once, at start; a load that changes later is not followed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping


def free_cores(cpu_count: int | None = None, load: float | None = None) -> int:
    """Cores not busy with other work now: ``cpu_count - load`` rounded, between 1 and ``cpu_count``."""
    cpus = cpu_count if cpu_count is not None else (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                                    else os.cpu_count() or 1)
    busy = load if load is not None else (os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0)
    return max(1, min(cpus, round(cpus - busy)))


def apply_thread_defaults(threads: int | None, environ: MutableMapping[str, str] = os.environ) -> int:
    """Set the OpenMP environment for this process and its children; return the thread count chosen."""
    environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    chosen = threads or _positive(environ.get("OMP_NUM_THREADS")) or free_cores()
    environ["OMP_NUM_THREADS"] = str(chosen)
    if "torch" in sys.modules:  # already imported (a test, an embedding program): the environment is read
        sys.modules["torch"].set_num_threads(chosen)
    return chosen


def _positive(text: str | None) -> int | None:
    try:
        value = int(text) if text else 0
    except ValueError:
        return None
    return value if value > 0 else None
