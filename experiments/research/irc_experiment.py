"""Federated vs trained alone on the IRC workspaces: does joining the federation help a workspace?

Builds the IRC workspaces (``federated.data.irc_corpus``: manifests only, no
text copied) under the run folder, gives each consent, and runs Optin's
ServerApp and ClientApp in process (``experiments.runners.in_process.run_federation``):

1. federated: all workspaces together;
2. alone: each workspace by itself, with the same ``RunConfig`` (rounds, local
   DP-SGD steps, noise, clipping, seed).

Each run has its own copy of the workspace folders, so one run's ledger
(lifetime ε budget) never limits another. For every workspace the comparison
reports held-out next-character accuracy of the initial model (round 0 of the
federated run), of the federated model and of its alone model (last round),
and means over workspaces (plain, and weighted by held-out messages). These are
node-local figures: each node keeps its evaluation in its workspace's audit log
and sends none; the experiment holds every workspace and reads them back
(``experiments.runners.node_metrics``).

Results: ``results/<UTC time>-irc/`` with ``config.toml``, ``federated/metrics.json``,
``alone/<workspace>/metrics.json``, ``comparison.json``, ``report.md``,
``plots/federated.png`` and ``run.log``.

Run: ``optin irc --config experiments/configs/irc.toml``
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from flwr.app import Message
from pydantic import Field, field_validator
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from experiments.formatting import figure
from experiments.research.config_models import TableModel, validate_table
from experiments.runners.in_process import run_federation
from experiments.runners.node_metrics import workspace_figures
from experiments.runners.results import load_metrics, log_to_file, new_run_dir, plot_rounds, write_config
from federated import json_numbers
from federated.config import RunConfig
from federated.data import PARTITIONS, build_irc_workspaces
from federated.errors import ConfigError
from federated.privacy.policy import Policy, write_policy

DEFAULT_CONFIG = Path(__file__).parents[1] / "configs" / "irc.toml"
_RUNNER_KEYS = ("results-dir", "workspaces-root")
_PARTITIONS = [p.name for p in PARTITIONS]


@dataclass(frozen=True)
class IrcExperiment:
    """What to run: the shared run config, how much of each workspace, the budget each policy grants."""

    run: RunConfig
    max_lines: int | None = None
    max_epsilon: float = Policy().max_epsilon
    workspaces: tuple[str, ...] = ()
    """Partition names to use (``federated.data.PARTITIONS``); empty: all."""


class _ExperimentTable(TableModel):
    """``[experiment]``: every key optional."""

    max_lines: int | None = Field(None, ge=1, description="an integer >= 1 (lines read from each workspace's log)")
    max_epsilon: float = Field(Policy().max_epsilon, gt=0, description="a number > 0 (each policy's budget)")
    workspaces: list[str] = Field([], description=f"a list of distinct workspace names from {_PARTITIONS}")

    @field_validator("workspaces")
    @classmethod
    def _known(cls, values: list[str]) -> list[str]:
        if not set(values) <= set(_PARTITIONS) or len(set(values)) != len(values):
            raise ValueError("unknown or repeated workspace")
        return values


class _ExperimentFile(TableModel):
    experiment: dict[str, Any] = Field({}, description="a table")
    run: dict[str, Any] = Field({}, description="a table of RunConfig keys")


def load_experiment(path: Path) -> IrcExperiment:
    """Read ``[experiment]`` and ``[run]`` (RunConfig keys) from a TOML file; a mistake is one ``ConfigError``
    naming the file, the key, the value and what was expected."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read as TOML ({exc})") from None
    top = validate_table(_ExperimentFile, raw, path)
    experiment = validate_table(_ExperimentTable, top.experiment, path, "experiment.")
    for key in _RUNNER_KEYS:
        if key in top.run:
            raise ConfigError(f"{path}: key 'run.{key}': expected no value (the runner sets it), got "
                              f"{top.run[key]!r}")
    try:
        run = RunConfig.from_mapping(top.run, source=f"{path} [run]")
    except ConfigError as exc:
        message = str(exc)
        raise ConfigError(message if message.startswith(str(path)) else f"{path}: {message}") from None
    return IrcExperiment(run=run, max_lines=experiment.max_lines, max_epsilon=experiment.max_epsilon,
                         workspaces=tuple(experiment.workspaces))


@dataclass(frozen=True)
class WorkspaceResult:
    """Held-out next-char accuracy of one workspace under each model (``None``: not evaluated)."""

    name: str
    held_out: int
    initial: float | None
    federated: float | None
    alone: float | None


@dataclass(frozen=True)
class Comparison:
    """Per-workspace results and their means over the workspaces that have all three numbers."""

    run_dir: Path
    workspaces: tuple[WorkspaceResult, ...]

    def complete(self) -> list[WorkspaceResult]:
        return [w for w in self.workspaces if None not in (w.initial, w.federated, w.alone)]

    def mean(self, model: str, weighted: bool = False) -> float:
        """Mean accuracy of ``model`` (``initial``, ``federated`` or ``alone``) over complete workspaces."""
        rows = self.complete()
        if not rows:
            raise ValueError("no workspace has all three accuracies")
        weights = [w.held_out if weighted else 1 for w in rows]
        return sum(getattr(w, model) * k for w, k in zip(rows, weights)) / sum(weights)

    def to_json(self) -> dict[str, Any]:
        means = {f"{model}{'-weighted' if weighted else ''}": self.mean(model, weighted)
                 for weighted in (False, True) for model in ("initial", "federated", "alone")}
        return {"workspaces": [asdict(w) for w in self.workspaces], "means": means,
                "federated-beats-alone": self.mean("federated") > self.mean("alone")}


def run_irc_experiment(experiment: IrcExperiment, corpus: Path, results_root: Path,
                       console: Console | None = None) -> Comparison:
    """Run the federated and the alone runs, write every result under a new run folder; return the comparison."""
    console = console or Console()
    partitions = tuple(p for p in PARTITIONS if not experiment.workspaces or p.name in experiment.workspaces)
    run_dir = new_run_dir(results_root, "irc")
    write_config(run_dir, {**{f"experiment-{k.replace('_', '-')}": _toml_value(v)
                              for k, v in asdict(experiment).items() if k != "run"},
                           **experiment.run.to_mapping(), "corpus": str(corpus)})
    log_to_file(run_dir / "run.log")

    def prepare(root: Path, only: Sequence[str] | None = None) -> list[Path]:
        chosen = tuple(p for p in partitions if only is None or p.name in only)
        folders = build_irc_workspaces(corpus, root, max_lines=experiment.max_lines, partitions=chosen)
        for folder in folders:
            write_policy(folder, Policy(consent=True, max_epsilon=experiment.max_epsilon))
        return folders

    federated_dir = run_dir / "federated"
    folders = prepare(federated_dir / "workspaces")
    names = [f.name for f in folders]
    rounds = experiment.run.num_rounds
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task("federated: initial model", total=(rounds + 1) * (1 + len(folders)))

        def observe(message_type: str, group_id: str, replies: Sequence[Message]) -> None:
            if message_type == "evaluate":
                progress.advance(task)

        config = replace(experiment.run, results_dir=str(federated_dir))
        progress.update(task, description=f"federated: {len(folders)} workspaces")
        served = run_federation(folders, config, observe)
        federated = load_metrics(federated_dir)
        alone: dict[str, dict[str, Any]] = {}
        for name in names:
            progress.update(task, description=f"alone: {name}")
            alone_dir = run_dir / "alone" / name
            (only,) = prepare(alone_dir / "workspaces", [name])
            run_federation([only], replace(experiment.run, results_dir=str(alone_dir)), observe)
            alone[name] = load_metrics(alone_dir)
    plot_rounds(federated, run_dir / "plots" / "federated.png")
    comparison = _compare(run_dir, federated, {str(k): v.name for k, v in served.items()}, alone)
    (run_dir / "comparison.json").write_text(json_numbers.dumps(comparison.to_json()) + "\n", encoding="utf-8")
    (run_dir / "report.md").write_text(_report(comparison, experiment), encoding="utf-8")
    return comparison


def print_comparison(comparison: Comparison, console: Console) -> None:
    """The per-workspace table with the means, and where the results are."""
    table = Table(title="Held-out next-character accuracy per workspace")
    table.add_column("workspace", overflow="fold")
    for column in ("held-out msgs", "initial", "alone", "federated"):
        table.add_column(column, justify="right", no_wrap=True)
    for w in comparison.workspaces:
        table.add_row(w.name, f"{w.held_out:,}", *(figure(v, ".4f") for v in (w.initial, w.alone, w.federated)))
    table.add_section()
    for weighted, label in ((False, "mean"), (True, "weighted mean")):
        table.add_row(label, "", *(figure(comparison.mean(m, weighted), ".4f") for m in ("initial", "alone", "federated")))
    console.print(table)
    console.print(f"Results: {comparison.run_dir}  (comparison.json, report.md, federated/, alone/, run.log)")


def _compare(run_dir: Path, federated: dict[str, Any], names: dict[str, str],
             alone: dict[str, dict[str, Any]]) -> Comparison:
    """Per workspace, from the node-local figures each run's ``metrics.json`` holds (``experiments.runners.node_metrics``)."""
    first, last = federated["rounds"][0]["round"], federated["rounds"][-1]["round"]
    rows = []
    for name in sorted(names.values()):
        own = workspace_figures(federated, name)
        alone_own = workspace_figures(alone[name], name)
        alone_last = alone[name]["rounds"][-1]["round"]
        rows.append(WorkspaceResult(
            name=name,
            held_out=int(own.get(first, {}).get("held-out", 0)),
            initial=own.get(first, {}).get("eval-accuracy"),
            federated=own.get(last, {}).get("eval-accuracy"),
            alone=alone_own.get(alone_last, {}).get("eval-accuracy"),
        ))
    return Comparison(run_dir, tuple(rows))


def _report(comparison: Comparison, experiment: IrcExperiment) -> str:
    run = experiment.run
    lines = [
        "# IRC workspaces: federated vs trained alone",
        "",
        (f"{len(comparison.workspaces)} workspaces, {run.num_rounds} rounds x {run.local_steps} DP-SGD steps "
         f"(Poisson rate {run.sample_rate:g}, batch normalizer {run.batch_size}, lr {run.lr}, "
         f"noise multiplier {run.noise_multiplier}, "
         f"clip {run.max_grad_norm}), max lines per workspace: {experiment.max_lines or 'all'}."),
        "",
        "Held-out accuracies are node-local figures, read from each workspace's audit log; nodes never send them.",
        "",
        "| workspace | held-out msgs | initial | alone | federated |",
        "|---|---:|---:|---:|---:|",
    ]
    for w in comparison.workspaces:
        cells = " | ".join(figure(v, ".4f") for v in (w.initial, w.alone, w.federated))
        lines.append(f"| {w.name} | {w.held_out} | {cells} |")
    for weighted, label in ((False, "mean"), (True, "weighted mean")):
        values = " | ".join(figure(comparison.mean(m, weighted), ".4f") for m in ("initial", "alone", "federated"))
        lines.append(f"| **{label}** | | {values} |")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> int | float | str:
    if value is None:
        return "all"
    return ",".join(value) if isinstance(value, tuple) else value
