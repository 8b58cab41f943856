"""Node-local figures of a research run, collected from the workspaces' own audit logs into ``metrics.json``.

Nodes reply with no loss, accuracy or count (``federated.protocol``): each node writes its training loss
(``release`` entries) and its held-out evaluation (``evaluation`` entries) under ``kept_local`` in its
workspace's audit log, for its operator. A researcher who holds *every* workspace folder (an in-process run,
a Flower simulation, a sweep) can read them back after the run; :func:`merge_node_local` adds them to the
server's ``metrics.json`` under ``"node_local"``, kept apart from what the server learned:

- ``workspaces``: per workspace (folder name), the node id that served it where known (in process; ``null``
  in a Flower simulation, whose node ids are Flower's) and per round ``train-loss`` (the mean DP-SGD batch
  loss, ``null`` when every Poisson batch was empty), ``zeroed-gradients``, ``eval-loss``, ``eval-accuracy``
  and ``held-out`` (messages evaluated on);
- ``rounds``: per round, the held-out-weighted mean ``eval-loss`` and ``eval-accuracy`` over the workspaces
  that evaluated (``held-out`` their total, ``evaluating`` their number) and the plain mean ``train-loss``
  over the workspaces that trained (``training``); ``null`` where nobody did.

Guarantee: only entries of the given run id are read, so earlier runs on the same folders never mix in; a
round evaluated twice by one node (not done by Optin's server) keeps the last entry. Assumption: the audit
logs are the nodes' own (verify them with ``optin audit verify`` when that matters). In a deployment these
figures never leave the nodes; nothing here is what a server can see.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from federated import json_numbers
from federated.audit import AUDIT_FILE, read_entries

log = logging.getLogger("optin.node_metrics")

NODE_LOCAL_KEY = "node_local"
NOTE = ("Collected after the run from each workspace's own audit log (its kept_local figures) by a researcher "
        "who holds every workspace folder. In a deployment these figures stay on each node: replies carry no "
        "loss, accuracy or count, and the server never sees them.")


def collect_node_local(folders: Sequence[Path], run_id: str, node_ids: Mapping[Path, int] | None = None,
                       rounds: Iterable[int] = ()) -> dict[str, Any]:
    """The ``"node_local"`` section for ``folders`` (one per workspace) and run ``run_id``.

    ``node_ids`` maps a folder to the node id that served it (omitted: unknown); ``rounds`` lists rounds to
    report even when no workspace logged anything for them (the server's rounds).
    """
    workspaces: dict[str, dict[str, Any]] = {}
    for folder in folders:
        served_by = None if node_ids is None else node_ids.get(folder)
        workspaces[folder.name] = {"node_id": None if served_by is None else str(served_by),
                                   "rounds": _workspace_rounds(folder, str(run_id))}
    numbers = sorted({*rounds, *(int(r) for w in workspaces.values() for r in w["rounds"])})
    return {"note": NOTE, "run_id": str(run_id), "workspaces": workspaces,
            "rounds": [_round_summary(n, workspaces.values()) for n in numbers]}


def merge_node_local(metrics_path: Path, folders: Sequence[Path], run_id: str,
                     node_ids: Mapping[Path, int] | None = None) -> dict[str, Any]:
    """Add the ``"node_local"`` section to the run's ``metrics.json`` (rewritten atomically); return the whole."""
    metrics = json_numbers.loads(metrics_path.read_text(encoding="utf-8"))
    server_rounds = [int(r["round"]) for r in metrics.get("rounds", [])]
    metrics[NODE_LOCAL_KEY] = collect_node_local(folders, run_id, node_ids, server_rounds)
    tmp = metrics_path.with_suffix(".json.tmp")
    tmp.write_text(json_numbers.dumps(metrics), encoding="utf-8")
    tmp.replace(metrics_path)
    return metrics


def run_ids(folders: Iterable[Path]) -> set[str]:
    """Every run id that released or evaluated in any of ``folders`` (their audit logs)."""
    found = set()
    for folder in folders:
        for entry in _entries(folder):
            if entry.get("kind") in ("release", "evaluation") and "run_id" in entry:
                found.add(str(entry["run_id"]))
    return found


def node_local(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The ``"node_local"`` section of a loaded ``metrics.json``; ``KeyError`` naming what to do when absent."""
    try:
        return metrics[NODE_LOCAL_KEY]
    except KeyError:
        raise KeyError(f"metrics.json has no {NODE_LOCAL_KEY!r} section: merge it with "
                       "experiments.runners.node_metrics.merge_node_local after the run") from None


def round_figures(metrics: Mapping[str, Any]) -> dict[int, dict[str, Any]]:
    """Round number to that round's node-local summary (``eval-loss``, ``eval-accuracy``, ``train-loss``, ...)."""
    return {int(r["round"]): r for r in node_local(metrics)["rounds"]}


def workspace_figures(metrics: Mapping[str, Any], name: str) -> dict[int, dict[str, Any]]:
    """Round number to the figures workspace ``name`` kept in that round (empty if it logged none)."""
    entry = node_local(metrics)["workspaces"].get(name, {"rounds": {}})
    return {int(r): figures for r, figures in entry["rounds"].items()}


def _entries(folder: Path) -> Iterable[dict[str, Any]]:
    path = folder / AUDIT_FILE
    return read_entries(path) if path.is_file() else ()


def _workspace_rounds(folder: Path, run_id: str) -> dict[str, dict[str, Any]]:
    rounds: dict[int, dict[str, Any]] = {}
    for entry in _entries(folder):
        if str(entry.get("run_id")) != run_id or not isinstance(entry.get("kept_local"), dict):
            continue
        kept = entry["kept_local"]
        try:
            number = int(entry["round"])
        except (KeyError, TypeError, ValueError):
            log.warning("%s: %s entry with no round number; ignored", folder / AUDIT_FILE, entry.get("kind"))
            continue
        if entry.get("kind") == "release":
            rounds.setdefault(number, {}).update({"train-loss": _finite(kept.get("train_loss")),
                                                  "zeroed-gradients": int(kept.get("zeroed_gradients", 0))})
        elif entry.get("kind") == "evaluation":
            rounds.setdefault(number, {}).update({"eval-loss": _finite(kept.get("loss")),
                                                  "eval-accuracy": _finite(kept.get("accuracy")),
                                                  "held-out": int(kept.get("held_out", 0))})
    return {str(n): rounds[n] for n in sorted(rounds)}


def _round_summary(number: int, workspaces: Iterable[dict[str, Any]]) -> dict[str, Any]:
    figures = [w["rounds"].get(str(number), {}) for w in workspaces]
    # A workspace with nothing held out (or a non-finite result) has no evaluation to weigh in.
    evaluated = [f for f in figures if f.get("held-out", 0) > 0 and f.get("eval-loss") is not None
                 and f.get("eval-accuracy") is not None]
    trained = [f for f in figures if "train-loss" in f]
    losses = [f["train-loss"] for f in trained if f["train-loss"] is not None]
    held_out = sum(f["held-out"] for f in evaluated)
    return {
        "round": number,
        "evaluating": len(evaluated),
        "held-out": held_out,
        "eval-loss": sum(f["eval-loss"] * f["held-out"] for f in evaluated) / held_out if held_out else None,
        "eval-accuracy": sum(f["eval-accuracy"] * f["held-out"] for f in evaluated) / held_out if held_out else None,
        "training": len(trained),
        "train-loss": sum(losses) / len(losses) if losses else None,
    }


def _finite(value: Any) -> float | None:
    """A float, or ``None`` for a missing or non-finite value (JSON has no NaN)."""
    if value is None or isinstance(value, bool):
        return None
    number = float(value)
    return number if math.isfinite(number) else None
