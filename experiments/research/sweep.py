"""``optin sweep``: run a grid of privacy budgets × seeds × DP modes × datasets, resumably, and report it.

Layout of a sweep's results folder ``results/<UTC time>-sweep-<name>/``:

- ``sweep.toml``: the sweep file as given (a resumed sweep must be given the same one);
- ``datasets/<name>/``: each dataset's workspaces (data only), copied fresh into every cell;
- ``cells/<cell>/``: ``workspaces/`` (that cell's copies of the data, with their policies, ledgers and audit
  logs; opted-out workspaces hold refusals only), ``run/`` (the server's
  ``metrics.json`` and audit log, with the node-local figures read back from the workspaces' audit logs:
  ``experiments.runners.node_metrics``), and ``metrics.json``: the cell's summary (with an ``[audit]`` table,
  its canary audit: ``experiments.research.canary_audit``), written last and atomically. Its per-round held-out
  loss and accuracy and training loss are those node-local figures: the sweep holds every workspace, a
  deployment's server never sees them. Under ``baselines`` it records the federated model's final figures per
  workspace beside the unigram, bigram (or majority) and alone figures on the same held-out split
  (``experiments.research.cell_baselines``). With ``baselines = ["alone"]``, ``cells/<cell>/alone/<workspace>/``
  holds each consenting workspace's run on its own (``workspaces/`` its copy, ``run/`` its server's results);
- ``results.csv``, ``plots/loss_vs_epsilon.png``, ``plots/accuracy_vs_epsilon.png``,
  ``plots/accuracy_vs_round.png``, ``report.md``;
- ``sweep.log``: Optin's and Flower's logs.

Resumability: a cell whose ``metrics.json`` exists is finished and never rerun; any other cell
(never started, or interrupted) is prepared from scratch (fresh workspaces and ledgers) and run.
Every pending cell is prepared (data, calibration, policies, δ < 1/N) before the first one trains,
so a configuration problem stops the sweep before any training.
"""

from __future__ import annotations

import logging
import math
import time
import tomllib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flwr.app import Message
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from experiments.research.canary_audit import CanaryPlan, audit_model, claimed_epsilon, run_with_canaries
from experiments.research.cell_baselines import majority_figures, ngram_figures, run_alone, weighted_mean
from experiments.runners.in_process import run_federation
from experiments.runners.flower_simulation import run_flower_simulation
from experiments.runners.node_metrics import node_local, round_figures, workspace_figures
from experiments.research.report import CELL_METRICS, write_report
from experiments.runners.results import load_metrics, new_run_dir, write_config
from experiments.research.sweep_cells import CellPlan, build_dataset, prepare_cell
from experiments.research.sweep_config import SweepConfig, load_sweep
from federated import json_numbers
from federated.errors import ConfigError, PrivacyError
from federated.inprocess import Observer
from federated.privacy.accounting import epsilon
from federated.privacy.ledger import LEDGER_FILE, Ledger, Release

log = logging.getLogger("optin.sweep")

BASELINE_FIGURES = ("Held-out loss (nats per byte) and accuracy after the last round on each consenting workspace's "
                    "held-out split of this cell's copy (keyed by its node secret); means weighted by held-out "
                    "messages. federated and alone: node-local figures from the workspaces' audit logs; unigram "
                    "and bigram: fitted on the same workspace's training split and scored here by the sweep; "
                    "majority: the majority-class accuracy each node logged. None of it reaches the server.")

SWEEP_FILE = "sweep.toml"
LOG_FILE = "sweep.log"


@dataclass(frozen=True)
class SweepOutcome:
    """Where the results are, which cells this invocation ran and which it found finished."""

    run_dir: Path
    ran: tuple[str, ...]
    skipped: tuple[str, ...]
    seconds: float
    report: list[Path]


def open_run_dir(sweep: SweepConfig, results_root: Path, resume: Path | None) -> Path:
    """A new ``results_root/<time>-sweep-<name>`` holding a copy of the sweep file, or ``resume`` checked against it."""
    text = sweep.source.read_text(encoding="utf-8")
    if resume is None:
        run_dir = new_run_dir(results_root, f"sweep-{sweep.name}")
        (run_dir / SWEEP_FILE).write_text(text, encoding="utf-8")
        return run_dir
    stored = resume / SWEEP_FILE
    if not stored.is_file():
        raise ConfigError(f"--resume {resume}: expected a sweep results folder holding {SWEEP_FILE}, found none")
    if tomllib.loads(stored.read_text(encoding="utf-8")) != tomllib.loads(text):
        raise ConfigError(f"--resume {resume}: its {SWEEP_FILE} differs from {sweep.source}; expected the same sweep "
                          f"(start a new sweep instead)")
    return resume


def run_sweep(sweep: SweepConfig, run_dir: Path, console: Console | None = None) -> SweepOutcome:
    """Run every unfinished cell of ``sweep`` under ``run_dir`` with a progress display, then write the report."""
    started = time.monotonic()
    console = console or Console()
    cells = sweep.cells()
    finished = tuple(c.id for c in cells if (run_dir / "cells" / c.id / CELL_METRICS).is_file())
    pending = [c for c in cells if c.id not in finished]
    with _log_to(run_dir / LOG_FILE):
        datasets = {name: build_dataset(sweep.dataset(name), run_dir / "datasets" / name)
                    for name in dict.fromkeys(c.dataset for c in pending)}
        plans = [prepare_cell(sweep, c, datasets[c.dataset], run_dir / "cells" / c.id) for c in pending]
        log.info("sweep %s: %d cell(s) to run, %d already finished", sweep.name, len(plans), len(finished))
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console) as progress:
            task = progress.add_task(f"sweep {sweep.name}", total=len(cells), completed=len(finished))
            for plan in plans:
                def observe(message_type: str, group_id: str, replies: Sequence[Message], cell: str = plan.cell.id
                            ) -> None:
                    progress.update(task, description=f"{cell}: round {group_id} {message_type}")

                progress.update(task, description=f"{plan.cell.id}: starting")
                run_cell(plan, sweep, observe)
                progress.advance(task)
            progress.update(task, description=f"sweep {sweep.name}: done")
        report = write_report(run_dir, f"Sweep {sweep.name!r}: held-out loss and accuracy vs privacy budget",
                              str(sweep.source))
    return SweepOutcome(run_dir, tuple(p.cell.id for p in plans), finished, time.monotonic() - started, report)


def run_cell(plan: CellPlan, sweep: SweepConfig, observer: Observer | None = None) -> Path:
    """Run one prepared cell with the sweep's run mode; write and return its ``metrics.json``."""
    write_config(plan.folder, plan.run_config.to_mapping())
    started = time.monotonic()
    folders = [w.folder for w in plan.workspaces]
    final = None
    if plan.canaries is not None:
        final = run_with_canaries(folders, plan.run_config, plan.canaries, observer)
    elif sweep.run_mode == "inprocess":
        run_federation(folders, plan.run_config, observer)
    else:
        run_flower_simulation(plan.run_config)
    server = load_metrics(Path(plan.run_config.results_dir))
    summary = cell_summary(plan, sweep, server, time.monotonic() - started)
    summary["baselines"] = cell_baselines(plan, sweep, server, observer)
    if plan.canaries is not None and final is not None and sweep.audit is not None:
        claim = _claim(plan.canaries, plan.cell.dp_mode, summary, sweep)
        summary["audit"] = audit_model(sweep.audit, plan.canaries, plan.run_config, final, sweep.delta, claim)
    path = plan.folder / CELL_METRICS
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json_numbers.dumps(summary), encoding="utf-8")
    tmp.replace(path)
    log.info("cell %s finished in %.1f s: held-out loss %s, accuracy %s (node-local)", plan.cell.id,
             summary["seconds"], summary["rounds"][-1]["eval_loss"], summary["rounds"][-1]["eval_accuracy"])
    return path


def cell_summary(plan: CellPlan, sweep: SweepConfig, server: dict[str, Any], seconds: float) -> dict[str, Any]:
    """What the cell ran and gave: each workspace's mechanism and ε from its ledger, central DP, rounds."""
    delta, accountant = sweep.delta, sweep.accountant
    workspaces = []
    for w in plan.workspaces:
        releases = _releases(w.folder)
        if w.opted_out:
            if releases:
                raise PrivacyError(f"cell {plan.cell.id}: workspace {w.name!r} was held opted out but its ledger "
                                   f"records {len(releases)} release(s)")
            continue
        history = [(r.noise_multiplier, r.sample_rate, r.steps) for r in releases]
        workspaces.append({
            "name": w.name, "privacy_unit": w.policy.privacy_unit, "training_samples": w.training_samples,
            "canaries": w.canaries, "sample_rate": w.sample_rate, "steps_planned": w.steps,
            "noise_multiplier": w.policy.noise_multiplier,
            "noise_multipliers_run": sorted({r.noise_multiplier for r in releases}),
            "policy_max_epsilon": w.policy.max_epsilon,
            "epsilon_calibrated": w.local.epsilon if w.local else math.inf,
            "releases": len(releases), "steps_run": sum(r.steps for r in releases),
            "epsilon_ledger_rdp": releases[-1].epsilon_total if releases else 0.0,
            "epsilon": epsilon(history, delta, accountant),
        })
    central = None
    rounds = server["rounds"]
    local = round_figures(server)
    if plan.central is not None:
        released = [r["metrics"] for r in rounds if "central-releases" in r["metrics"]]
        count = int(released[-1]["central-releases"]) if released else 0
        central = {"noise_multiplier": plan.central.noise_multiplier, "clipping_norm": sweep.central_clipping_norm,
                   "releases": count, "cohorts": [int(m["central-cohort"]) for m in released],
                   "epsilon_calibrated": plan.central.epsilon,
                   "epsilon_server_rdp": released[-1]["central-epsilon"] if released else 0.0,
                   "epsilon": epsilon([(plan.central.noise_multiplier, 1.0, count)], delta, accountant) if count
                   else 0.0,
                   # Below 1, the noise outweighs the update it carries (server.central_dp): the report warns.
                   "signal_to_noise": [float(m["central-signal-to-noise"]) for m in released]}
    return {
        "cell": {"id": plan.cell.id, "dataset": plan.cell.dataset, "dp_mode": plan.cell.dp_mode,
                 "privacy_unit": plan.cell.privacy_unit, "target_epsilon": plan.cell.target_epsilon,
                 "seed": plan.cell.seed},
        "sweep": {"name": sweep.name, "accountant": accountant, "delta": delta, "run_mode": sweep.run_mode},
        "run_config": plan.run_config.to_mapping(),
        "local_noise": {"noise_multiplier": plan.run_config.noise_multiplier,
                        "delivery": "the run config's noise-multiplier (what the server asks every node for) and "
                                    "each consenting policy's noise_multiplier floor; noise_multipliers_run: what "
                                    "each node's ledger recorded"},
        "workspaces": workspaces,
        "opted_out": [w.name for w in plan.workspaces if w.opted_out],
        "central": central,
        "epsilon": {"local": max(w["epsilon"] for w in workspaces),
                    "central": None if central is None else central["epsilon"]},
        "rounds": [{"round": r["round"], "eval_accuracy": local.get(r["round"], {}).get("eval-accuracy"),
                    "eval_loss": local.get(r["round"], {}).get("eval-loss"),
                    "train_loss": local.get(r["round"], {}).get("train-loss"),
                    "held_out": local.get(r["round"], {}).get("held-out"),
                    "trained": len(r["trained"])} for r in rounds],
        "figures": "eval_* and train_loss: node-local figures from the workspaces' audit logs (held-out-weighted "
                   "means over the evaluating workspaces; mean over the training ones), which the server never sees",
        "seconds": seconds,
    }


def cell_baselines(plan: CellPlan, sweep: SweepConfig, server: dict[str, Any], observer: Observer | None = None
                   ) -> dict[str, Any]:
    """The federated model's final figures beside the cell's baselines (``experiments.research.cell_baselines``):
    per consenting workspace, and as held-out-weighted means (``means``)."""
    last = max(int(r["round"]) for r in server["rounds"])
    workspaces: dict[str, dict[str, Any]] = {}
    for w in plan.workspaces:
        if not w.opted_out:
            figures = workspace_figures(server, w.name).get(last, {})
            workspaces[w.name] = {"federated": {"loss": figures.get("eval-loss"),
                                                "accuracy": figures.get("eval-accuracy"),
                                                "held_out": int(figures.get("held-out", 0))}}
    found = [ngram_figures(plan), majority_figures(plan, str(node_local(server)["run_id"]), last)]
    seconds = None
    if "alone" in sweep.baselines:
        started = time.monotonic()
        found.append(run_alone(plan, sweep.run_mode, sweep.delta, sweep.accountant, observer))
        seconds = time.monotonic() - started
    for figures in filter(None, found):
        for name, entry in figures.items():
            workspaces[name].update(entry)
    names = list(dict.fromkeys(b for w in workspaces.values() for b in w))
    return {"figures": BASELINE_FIGURES, "means": {b: weighted_mean(workspaces.values(), b) for b in names},
            "workspaces": workspaces, "alone_seconds": seconds}


def _releases(folder: Path) -> list[Release]:
    """The releases a workspace copy's ledger records (none if its node never opened it)."""
    path = folder / LEDGER_FILE
    if not path.exists():
        return []
    with Ledger(path) as ledger:
        return ledger.releases()


def _claim(canaries: CanaryPlan, dp_mode: str, summary: dict[str, Any], sweep: SweepConfig) -> tuple[float, str]:
    """The cell's claimed ε for one canary message (``experiments.research.canary_audit.claimed_epsilon``)."""
    holders = {c.workspace for c in canaries.one_run} or {canaries.exposure_workspace}
    local = [w["epsilon"] for w in summary["workspaces"] if w["name"] in holders]
    central = summary["central"]
    return claimed_epsilon(dp_mode, local, central["noise_multiplier"] if central else None,
                           central["releases"] if central else 0, sweep.delta, sweep.accountant)


def load_and_run(config: Path, results_root: Path, resume: Path | None,
                 console: Console | None = None, audit: bool = False) -> SweepOutcome:
    """Read the sweep file, open (or resume) its results folder and run it (``audit``: with canaries, by default)."""
    sweep = load_sweep(config, audit)
    return run_sweep(sweep, open_run_dir(sweep, results_root, resume), console)


@contextmanager
def _log_to(path: Path) -> Iterator[None]:
    """Send Optin's and Flower's logs to ``path`` instead of the terminal while the sweep runs."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    saved: list[tuple[logging.Logger, list[logging.Handler], int, bool]] = []
    for name in ("optin", "flwr"):
        logger = logging.getLogger(name)
        saved.append((logger, list(logger.handlers), logger.level, logger.propagate))
        logger.handlers = [handler]
        logger.setLevel(logging.INFO)
        logger.propagate = False
    try:
        yield
    finally:
        for logger, handlers, level, propagate in saved:
            logger.handlers, logger.propagate = handlers, propagate
            logger.setLevel(level)
        handler.close()
