"""A sweep's results: the aggregated CSV, the plots and the Markdown report, from the cells' ``metrics.json``.

Each number in the report says which mechanism produced it, under which neighbouring relation and
which accountant: local DP-SGD ε is message-level (add/remove one message of one workspace,
Poisson sampling, amplification claimed), central DP-FedAvg ε is workspace-level (one workspace's
update zeroed, every consenting node in every round, *no* amplification claimed). No DP is
reported as ε = ∞, never as a number. Loss (nats per byte) and accuracy are the global model's on
the held-out splits of the consenting workspaces after the last round (node-local figures the sweep
reads from the workspaces' audit logs; nodes never send them); the spread is over seeds. Beside them,
per dataset and target ε, the cell's baselines on the same splits (``experiments.research.cell_baselines``):
each workspace trained alone at the same ε (with ``baselines = ["alone"]``), and unigram and bigram models
fitted on each workspace's training split.
With a canary audit (``experiments.research.canary_audit``), each cell's claimed ε for one canary, the
empirical one-run lower bound and the canaries' exposure are reported too, and a lower bound above
its claim is flagged at the top of the report: at the audit's confidence c (95 % by default) that is
a bug, or the 1 − c chance per cell (1 in 20) that a correct claim is exceeded; a rerun tells.
"""

from __future__ import annotations

import csv
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from experiments.formatting import figure
from experiments.research.epsilon_plot import Panel, plot_vs_epsilon
from federated import json_numbers

CELL_METRICS = "metrics.json"
CSV_FILE = "results.csv"
REPORT_FILE = "report.md"
EPSILON_PLOT = "plots/accuracy_vs_epsilon.png"
LOSS_PLOT = "plots/loss_vs_epsilon.png"
ROUNDS_PLOT = "plots/accuracy_vs_round.png"
CSV_COLUMNS = ("cell", "dataset", "dp_mode", "privacy_unit", "target_epsilon", "seed", "accountant", "delta", "epsilon_local",
               "epsilon_central", "local_noise_min", "local_noise_max", "training_samples_min", "training_samples_max", "opted_out",
               "central_noise_multiplier", "rounds",
               "initial_accuracy", "final_accuracy", "initial_loss", "final_loss", "alone_loss", "alone_accuracy",
               "unigram_loss", "unigram_accuracy", "bigram_loss", "bigram_accuracy", "majority_accuracy",
               "seconds", "run_mode", "audit_claimed_epsilon",
               "audit_epsilon_lower_bound", "audit_correct_guesses", "audit_guesses", "audit_max_exposure_bits",
               "audit_violation")

MECHANISMS = {
    "none": ("No DP: each node runs the same DP-SGD code with noise multiplier 0 (per-example clipping only), "
             "the server plain FedAvg. ε = ∞."),
    "local": ("Local DP-SGD on each workspace (Opacus): per-message gradients clipped to `max-grad-norm`, Gaussian "
              "noise of std z·C per step, z calibrated to the target for the Poisson rate q = `sample-rate` and "
              "T = rounds × local steps. q is public and the same for every workspace (never derived from a "
              "workspace's size), so one z serves all of them. Neighbouring relation: add/remove one message "
              "of one workspace. Sampling: Poisson over messages, so amplification by sampling is claimed. "
              "ε: the sweep's accountant over the node's ledger history (the node itself accounts with RDP). "
              "Server: equal-weight FedAvg (nodes send no counts), no central noise."),
    "central": ("Central workspace-level DP-FedAvg (Flower's server-side fixed-clipping wrapper): each update clipped "
                "to C, equal-weight average over the m updates of the round, Gaussian noise of std z·C/m per "
                "coordinate. Neighbouring relation: one workspace (its update replaced by zero). Sampling: every "
                "consenting node in every round (a fixed cohort) — not Poisson, so no amplification: accounted at "
                "sampling rate 1 over the rounds with a release. Nodes add no local noise (local ε = ∞). The server "
                "is trusted: it sees every update before noise."),
    "both": ("Both mechanisms, each calibrated to the target on its own relation: local DP-SGD (message-level, "
             "Poisson, amplification claimed) and central DP-FedAvg (workspace-level, no amplification). The two "
             "ε are different guarantees and are reported separately, not added."),
}


BASELINES = ("alone", "unigram", "bigram", "majority")
"""The baselines a cell may record (``metrics.json``'s ``baselines.means``), in report order."""
LOSS_UNITS = {"nextchar": "nats per byte"}


@dataclass(frozen=True)
class Group:
    """The seeds of one (dataset, DP mode, target ε): final accuracy and loss, baselines and ε over seeds."""

    dataset: str
    dp_mode: str
    target_epsilon: float
    accuracies: tuple[float, ...]
    epsilon_local: float
    epsilon_central: float | None
    losses: tuple[float, ...] = ()
    baselines: dict[str, dict[str, tuple[float, ...]]] = field(default_factory=dict)
    """Baseline name to metric (``loss``, ``accuracy``) to its held-out-weighted mean in each seed's cell."""

    @property
    def mean(self) -> float:
        return statistics.fmean(self.accuracies)

    @property
    def spread(self) -> float:
        """Sample standard deviation over seeds (0 with one seed)."""
        return statistics.stdev(self.accuracies) if len(self.accuracies) > 1 else 0.0

    def values(self, name: str, metric: str) -> tuple[float, ...]:
        """The seeds' values of ``metric`` for ``name``: ``federated`` or a baseline (empty if not recorded)."""
        if name == "federated":
            return self.accuracies if metric == "accuracy" else self.losses
        return self.baselines.get(name, {}).get(metric, ())


def mean_sd(values: tuple[float, ...], digits: int = 4) -> str:
    """``mean ± sd`` over seeds (sample sd; 0 with one seed); ``—`` for no values."""
    if not values:
        return "—"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.{digits}f} ± {spread:.{digits}f}"


def load_cells(run_dir: Path) -> list[dict[str, Any]]:
    """Every finished cell's metrics (``cells/*/metrics.json``) in grid order; ε strings become floats."""
    cells = [json_numbers.loads(p.read_text(encoding="utf-8")) for p in (run_dir / "cells").glob(f"*/{CELL_METRICS}")]
    order = list(MECHANISMS)
    return sorted(cells, key=lambda c: (series(c), order.index(c["cell"]["dp_mode"]),
                                        -c["cell"]["target_epsilon"], c["cell"]["seed"]))


def series(cell: dict[str, Any]) -> str:
    """What a cell's figures are grouped and plotted under: its dataset, and its privacy unit unless message."""
    unit = _unit(cell)
    return cell["cell"]["dataset"] if unit == "message" else f"{cell['cell']['dataset']} ({unit}-level)"


def _unit(cell: dict[str, Any]) -> str:
    """The cell's privacy unit (cells written before the unit was recorded are message-level)."""
    return cell["cell"].get("privacy_unit", "message")


def write_report(run_dir: Path, title: str, sweep_file: str) -> list[Path]:
    """Write ``results.csv``, both plots and ``report.md`` for the finished cells under ``run_dir``."""
    cells = load_cells(run_dir)
    groups = summarize(cells)
    paths = [write_csv(cells, run_dir / CSV_FILE),
             plot_epsilon(cells, "accuracy", f"{title}: accuracy", run_dir / EPSILON_PLOT),
             plot_epsilon(cells, "loss", f"{title}: loss", run_dir / LOSS_PLOT),
             plot_accuracy_vs_round(cells, run_dir / ROUNDS_PLOT)]
    report = run_dir / REPORT_FILE
    report.write_text(render_markdown(title, sweep_file, cells, groups), encoding="utf-8")
    return [*paths, report]


def csv_row(cell: dict[str, Any]) -> dict[str, Any]:
    """One CSV row; ε = ∞ is written ``inf``."""
    noises = [w["noise_multiplier"] for w in cell["workspaces"]]
    central = cell["central"]
    rounds = cell["rounds"]
    return {
        "cell": cell["cell"]["id"], "dataset": cell["cell"]["dataset"], "dp_mode": cell["cell"]["dp_mode"],
        "privacy_unit": _unit(cell),
        "target_epsilon": _text(cell["cell"]["target_epsilon"]), "seed": cell["cell"]["seed"],
        "accountant": cell["sweep"]["accountant"], "delta": cell["sweep"]["delta"],
        "epsilon_local": _text(cell["epsilon"]["local"]),
        "epsilon_central": "" if central is None else _text(cell["epsilon"]["central"]),
        "local_noise_min": min(noises), "local_noise_max": max(noises),
        "training_samples_min": min(w["training_samples"] for w in cell["workspaces"]),
        "training_samples_max": max(w["training_samples"] for w in cell["workspaces"]),
        "opted_out": " ".join(cell.get("opted_out", [])),
        "central_noise_multiplier": "" if central is None else central["noise_multiplier"],
        "rounds": len(rounds) - 1, "initial_accuracy": rounds[0]["eval_accuracy"],
        "final_accuracy": rounds[-1]["eval_accuracy"], "initial_loss": rounds[0]["eval_loss"],
        "final_loss": rounds[-1]["eval_loss"],
        **{f"{name}_{metric}": _blank(baseline_means(cell).get(name, {}).get(metric))
           for name in BASELINES for metric in ("loss", "accuracy") if f"{name}_{metric}" in CSV_COLUMNS},
        "seconds": round(cell["seconds"], 2), "run_mode": cell["sweep"]["run_mode"],
        **_audit_columns(cell.get("audit")),
    }


def baseline_means(cell: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The cell's held-out-weighted baseline figures (empty for a cell written before baselines were recorded)."""
    return (cell.get("baselines") or {}).get("means", {})


def _blank(value: float | None) -> float | str:
    return "" if value is None else value


def _audit_columns(audit: dict[str, Any] | None) -> dict[str, Any]:
    if audit is None:
        return {}
    one_run = audit["one_run"] or {}
    return {"audit_claimed_epsilon": _text(audit["claimed_epsilon"]),
            "audit_epsilon_lower_bound": one_run.get("epsilon_lower_bound", ""),
            "audit_correct_guesses": one_run.get("correct", ""), "audit_guesses": one_run.get("guesses", ""),
            "audit_max_exposure_bits": max((e["bits"] for e in audit["exposure"]), default=""),
            "audit_violation": audit["violation"]}


def write_csv(cells: list[dict[str, Any]], path: Path) -> Path:
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(csv_row(c) for c in cells)
    return path


def summarize(cells: list[dict[str, Any]]) -> list[Group]:
    """Cells grouped over seeds, ordered by series (dataset and privacy unit), DP mode (none first) and target ε
    (large to small)."""
    keyed: dict[tuple[str, str, float], list[dict[str, Any]]] = {}
    for cell in cells:
        c = cell["cell"]
        keyed.setdefault((series(cell), c["dp_mode"], c["target_epsilon"]), []).append(cell)
    order = list(MECHANISMS)
    groups = []
    for (dataset, mode, target), members in sorted(keyed.items(), key=lambda kv: (kv[0][0], order.index(kv[0][1]),
                                                                                 -kv[0][2])):
        central = [m["epsilon"]["central"] for m in members if m["central"] is not None]
        baselines = {name: {metric: tuple(v for m in members
                                          if (v := baseline_means(m).get(name, {}).get(metric)) is not None)
                            for metric in ("loss", "accuracy")} for name in BASELINES}
        # Round 0: the model every cell starts from (fresh, or a public checkpoint), before any workspace's data.
        baselines["initial"] = {metric: tuple(v for m in members if (v := m["rounds"][0][f"eval_{metric}"]) is not None)
                                for metric in ("loss", "accuracy")}
        groups.append(Group(dataset, mode, target, tuple(m["rounds"][-1]["eval_accuracy"] for m in members),
                            max(m["epsilon"]["local"] for m in members), max(central) if central else None,
                            tuple(m["rounds"][-1]["eval_loss"] for m in members
                                  if m["rounds"][-1]["eval_loss"] is not None),
                            {n: b for n, b in baselines.items() if any(b.values())}))
    return groups


def ordering(groups: list[Group]) -> list[tuple[Group, Group, bool]]:
    """Per dataset and mode, each step down in ε (no DP first): does accuracy not rise beyond the seed spread?

    ``(larger-ε group, smaller-ε group, holds)``; it holds when
    ``mean(larger) >= mean(smaller) - (spread(larger) + spread(smaller))``.
    """
    checks = []
    for dataset in sorted({g.dataset for g in groups}):
        baseline = [g for g in groups if g.dataset == dataset and g.dp_mode == "none"]
        for mode in ("local", "central", "both"):
            chain = baseline + [g for g in groups if g.dataset == dataset and g.dp_mode == mode]
            if len(chain) == len(baseline):
                continue
            for high, low in zip(chain, chain[1:]):
                checks.append((high, low, high.mean >= low.mean - (high.spread + low.spread)))
    return checks


def plot_epsilon(cells: list[dict[str, Any]], metric: str, title: str, path: Path) -> Path:
    """Final held-out ``metric`` (``loss`` or ``accuracy``) against target ε: one row per dataset, one panel per
    DP mode (no DP at ∞ in each); the federated model and the alone baseline as mean over seeds with a min..max
    band, the federated model per workspace as thin lines, unigram, bigram and majority as dashed levels."""
    rows = []
    for name in sorted({series(c) for c in cells}):
        chosen = [c for c in cells if series(c) == name]
        modes = [m for m in ("local", "central", "both") if any(c["cell"]["dp_mode"] == m for c in chosen)]
        rows.append([_panel([c for c in chosen if c["cell"]["dp_mode"] in ("none", mode)], metric, name, mode)
                     for mode in modes or ["none"]])
    tasks = {c["run_config"].get("task", "nextchar") for c in cells}
    unit = LOSS_UNITS.get(next(iter(tasks))) if len(tasks) == 1 else None
    ylabel = f"held-out {metric}" + (f" ({unit})" if metric == "loss" and unit else "")
    return plot_vs_epsilon(rows, ylabel, f"{title} after the last round on each workspace's held-out split "
                                         "(federated, alone: node-local figures from the audit logs; n-grams: "
                                         "scored on the same split)", path)


def _panel(cells: list[dict[str, Any]], metric: str, name: str, mode: str) -> Panel:
    """One dataset and DP mode's panel (its ``none`` cells drawn at ∞)."""
    curves: dict[str, dict[float, list[float]]] = {"federated": {}}
    workspaces: dict[str, dict[float, list[float]]] = {}
    levels: dict[str, list[float]] = {}
    for cell in cells:
        target = cell["cell"]["target_epsilon"]
        value = cell["rounds"][-1][f"eval_{metric}"]
        if value is not None:
            curves["federated"].setdefault(target, []).append(value)
        for workspace, figures in (cell.get("baselines") or {}).get("workspaces", {}).items():
            if figures.get("federated", {}).get(metric) is not None:
                workspaces.setdefault(workspace, {}).setdefault(target, []).append(figures["federated"][metric])
        for baseline, figures in baseline_means(cell).items():
            if baseline == "federated" or figures.get(metric) is None:
                continue
            if baseline == "alone":
                curves.setdefault("alone", {}).setdefault(target, []).append(figures[metric])
            else:
                levels.setdefault(baseline, []).append(figures[metric])
    first = cells[0]
    run = first["run_config"]
    seeds = len({c["cell"]["seed"] for c in cells})
    title = (f"{first['sweep']['name']} · {name} · {'no DP only' if mode == 'none' else f'{mode} DP'}\n"
             f"{run.get('num-rounds')} rounds × {run.get('local-steps')} local steps, q = {run.get('sample-rate')}, "
             f"δ = {first['sweep']['delta']:g} ({first['sweep']['accountant']})\n"
             f"{seeds} seed(s), {len(workspaces)} workspaces, task {run.get('task', 'nextchar')}")
    return Panel(title, curves, workspaces, levels)


def plot_accuracy_vs_round(cells: list[dict[str, Any]], path: Path) -> Path:
    """Held-out accuracy per round for each (DP mode, target ε): mean over seeds, band = min..max."""
    datasets = sorted({series(c) for c in cells})
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        for group in summarize([c for c in cells if series(c) == dataset]):
            runs = [c for c in cells if (series(c), c["cell"]["dp_mode"], c["cell"]["target_epsilon"])
                    == (dataset, group.dp_mode, group.target_epsilon)]
            rounds = [r["round"] for r in runs[0]["rounds"]]
            accuracies = [[r["eval_accuracy"] for r in c["rounds"]] for c in runs]
            per_round = list(zip(*accuracies))
            label = "no DP" if group.dp_mode == "none" else f"{group.dp_mode}, ε={format(group.target_epsilon, 'g')}"
            ax.plot(rounds, [statistics.fmean(v) for v in per_round], marker="o", label=label)
            ax.fill_between(rounds, [min(v) for v in per_round], [max(v) for v in per_round], alpha=0.15)
        ax.set(xlabel="round (0: initial model)", ylabel="held-out next-char accuracy",
               title=f"{dataset}: accuracy per round (band: min..max over seeds)")
        ax.set_xticks(sorted({r["round"] for c in cells for r in c["rounds"]}))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def render_markdown(title: str, sweep_file: str, cells: list[dict[str, Any]], groups: list[Group]) -> str:
    """The report: results per group, the ordering check, each mechanism, and every cell with its mechanism."""
    first = cells[0]["sweep"]
    lines = [f"# {title}", "", *_violations(cells), *_drowned(cells)]
    lines += [
        f"Sweep file: `{sweep_file}`. {len(cells)} cells; run mode `{first['run_mode']}`; accountant "
        f"`{first['accountant']}` (calibration and the ε below); δ = {first['delta']:g} for every ε. Cells ran for "
        f"{sum(c['seconds'] for c in cells):.0f} s in all (sum of the cells' federated runs' wall times)"
        f"{_alone_time(cells)}.",
        "",
        "Loss and accuracy: held-out loss and accuracy of the global model on the held-out splits of all "
        "(consenting) workspaces after the last round (held-out-weighted), mean ± sample sd over seeds"
        f"{_loss_unit(cells)}. Each node evaluates on "
        "its own split and keeps the result in its audit log; the sweep, which holds every workspace, reads them "
        "back. A deployment's server never sees them.",
        "",
        f"Sampling: every node draws each DP-SGD batch by Poisson sampling at the public rate q = "
        f"{_rates(cells)}, the same for all workspaces whatever their size; `batch-size` only scales the step.",
        "",
        "## Results",
        "",
        f"| dataset | DP mode | target ε | seeds | loss | accuracy | ε local: add/remove one message (member-level: "
        f"one member), Poisson, "
        f"{first['accountant']} (max over workspaces) | ε central: one workspace, no amplification, "
        f"{first['accountant']} |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for g in groups:
        lines.append(f"| {g.dataset} | {g.dp_mode} | {figure(g.target_epsilon)} | {len(g.accuracies)} | "
                     f"{mean_sd(g.losses)} | {g.mean:.4f} ± {g.spread:.4f} | {figure(g.epsilon_local)} | "
                     f"{'—' if g.epsilon_central is None else figure(g.epsilon_central)} |")
    lines += _baselines_section(cells, groups)
    lines += _audit_section(cells)
    lines += ["", "## Utility ordering (no DP first, then decreasing ε; tolerance: the two groups' sd added)", ""]
    for high, low, holds in ordering(groups):
        lines.append(f"- {high.dataset}, {low.dp_mode}: ε={figure(high.target_epsilon)} ({high.mean:.4f}) ≥ "
                     f"ε={figure(low.target_epsilon)} ({low.mean:.4f}): {'holds' if holds else 'does NOT hold'}")
    lines += ["", "## Mechanisms, neighbouring relations, accountants", ""]
    for mode in MECHANISMS:
        if any(c["cell"]["dp_mode"] == mode for c in cells):
            lines.append(f"- **{mode}**: {MECHANISMS[mode]}")
    lines += [
        "",
        "Assumptions every ε depends on: local sampling and noise come from fresh OS randomness at each release "
        "(so cells are not bit-for-bit repeatable); the training losses and held-out results are node-local "
        "figures outside every guarantee, read from the workspaces' own audit logs by the sweep and never sent to "
        "the server; each cell's workspaces are fresh copies with their own ledgers, so each ε is that cell's "
        "alone.",
        "",
        "## Cells",
        "",
        "| cell | mechanism | local: z (min..max), q (min..max), steps, N training samples (min..max) | central: z, C, releases | ε local | "
        "ε central | loss | accuracy | s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for cell in cells:
        lines.append(_cell_row(cell))
    lines += ["", "## Plots", "",
              "Computed on each consenting workspace's held-out split after the last round: the federated and "
              "alone figures are node-local ones read from the workspaces' audit logs, the n-gram levels the "
              "sweep's own scoring of the same splits. Bands: min..max over seeds; ∞: no DP.", "",
              f"![loss vs ε]({LOSS_PLOT})", "", f"![accuracy vs ε]({EPSILON_PLOT})", "",
              f"![accuracy vs round]({ROUNDS_PLOT})", ""]
    return "\n".join(lines)


def audit_failures(cells: list[dict[str, Any]]) -> list[str]:
    """Cells whose empirical ε lower bound exceeds their claimed ε (a bug, or a 1 − confidence chance)."""
    return [c["cell"]["id"] for c in cells if c.get("audit") and c["audit"]["violation"]]


def central_drowned(cells: list[dict[str, Any]]) -> list[tuple[str, float]]:
    """(cell id, lowest signal-to-noise) of every cell whose central DP noise outweighed some round's update."""
    found = []
    for cell in cells:
        ratios = (cell.get("central") or {}).get("signal_to_noise") or []
        if ratios and min(ratios) < 1:
            found.append((cell["cell"]["id"], min(ratios)))
    return found


def _drowned(cells: list[dict[str, Any]]) -> list[str]:
    """A warning for cells whose central DP noise was larger than the average update it carried."""
    found = central_drowned(cells)
    if not found:
        return []
    shown = ", ".join(f"`{cell}` ({ratio:.2g})" for cell, ratio in found)
    return [f"> **Central DP noise drowned the model** in {len(found)} cell(s): {shown} (lowest ratio of the "
            "clipped average update's norm to the expected noise norm; below 1 the released model is mostly "
            "noise, and accuracy there says little about the method). Workspace-level central DP needs many "
            "workspaces per round; see docs/experiments.md.", ""]


def _violations(cells: list[dict[str, Any]]) -> list[str]:
    """A loud banner for every cell whose empirical ε lower bound exceeds its claimed ε."""
    lines = []
    for cell in cells:
        audit = cell.get("audit")
        if audit and audit["violation"]:
            confidence = audit["one_run"]["confidence"]
            lines += [f"> **PRIVACY AUDIT FAILED — a bug, or a {1 - confidence:.0%} chance; rerun to tell.** Cell "
                      f"`{cell['cell']['id']}`: the one-run empirical lower bound ε ≥ "
                      f"{audit['one_run']['epsilon_lower_bound']:.3f} at {confidence:.0%} confidence exceeds the "
                      f"claimed ε = {figure(audit['claimed_epsilon'])} ({audit['claimed_basis']}). Either the mechanism "
                      f"or its accounting is wrong, or this is the {1 - confidence:.0%} chance per cell that a "
                      f"correct claim is exceeded; rerun the cell with another seed (a bug tends to repeat, chance "
                      f"rarely does). Until then, trust no ε of this run.", ""]
    return lines


def _baselines_section(cells: list[dict[str, Any]], groups: list[Group]) -> list[str]:
    """Per dataset, a table over (DP mode, target ε): the federated model beside each baseline the cells recorded,
    loss and accuracy, mean ± sd over seeds."""
    recorded = [b for b in BASELINES if any(b in g.baselines for g in groups)]
    if not recorded:
        return []
    described = {
        "alone": "**alone**: each workspace trained with no other, at the cell's settings (rounds, local steps, q, "
                 "noise, DP mode, seed) and so at the same ε, on a copy of its cell copy with the same node secret "
                 "(the same held-out split) and a fresh ledger; node-local figures from its own audit log.",
        "unigram": "**unigram**, **bigram**: byte n-gram models (unigram add-one smoothed, bigram smoothed towards "
                   "the unigram; `federated/tasks/ngram.py`) fitted on the workspace's "
                   "training split and scored on its held-out split by the sweep, which holds the data; no DP, "
                   "nothing leaves the machine.",
        "majority": "**majority**: always the held-out split's majority class, as each node logged it (accuracy "
                    "only).",
    }
    lines = [
        "", "## Baselines", "",
        "Every figure is on the same text: each consenting workspace's held-out split of the cell's copy (keyed by "
        "its node secret), after the last round, held-out-weighted over workspaces; mean ± sample sd over seeds"
        f"{_loss_unit(cells)}. **initial**: the model every cell starts from (round 0: a fresh model, or the public "
        "checkpoint `init-model` names), before it has seen any workspace's data; what training adds is the gap "
        "between it and the others. **federated**: the global model (node-local figures read from the workspaces' "
        "audit logs). " + " ".join(text for name, text in described.items() if name in recorded)
        + ("" if "alone" in recorded else " (No alone runs: add `baselines = ['alone']` to the sweep file.)"),
    ]
    names = ["initial", "federated", *recorded]
    header = " | ".join(f"{n} {m}" for n in names for m in ("loss", "accuracy") if n != "majority" or m == "accuracy")
    for dataset in sorted({g.dataset for g in groups}):
        lines += ["", f"### {dataset}", "", f"| DP mode | target ε | seeds | {header} |",
                  "|---|---|---|" + "---|" * header.count(" | ") + "---|"]
        for g in (g for g in groups if g.dataset == dataset):
            row = " | ".join(mean_sd(g.values(n, m)) for n in names for m in ("loss", "accuracy")
                             if n != "majority" or m == "accuracy")
            lines.append(f"| {g.dp_mode} | {figure(g.target_epsilon)} | {len(g.accuracies)} | {row} |")
    return lines


def _alone_time(cells: list[dict[str, Any]]) -> str:
    seconds = [(c.get("baselines") or {}).get("alone_seconds") for c in cells]
    return f", their alone baselines for {sum(filter(None, seconds)):.0f} s more" if any(seconds) else ""


def _loss_unit(cells: list[dict[str, Any]]) -> str:
    tasks = {c["run_config"].get("task", "nextchar") for c in cells}
    unit = LOSS_UNITS.get(next(iter(tasks))) if len(tasks) == 1 else None
    return f"; loss in {unit}" if unit else ""


def _audit_section(cells: list[dict[str, Any]]) -> list[str]:
    """Per cell: claimed ε for one canary, the one-run lower bound, and each exposure canary's exposure."""
    audited = [c for c in cells if c.get("audit")]
    if not audited:
        return []
    first = audited[0]["audit"]
    copies = [e["copies"] for e in first["exposure"]]
    methods = sorted({e["method"] for c in audited for e in c["audit"]["exposure"]})
    lines = [
        "", "## Empirical privacy audit (canaries)", "",
        f"Canaries were injected in memory only (never into workspace files). Exposure canaries: format "
        f"`{first['format']}`, |R| = {first['space_size']:,} candidates ({', '.join(methods)}), one secret per copy "
        f"count, all in workspace `{first['exposure_workspace']}`; measured on the global model as workspace "
        f"`{first['receiver']}` received it after the last round. Exposure = log2|R| − log2(rank); chance (a "
        f"random rank) is {first['chance_exposure']:.2f} bits, the maximum {math.log2(first['space_size']):.2f}. "
        "One-run audit (Steinke, Nasr, Jagielski 2023): m canaries each included by a fair coin, r guesses from "
        "the drop in log-perplexity since the initial model, v correct, lower bound at the stated confidence and "
        "δ. Claimed ε: for adding or removing one canary message (local: the canary workspaces' ledger ε; central: "
        "at z/2, since one canary replaces a workspace's update; both: the smaller).",
        "",
        "| cell | DP mode | claimed ε | one-run ε lower bound (v/r of m) | "
        + " | ".join(f"exposure {k}× (bits)" for k in copies) + " | check |",
        "|---|---|---|---|" + "---|" * len(copies) + "---|",
    ]
    for cell in audited:
        audit, one_run = cell["audit"], cell["audit"]["one_run"]
        bound = "—" if one_run is None else (f"{one_run['epsilon_lower_bound']:.3f} ({one_run['correct']}/"
                                             f"{one_run['guesses']} of {one_run['canaries']}, "
                                             f"{one_run['confidence']:.0%})")
        check = "**FAILED (bug or chance)**" if audit["violation"] else ("bound ≤ claim" if one_run else "—")
        lines.append(f"| {cell['cell']['id']} | {cell['cell']['dp_mode']} | {figure(audit['claimed_epsilon'])} | "
                     f"{bound} | " + " | ".join(f"{e['bits']:.2f}" for e in audit["exposure"]) + f" | {check} |")
    return lines


def _cell_row(cell: dict[str, Any]) -> str:
    c, ws, central = cell["cell"], cell["workspaces"], cell["central"]
    noises = [w["noise_multiplier"] for w in ws]
    rates = [w["sample_rate"] for w in ws]
    steps = sorted({w["steps_run"] for w in ws})
    samples = [w.get("training_samples", 0) for w in ws]
    local = (f"z {min(noises):.3f}..{max(noises):.3f}, q {min(rates):.4f}..{max(rates):.4f}, "
             f"steps {'/'.join(map(str, steps))}, N {min(samples)}..{max(samples)}")
    unit = _unit(cell)
    mechanism = {"none": "no DP", "local": f"DP-SGD, Poisson (amplified), per {unit}",
                 "central": "DP-FedAvg, fixed cohort (q = 1), per workspace",
                 "both": f"DP-SGD per {unit} + DP-FedAvg per workspace"}[c["dp_mode"]]
    if cell.get("opted_out"):
        mechanism += f"; held opted out: {', '.join(cell['opted_out'])}"
    central_text = "—" if central is None else (f"z {central['noise_multiplier']:.3f}, C {central['clipping_norm']:g}, "
                                                f"{central['releases']}")
    central_eps = "—" if central is None else figure(cell["epsilon"]["central"])
    return (f"| {c['id']} | {mechanism} | {local} | {central_text} | {figure(cell['epsilon']['local'])} | "
            f"{central_eps} | {_number(cell['rounds'][-1]['eval_loss'])} | "
            f"{_number(cell['rounds'][-1]['eval_accuracy'])} | {cell['seconds']:.0f} |")


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def _rates(cells: list[dict[str, Any]]) -> str:
    """The sampling rate(s) the cells ran with, from their run configs."""
    rates = sorted({float(c["run_config"]["sample-rate"]) for c in cells if "sample-rate" in c["run_config"]})
    return ", ".join(format(q, "g") for q in rates) or "?"


def _text(value: float) -> str | float:
    return "inf" if math.isinf(value) else value


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
