"""Shared helpers of the benchmark scripts: interleaved timing, paired ratios, profiles, tables.

The machine the benchmarks run on is shared and noisy, so no script reports an absolute target:
every figure is a ratio of two measurements taken side by side in one process (or one run), in
interleaved order (A, B, A, B, ...). The headline (and the target check) is the median over
repetitions of the per-repetition ratio; the ratio of each side's fastest repetition is printed
next to it (the cost of each when the machine left it alone). Absolute seconds are for context.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import logging
import pstats
import re
import shutil
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
PROFILE_PATTERN = r"/(clients|federated|server|experiments)/|opacus|flwr|sqlite|json|fsync|torch/(autograd|optim)"
"""Which cProfile entries a profile shows: Optin's code and the libraries it spends time in."""


@dataclass(frozen=True)
class Paired:
    """Repeated measurements of two sides taken in alternation, and their per-repetition ratios."""

    numerator: list[float]
    denominator: list[float]

    @property
    def ratios(self) -> list[float]:
        return [a / b for a, b in zip(self.numerator, self.denominator)]

    @property
    def ratio(self) -> float:
        """Median of the per-repetition ratios (robust to a repetition disturbed by other load)."""
        return statistics.median(self.ratios)

    @property
    def best_ratio(self) -> float:
        """Ratio of the fastest repetitions of each side: the cost of each when nothing else ran."""
        return min(self.numerator) / min(self.denominator)

    def describe(self) -> str:
        return f"{self.ratio:.2f}x median, {self.best_ratio:.2f}x best (n={len(self.ratios)})"


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def interleaved(sides: Mapping[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Run each side once per repetition, rotating which goes first; each side returns its own duration.

    A side times itself (so its untimed preparation can differ from the others'); the rotation keeps a
    slow spell of the machine from always hitting the same side.
    """
    names = list(sides)
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(repeats):
        order = names[rep % len(names):] + names[:rep % len(names)]
        for name in order:
            times[name].append(sides[name]())
    return times


def timed(fn: Callable[[], object]) -> float:
    """Seconds ``fn`` takes (wall clock, ``time.perf_counter``)."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def profile_top(fn: Callable[[], object], limit: int = 25, sort: str = "cumulative",
                pattern: str = PROFILE_PATTERN) -> str:
    """cProfile's top ``limit`` entries (by ``sort``) of one call of ``fn`` whose path matches ``pattern``.

    Paths are shown relative to the repository or to ``site-packages``.
    """
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        fn()
    finally:
        profiler.disable()
    return profile_report(profiler, limit, sort, pattern)


def profile_report(profiler: cProfile.Profile, limit: int = 25, sort: str = "cumulative",
                   pattern: str = PROFILE_PATTERN) -> str:
    """cProfile's top ``limit`` entries (by ``sort``) of what ``profiler`` recorded, as ``profile_top`` shows them."""
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats(sort).print_stats(pattern, limit)
    text = out.getvalue()
    text = text[text.find("   ncalls"):] if "   ncalls" in text else text
    return re.sub(r"\S*/site-packages/|" + re.escape(str(REPO)) + "/", "", text).rstrip()


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table (pastes into BENCHMARKS.md as is)."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |"
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in cells]
    return "\n".join([line, rule, *body])


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def copy_workspaces(folders: Sequence[Path], destination: Path) -> list[Path]:
    """Fresh copies of ``folders`` under ``destination`` (their ledgers and audit logs included)."""
    if destination.exists():
        shutil.rmtree(destination)
    destination.mkdir(parents=True)
    return [Path(shutil.copytree(folder, destination / folder.name)) for folder in folders]


@contextmanager
def quiet_logging() -> Iterator[None]:
    """Silence Flower's and Optin's INFO logs (they would dominate the output and cost time)."""
    loggers = [logging.getLogger(name) for name in ("flwr", "optin")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def parser(description: str, repeats: int = 3) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark has."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=repeats, help="interleaved repetitions per side (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data, model and sampling (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None,
                   help=f"torch intra-op threads (default: torch's choice, {torch.get_num_threads()} here)")
    return p


def apply_threads(threads: int | None) -> None:
    if threads is not None:
        torch.set_num_threads(threads)


def header(title: str, what: str) -> str:
    """The lines every benchmark prints first: what it measures, and on which machine state."""
    return (f"# {title}\n{what}\n"
            f"torch {torch.__version__}, {torch.get_num_threads()} intra-op thread(s)\n")
