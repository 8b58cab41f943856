"""Shared helpers of the benchmark scripts: interleaved timing, paired ratios, profiles, tables.

The machine the benchmarks run on is shared and noisy, so no script reports an absolute target:
every figure is a ratio of two measurements taken side by side in one process (or one run), in
interleaved order (A, B, A, B, ...). The headline (and the target check) is the median over
repetitions of the per-repetition ratio; the ratio of each side's fastest repetition is printed
next to it (the cost of each when the machine left it alone). Absolute seconds are for context.

Every benchmark is a one-command Typer app (``bench_app``), run as ``python -m experiments.bench.<name>``; the
options several benchmarks share are the ``Annotated`` types below, each benchmark giving its own default.
"""

from __future__ import annotations

import cProfile
import io
import logging
import pstats
import re
import shutil
import statistics
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import click
import torch
import typer
from typer.core import TyperCommand

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


Repeats = Annotated[int, typer.Option(min=1, help="Interleaved repetitions per side.")]
Seed = Annotated[int, typer.Option(help="Seed of the data, model and sampling.")]
Threads = Annotated[int | None, typer.Option(
    min=1, help=f"Torch intra-op threads (default: torch's choice, {torch.get_num_threads()} here).")]
Workspaces = Annotated[int, typer.Option(help="Workspaces, all consenting.")]
Messages = Annotated[tuple[int, int], typer.Option(metavar="MIN MAX", help="Messages per workspace.")]
LocalSteps = Annotated[int, typer.Option(help="DP-SGD steps per node in a round.")]
SampleRate = Annotated[float, typer.Option(help="Public Poisson sampling rate.")]
BatchSize = Annotated[int, typer.Option(help="Public normalizer of the noisy gradient sum.")]


class BenchCommand(TyperCommand):
    """A benchmark's command: a list option takes one or more values after one flag (``--sizes 100 1000``, the
    spelling BENCHMARKS.md uses), as well as one value per flag (``--sizes 100 --sizes 1000``, click's own)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        flags = {flag for param in self.params if isinstance(param, click.Option) and param.multiple
                 for flag in param.opts}
        return super().parse_args(ctx, spread_values(args, flags))


def spread_values(args: Sequence[str], flags: Collection[str]) -> list[str]:
    """``args`` with every further value after a flag in ``flags`` given a copy of that flag.

    A value is any argument that does not look like an option (a negative number is a value); ``--`` ends
    the rewriting. ``--sizes 10 100 --seed 1`` becomes ``--sizes 10 --sizes 100 --seed 1``.
    """
    out: list[str] = []
    flag: str | None = None  # the list flag whose values are being read
    first = False  # the flag was just given alone: its first value follows
    for index, arg in enumerate(args):
        if arg == "--":
            return out + list(args[index:])
        if first:
            out.append(arg)
            first = False
        elif flag is not None and not _is_option(arg):
            out += [flag, arg]
        else:
            out.append(arg)
            name, joined, _ = arg.partition("=")
            flag = name if name in flags else None
            first = flag is not None and not joined
    return out


def _is_option(arg: str) -> bool:
    """Whether ``arg`` is a flag rather than a value (``-5`` and ``-1e-3`` are values)."""
    if not arg.startswith("-"):
        return False
    try:
        float(arg)
    except ValueError:
        return True
    return False


def bench_app(main: Callable[..., None], doc: str | None = None) -> typer.Typer:
    """A benchmark's Typer app: ``main`` as its only command; its ``--help`` (or ``-h``) shows the first
    paragraph of ``doc`` (the module docstring) when given, else ``main``'s docstring."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False,
                      context_settings={"help_option_names": ["-h", "--help"]})
    app.command(cls=BenchCommand, help=doc.split("\n\n")[0] if doc else None)(main)
    return app


def apply_threads(threads: int | None) -> None:
    if threads is not None:
        torch.set_num_threads(threads)


def header(title: str, what: str) -> str:
    """The lines every benchmark prints first: what it measures, and on which machine state."""
    return (f"# {title}\n{what}\n"
            f"torch {torch.__version__}, {torch.get_num_threads()} intra-op thread(s)\n")
