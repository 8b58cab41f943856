"""A privacy-budget sweep's configuration, read from TOML, and the grid of cells it describes.

A cell is one federated run: (dataset, DP mode, target ε, seed). Target ε = ``inf`` means no DP
(one ``none`` cell per dataset and seed, whatever ``dp-modes`` says); every finite target runs once
per DP mode in ``dp-modes``:

- ``local``: DP-SGD on each workspace, calibrated per workspace to the target (message-level);
- ``central``: workspace-level DP-FedAvg on the server, calibrated to the target, no local noise;
- ``both``: the two mechanisms, each calibrated to the target on its own neighbouring relation.

Everything that does not need the data is checked here, before any data is generated; δ < 1/N
needs the workspaces' sizes and is checked when the cells are prepared (``experiments.research.sweep_cells``),
still before any training. An error is a ``ConfigError`` naming the file, the key, the value given
and what was expected. ``experiments/configs/sweep_default.toml`` is a commented example;
docs/experiments.md lists every key.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, NoReturn

from experiments.research.canary_audit import ONE_RUN_FORMAT, AuditSpec
from federated.config import RunConfig
from federated.data import PARTITIONS, irc_corpus_dir, resolve_data_root
from federated.errors import ConfigError, DataError
from federated.privacy.accounting import ACCOUNTANTS
from federated.privacy.canaries import CanaryFormat

FINITE_MODES = ("local", "central", "both")
RUN_MODES = ("inprocess", "flower-sim")
PER_CELL_KEYS = ("noise-multiplier", "seed", "workspaces-root", "results-dir", "dp-mode", "min-available-nodes",
                 "central-noise-multiplier", "central-clipping-norm", "central-delta")
"""RunConfig keys the sweep sets for each cell; ``[run]`` may not set them."""


@dataclass(frozen=True)
class SyntheticDataset:
    """Built-in synthetic workspaces (``federated.data.synthetic``); every workspace consents."""

    name: str
    num_workspaces: int = 4
    min_messages: int = 200
    max_messages: int = 400
    seed: int = 0
    kind: str = "synthetic"


@dataclass(frozen=True)
class IrcDataset:
    """IRC Disentanglement workspaces (``federated.data.build_irc_workspaces``); every workspace consents.

    ``path`` is the data root holding ``irc-disentanglement/`` (relative paths are relative to the
    sweep file; without it, ``$OPTIN_DATA`` or ``../shared/data`` beside the repository);
    ``partitions`` picks workspaces by name (empty: all); ``max_lines`` caps each one.
    """

    name: str
    path: Path
    partitions: tuple[str, ...] = ()
    max_lines: int | None = None
    kind: str = "irc"


Dataset = SyntheticDataset | IrcDataset


@dataclass(frozen=True)
class Cell:
    """One run of the grid."""

    dataset: str
    dp_mode: str
    target_epsilon: float
    seed: int

    @property
    def id(self) -> str:
        """A folder name: ``<dataset>-<mode>-eps<ε>-seed<seed>``."""
        return f"{self.dataset}-{self.dp_mode}-eps{format_epsilon(self.target_epsilon)}-seed{self.seed}"


@dataclass(frozen=True)
class SweepConfig:
    """What a sweep file says, validated."""

    source: Path
    name: str
    target_epsilons: tuple[float, ...]
    seeds: tuple[int, ...]
    dp_modes: tuple[str, ...]
    delta: float
    accountant: str
    run_mode: str
    central_clipping_norm: float
    datasets: tuple[Dataset, ...]
    run: RunConfig
    """The settings every cell shares (``[run]``); the per-cell keys are filled in for each cell."""
    audit: AuditSpec | None = None
    """The canary audit every cell runs (``[audit]``); ``None``: no audit."""

    def cells(self) -> list[Cell]:
        """The grid, in a stable order: dataset, then DP mode, then target ε (large to small), then seed."""
        cells = []
        for dataset in self.datasets:
            targets = sorted(self.target_epsilons, reverse=True)
            if math.inf in targets:
                cells += [Cell(dataset.name, "none", math.inf, seed) for seed in self.seeds]
            for mode in self.dp_modes:
                cells += [Cell(dataset.name, mode, eps, seed) for eps in targets if eps != math.inf
                          for seed in self.seeds]
        return cells

    def dataset(self, name: str) -> Dataset:
        return next(d for d in self.datasets if d.name == name)


def format_epsilon(value: float) -> str:
    """``inf`` for no DP, else the shortest exact form (8, 0.5)."""
    return "inf" if math.isinf(value) else format(value, "g")


def load_sweep(path: Path, audit: bool = False) -> SweepConfig:
    """Read and validate a sweep file; ``ConfigError`` names the file, the key, the value and the expectation.

    With ``audit``, a file without an ``[audit]`` table gets the default canary audit.
    """
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: sweep file not found") from exc
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable TOML file ({exc})") from exc
    if audit:
        raw.setdefault("audit", {})
    return parse_sweep(raw, Path(path))


def parse_sweep(raw: dict[str, Any], source: Path) -> SweepConfig:
    """Validate a parsed sweep table read from ``source``."""
    check = _Checker(source)
    check.keys(raw, "", {"name", "target-epsilons", "seeds", "dp-modes", "delta", "accountant", "run-mode",
                         "run", "central", "datasets", "audit"})
    name = check.get(raw, "name", "a name of letters, digits, '-' and '_'", _is_name, "sweep")
    targets = check.get(raw, "target-epsilons", "a non-empty list of distinct numbers > 0 (inf: no DP)",
                        lambda v: _is_list(v, lambda e: _is_number(e) and e > 0), None, required=True)
    seeds = check.get(raw, "seeds", "a non-empty list of distinct integers >= 0",
                      lambda v: _is_list(v, lambda s: _is_int(s) and s >= 0), [0])
    finite = [float(e) for e in targets if not math.isinf(e)]
    modes = check.get(raw, "dp-modes", f"a non-empty list of distinct modes from {list(FINITE_MODES)} "
                                       "(no DP is target-epsilons = inf)",
                      lambda v: _is_list(v, lambda m: m in FINITE_MODES), ["local"])
    delta = check.get(raw, "delta", "a number in (0, 1)", lambda v: _is_number(v) and 0 < v < 1, 1e-5)
    accountant = check.get(raw, "accountant", f"one of {sorted(ACCOUNTANTS)}", lambda v: v in ACCOUNTANTS, "rdp")
    run_mode = check.get(raw, "run-mode", f"one of {list(RUN_MODES)}", lambda v: v in RUN_MODES, "inprocess")
    central = check.table(raw, "central")
    check.keys(central, "central.", {"clipping-norm"})
    clip = check.get(central, "clipping-norm", "a number > 0", lambda v: _is_number(v) and v > 0, 1.0,
                     prefix="central.")
    run = _run_config(check, check.table(raw, "run"))
    raw_datasets = raw.get("datasets")
    if not isinstance(raw_datasets, list) or not raw_datasets or not all(isinstance(d, dict) for d in raw_datasets):
        check.fail("datasets", raw_datasets, "one or more [[datasets]] tables")
    datasets = tuple(_dataset(check, d, i) for i, d in enumerate(raw_datasets))
    names = [d.name for d in datasets]
    if len(set(names)) != len(names):
        check.fail("datasets", names, "distinct dataset names (set 'name' on each [[datasets]] table)")
    audit = parse_audit(check, raw["audit"], run) if "audit" in raw else None
    if audit is not None and run_mode != "inprocess":
        check.fail("run-mode", run_mode, "'inprocess' with an [audit] table (canaries are injected in memory into "
                                         "in-process nodes)")
    return SweepConfig(source=source, name=name, target_epsilons=tuple(sorted({float(e) for e in targets},
                                                                              reverse=True)),
                       seeds=tuple(seeds), dp_modes=tuple(modes) if finite else (), delta=float(delta),
                       accountant=accountant, run_mode=run_mode, central_clipping_norm=float(clip),
                       datasets=datasets, run=run, audit=audit)


def parse_audit(check: _Checker, table: Any, run: RunConfig) -> AuditSpec:
    """The ``[audit]`` table; every key is optional (``AuditSpec``'s defaults)."""
    if not isinstance(table, dict):
        check.fail("audit", table, "a table")
    default = AuditSpec()
    fmt = default.canary_format
    check.keys(table, "audit.", {"workspace", "template", "alphabet", "length", "separator", "repeats", "exact-limit",
                                 "samples", "one-run-canaries", "guesses", "confidence"})

    def get(key: str, expected: str, valid: Any, value: Any) -> Any:
        return check.get(table, key, expected, valid, value, prefix="audit.")

    def count(minimum: int) -> Any:
        return lambda v: _is_int(v) and v >= minimum

    text = get("template", "a string with exactly one '{}' and no other braces",
               lambda v: isinstance(v, str) and v.count("{}") == 1 and "{" not in v.replace("{}", "", 1), fmt.template)
    alphabet = get("alphabet", "a string of at least 2 distinct characters",
                   lambda v: isinstance(v, str) and len(v) >= 2 and len(set(v)) == len(v), fmt.alphabet)
    length = get("length", "an integer >= 1", count(1), fmt.length)
    separator = get("separator", "a string", lambda v: isinstance(v, str), fmt.separator)
    canary_format = CanaryFormat(text, alphabet, length, separator)
    repeats = get("repeats", "a non-empty list of distinct integers >= 1 (copies of each exposure canary)",
                  lambda v: _is_list(v, count(1)), list(default.repeats))
    if len(repeats) > canary_format.space_size:
        check.fail("audit.repeats", repeats, f"at most {canary_format.space_size} canaries (the format's space)")
    one_run = get("one-run-canaries", "0 (no one-run audit) or an integer >= 2",
                  lambda v: _is_int(v) and (v == 0 or v >= 2), default.one_run_canaries)
    guesses = get("guesses", f"an even integer from 2 to one-run-canaries ({one_run})",
                  lambda v: _is_int(v) and v % 2 == 0 and 2 <= v <= one_run,
                  min(default.guesses, one_run - one_run % 2))
    for fmt_ in (canary_format, ONE_RUN_FORMAT if one_run else None):
        if fmt_ is not None and len(fmt_.text([0] * fmt_.length).encode("utf-8")) > run.seq_len:
            check.fail("audit.template", fmt_.template, f"canaries of at most seq-len = {run.seq_len} bytes, got "
                                                        f"{fmt_.text([0] * fmt_.length)!r}")
    return AuditSpec(
        workspace=get("workspace", "an integer >= 0 (index of the workspace holding the exposure canaries)",
                      count(0), default.workspace),
        canary_format=canary_format, repeats=tuple(repeats),
        exact_limit=get("exact-limit", "an integer >= 1", count(1), default.exact_limit),
        samples=get("samples", "an integer >= 100", count(100), default.samples),
        one_run_canaries=one_run, guesses=guesses,
        confidence=get("confidence", "a number in (0, 1)", lambda v: _is_number(v) and 0 < v < 1,
                       default.confidence))


class _Checker:
    """Typed look-ups in a parsed TOML table that fail with the file, the key, the value and the expectation."""

    def __init__(self, source: Path) -> None:
        self.source = source

    def fail(self, key: str, value: Any, expected: str) -> NoReturn:
        raise ConfigError(f"{self.source}: key {key!r}: expected {expected}, got {value!r}")

    def keys(self, table: dict[str, Any], prefix: str, allowed: set[str]) -> None:
        unknown = sorted(set(table) - allowed)
        if unknown:
            raise ConfigError(f"{self.source}: unknown key {prefix + unknown[0]!r}; expected one of "
                              f"{sorted(prefix + k for k in allowed)}")

    def get(self, table: dict[str, Any], key: str, expected: str, valid: Any, default: Any, *,
            required: bool = False, prefix: str = "") -> Any:
        if key not in table:
            if required:
                self.fail(prefix + key, None, expected)
            return default
        if not valid(table[key]):
            self.fail(prefix + key, table[key], expected)
        return table[key]

    def table(self, raw: dict[str, Any], key: str) -> dict[str, Any]:
        value = raw.get(key, {})
        if not isinstance(value, dict):
            self.fail(key, value, "a table")
        return value


def _run_config(check: _Checker, table: dict[str, Any]) -> RunConfig:
    for key in PER_CELL_KEYS:
        if key in table:
            check.fail(f"run.{key}", table[key], "no value here: the sweep sets it for each cell "
                                                 "(target-epsilons, seeds, dp-modes, [central])")
    try:
        return RunConfig.from_mapping(table, source=f"{check.source} [run]")
    except ConfigError as exc:
        message = str(exc)
        raise ConfigError(message if message.startswith(str(check.source)) else f"{check.source} [run]: {message}")


def _dataset(check: _Checker, raw: dict[str, Any], index: int) -> Dataset:
    prefix = f"datasets[{index}]."
    kind = raw.get("kind")
    if kind == "synthetic":
        check.keys(raw, prefix, {f.name.replace("_", "-") for f in fields(SyntheticDataset)})
        values = {key: check.get(raw, key, "an integer >= 1", lambda v: _is_int(v) and v >= 1, default,
                                 prefix=prefix)
                  for key, default in (("num-workspaces", 4), ("min-messages", 200), ("max-messages", 400))}
        seed = check.get(raw, "seed", "an integer >= 0", lambda v: _is_int(v) and v >= 0, 0, prefix=prefix)
        if values["max-messages"] < values["min-messages"]:
            check.fail(prefix + "max-messages", values["max-messages"],
                       f"at least min-messages ({values['min-messages']})")
        name = check.get(raw, "name", "a name of letters, digits, '-' and '_'", _is_name, "synthetic", prefix=prefix)
        return SyntheticDataset(name=name, seed=seed, num_workspaces=values["num-workspaces"],
                                min_messages=values["min-messages"], max_messages=values["max-messages"])
    if kind == "irc":
        check.keys(raw, prefix, {f.name.replace("_", "-") for f in fields(IrcDataset)})
        text = check.get(raw, "path", "the data root holding irc-disentanglement/ (a folder)",
                         lambda v: isinstance(v, str) and v != "", None, prefix=prefix)
        path = resolve_data_root() if text is None else (check.source.parent / text).resolve()
        try:
            irc_corpus_dir(path)
        except DataError as exc:
            check.fail(prefix + "path", text, f"a data root holding irc-disentanglement/data ({exc})")
        known = [p.name for p in PARTITIONS]
        partitions = check.get(raw, "partitions", f"a list of distinct workspace names from {known}",
                               lambda v: _is_list(v, lambda p: p in known), [], prefix=prefix)
        max_lines = check.get(raw, "max-lines", "an integer >= 1", lambda v: _is_int(v) and v >= 1, None,
                              prefix=prefix)
        name = check.get(raw, "name", "a name of letters, digits, '-' and '_'", _is_name, "irc", prefix=prefix)
        return IrcDataset(name=name, path=path, partitions=tuple(partitions), max_lines=max_lines)
    check.fail(prefix + "kind", kind, "'synthetic' or 'irc'")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_name(value: Any) -> bool:
    return isinstance(value, str) and value != "" and all(c.isalnum() or c in "-_" for c in value)


def _is_list(value: Any, valid: Any) -> bool:
    return (isinstance(value, list) and len(value) > 0 and all(valid(v) for v in value)
            and len(set(value)) == len(value))
