"""Drawing a sweep's figure against target ε: one panel per (dataset, DP mode), seeds as bands, baselines as lines.

Only drawing: the report (``experiments.research.report``) decides what each panel holds. The ε axis is
logarithmic over the finite targets; no DP (ε = ∞) is its own point at the right, labelled ∞, not joined to the
finite ones (it is not on the same scale).
"""

from __future__ import annotations

import math
import statistics
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

CURVE_STYLES = {"federated": ("C0", "o"), "alone": ("C1", "s")}
LEVEL_STYLES = {"unigram": "C2", "bigram": "C3", "majority": "C4"}


@dataclass(frozen=True)
class Panel:
    """One panel: per curve (``federated``, ``alone``) and target ε, the value of each seed; per workspace and
    target, the federated model's value on that workspace for each seed; per level baseline (``unigram``,
    ``bigram``, ``majority``), the values of every cell, drawn as one horizontal line at their mean."""

    title: str
    curves: dict[str, dict[float, list[float]]]
    workspaces: dict[str, dict[float, list[float]]] = field(default_factory=dict)
    levels: dict[str, list[float]] = field(default_factory=dict)


def plot_vs_epsilon(panels: list[list[Panel]], ylabel: str, title: str, path: Path) -> Path:
    """``panels`` (rows of panels) against target ε, saved to ``path``: each curve's mean over seeds with a
    min..max band, thin lines for the workspaces (mean over seeds), dashed horizontal lines for the levels."""
    targets = {t for row in panels for p in row for c in p.curves.values() for t in c}
    finite = sorted(t for t in targets if math.isfinite(t))
    infinity_x = max(finite) * 2.5 if finite else 1.0
    columns = max(len(row) for row in panels)
    fig, axes = plt.subplots(len(panels), columns, figsize=(6.5 * columns, 4.6 * len(panels)), squeeze=False)
    for row, axes_row in zip(panels, axes):
        for panel, ax in zip(row, axes_row):
            _draw(ax, panel, infinity_x)
            ticks = [*finite, *([infinity_x] if math.inf in targets else [])]
            ax.set_xscale("log")
            ax.set_xticks(ticks, [*(format(e, "g") for e in finite), "∞ (no DP)"][:len(ticks)])
            ax.minorticks_off()
            ax.set(xlabel="target ε (δ fixed; local: per message, central: per workspace)", ylabel=ylabel,
                   title="\n".join(textwrap.fill(line, 60) for line in panel.title.splitlines()))
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        for ax in axes_row[len(row):]:
            ax.set_visible(False)
    fig.suptitle(textwrap.fill(title, 75 * columns), fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _draw(ax: plt.Axes, panel: Panel, infinity_x: float) -> None:
    for i, values in enumerate(panel.workspaces.values()):
        label = "federated, per workspace (mean over seeds)" if i == 0 else None
        xs, means = _means({t: v for t, v in values.items() if math.isfinite(t)}, infinity_x)
        ax.plot(xs, means, color="C0", linewidth=0.7, alpha=0.35, label=label)
        if math.inf in values:
            ax.plot([infinity_x], [statistics.fmean(values[math.inf])], ".", color="C0", alpha=0.35,
                    label=None if xs else label)
    for name, by_target in panel.curves.items():
        color, marker = CURVE_STYLES.get(name, ("C5", "^"))
        finite = {t: v for t, v in by_target.items() if math.isfinite(t)}
        if finite:
            xs, means = _means(finite, infinity_x)
            ax.plot(xs, means, marker=marker, color=color, label=f"{name} (mean over seeds)")
            ax.fill_between(xs, [min(finite[t]) for t in sorted(finite)], [max(finite[t]) for t in sorted(finite)],
                            color=color, alpha=0.15)
        if math.inf in by_target:
            values = by_target[math.inf]
            mean = statistics.fmean(values)
            ax.errorbar([infinity_x], [mean], yerr=[[mean - min(values)], [max(values) - mean]], fmt=marker,
                        color=color, markersize=8, capsize=4, markeredgecolor="k",
                        label=None if finite else f"{name} (mean over seeds)")
    for name, values in panel.levels.items():
        if values:
            ax.axhline(statistics.fmean(values), color=LEVEL_STYLES.get(name, "C7"), linestyle="--", linewidth=1.2,
                       label=f"{name} (mean over cells)")


def _means(by_target: dict[float, list[float]], infinity_x: float) -> tuple[list[float], list[float]]:
    targets = sorted(by_target)
    return [t if math.isfinite(t) else infinity_x for t in targets], [statistics.fmean(by_target[t]) for t in targets]
