"""Results folders: sortable run ids and the per-run outputs (config, metrics, plots)."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

import matplotlib
import tomli_w

from experiments.runners.node_metrics import node_local
from federated import json_numbers

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def new_run_dir(results_root: Path, experiment: str) -> Path:
    """``results_root/<UTC time>-<experiment>``: sortable by time, named for the experiment, never reused."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    for suffix in ("", *(f"-{i}" for i in range(1, 1000))):
        path = results_root / f"{stamp}-{experiment}{suffix}"
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"{results_root}: no free run folder for {stamp}-{experiment}")


def load_metrics(run_dir: Path) -> dict[str, Any]:
    return json_numbers.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))


_LOSS_UNIT = {"nextchar": "nats per byte"}


def plot_rounds(metrics: dict[str, Any], path: Path) -> Path:
    """Held-out accuracy and loss of the global model per round (round 0: the initial model).

    The figures are the node-local ones (``experiments.runners.node_metrics``: held-out-weighted means over the
    workspaces that evaluated), which only a researcher holding every workspace has; rounds nobody evaluated
    are left out.
    """
    rounds = [r for r in node_local(metrics)["rounds"] if r["eval-accuracy"] is not None]
    task = metrics.get("config", {}).get("task", "nextchar")
    xs = [r["round"] for r in rounds]
    fig, (acc, loss) = plt.subplots(1, 2, figsize=(9, 3.5))
    acc.plot(xs, [r["eval-accuracy"] for r in rounds], marker="o")
    acc.set(xlabel="round", ylabel="accuracy", title="Held-out accuracy (node-local)")
    loss.plot(xs, [r["eval-loss"] for r in rounds], marker="o", color="tab:red")
    loss.set(xlabel="round", ylabel=f"cross-entropy ({_LOSS_UNIT.get(task, 'nats per sample')})",
             title="Held-out loss (node-local)")
    for ax in (acc, loss):
        ax.grid(alpha=0.3)
        ax.set_xticks(xs)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_config(run_dir: Path, values: dict[str, int | float | str]) -> Path:
    """The resolved run config as TOML (``config.toml``, ∞ as TOML's ``inf``), so the run can be repeated."""
    path = run_dir / "config.toml"
    path.write_text(tomli_w.dumps(values), encoding="utf-8")
    return path


def log_to_file(path: Path) -> None:
    """Send Optin's and Flower's logs to the run's log file instead of the terminal."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    for name in ("optin", "flwr"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        logger.handlers = [h for h in logger.handlers if not isinstance(h, logging.StreamHandler)
                           or isinstance(h, logging.FileHandler)]
        logger.addHandler(handler)
        logger.propagate = False
