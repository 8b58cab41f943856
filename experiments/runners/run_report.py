"""A report and plots for any finished run folder, however it ran (``flwr run`` in deployment included).

The ServerApp writes ``metrics.json`` (what the server learned: consent answers, who trained, who was skipped
and why, the ε each node reported, central DP figures) and the saved model. That is all a server holds: the
held-out figures stay on the nodes. So the report has two levels:

- always, the server's view: per round, how many nodes consented, trained, were skipped (by reason), the
  largest lifetime ε reported, central ε and the central signal-to-noise ratio, with warnings for rounds that
  did not update the model and for central noise that drowns the update;
- with ``workspaces`` (the workspace folders, which only someone who holds them has, e.g. a researcher
  running every node), the node-local held-out loss and accuracy, read from each workspace's audit log for
  this run and merged into ``metrics.json`` as the in-process runner does, and plotted.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.formatting import figure
from experiments.runners.node_metrics import NODE_LOCAL_KEY, merge_node_local, run_ids
from experiments.runners.results import load_metrics, plot_rounds
from federated.errors import ConfigError

REPORT_FILE = "report.md"


@dataclass(frozen=True)
class RunReport:
    report: Path
    plots: list[Path]
    warnings: list[str]


def write_run_report(run_dir: Path, workspaces: list[Path] | None = None) -> RunReport:
    """Write ``report.md`` (and ``plots/accuracy.png`` when node-local figures are available) into ``run_dir``."""
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.is_file():
        raise ConfigError(f"{run_dir}: no metrics.json; expected the results-dir of a finished run")
    try:
        metrics = load_metrics(run_dir)
    except ValueError as exc:
        raise ConfigError(f"{metrics_path}: not a metrics.json Optin wrote ({exc})") from None
    if workspaces:
        metrics = merge_node_local(metrics_path, workspaces, _run_id(run_dir, workspaces))
    plots = []
    if NODE_LOCAL_KEY in metrics and any(r["eval-accuracy"] is not None for r in metrics[NODE_LOCAL_KEY]["rounds"]):
        plots.append(plot_rounds(metrics, run_dir / "plots" / "accuracy.png"))
    warnings = _warnings(metrics)
    path = run_dir / REPORT_FILE
    path.write_text(_markdown(run_dir, metrics, warnings, plots), encoding="utf-8")
    return RunReport(path, plots, warnings)


def _run_id(run_dir: Path, workspaces: list[Path]) -> str:
    """The run id the saved model's card names; else the one run the workspaces' audit logs hold."""
    card = run_dir / "model.json"
    if card.is_file():
        try:
            return str(json.loads(card.read_text(encoding="utf-8"))["run_id"])
        except (ValueError, KeyError, TypeError):
            pass
    found = run_ids(workspaces)
    if len(found) != 1:
        raise ConfigError(f"{run_dir}: no model.json names the run, and the workspaces' audit logs hold "
                          f"{len(found)} runs ({', '.join(sorted(found)) or 'none'}); expected exactly one")
    return found.pop()


def _warnings(metrics: dict[str, Any]) -> list[str]:
    warnings = []
    for r in metrics["rounds"][1:]:
        number, round_metrics = r["round"], r.get("metrics", {})
        if "updates" not in round_metrics:
            warnings.append(f"round {number}: the model was not updated (too few consenting nodes or usable "
                            f"updates)")
        ratio = round_metrics.get("central-signal-to-noise")
        if ratio is not None and ratio < 1:
            warnings.append(f"round {number}: central DP noise is {1 / ratio:.0f}x the average update it carries: "
                            f"the released model is mostly noise" if ratio > 0 else
                            f"round {number}: central DP noise drowns an update of norm 0")
    return warnings


def _markdown(run_dir: Path, metrics: dict[str, Any], warnings: list[str], plots: list[Path]) -> str:
    config = metrics.get("config", {})
    local = {r["round"]: r for r in metrics.get(NODE_LOCAL_KEY, {}).get("rounds", [])}
    lines = [f"# Run {run_dir.name}", "",
             f"Task `{config.get('task', '?')}`, {config.get('num-rounds', '?')} rounds × "
             f"{config.get('local-steps', '?')} local steps, DP mode `{config.get('dp-mode', '?')}`, noise "
             f"multiplier {config.get('noise-multiplier', '?')}, sampling rate {config.get('sample-rate', '?')}.",
             "", "Per round, as the server saw it (consent answers, who trained, who was skipped and why). "
             "ε local: the largest lifetime ε a node reported (each workspace's ledger is the authority); "
             "ε central: the server's accountant for workspace-level central DP. Held-out figures: node-local, "
             + ("read from the workspaces' audit logs." if local else "not available (they stay on the nodes; "
                                                                       "pass --workspaces if you hold them)."), "",
             "| round | consented | trained | skipped | ε local | ε central | signal/noise | held-out loss | "
             "held-out accuracy |", "|---|---|---|---|---|---|---|---|---|"]
    for r in metrics["rounds"]:
        m = r.get("metrics", {})
        consented = sum(1 for reason in r["consent"].values() if reason == "consent-on")
        reasons = Counter(r["skipped"].values())
        skipped = ", ".join(f"{reason} {count}" for reason, count in sorted(reasons.items())) or "-"
        figures = local.get(r["round"], {})
        lines.append(f"| {r['round']} | {consented}/{len(r['consent'])} | {len(r['trained'])} | {skipped} | "
                     f"{figure(m.get('max-epsilon'))} | {figure(m.get('central-epsilon'))} | "
                     f"{figure(m.get('central-signal-to-noise'), '.3g')} | {figure(figures.get('eval-loss'))} | "
                     f"{figure(figures.get('eval-accuracy'))} |")
    if warnings:
        lines += ["", "## Warnings", "", *(f"- {w}" for w in warnings)]
    if plots:
        lines += ["", *(f"![{p.stem}]({p.relative_to(run_dir)})" for p in plots)]
    return "\n".join(lines) + "\n"
