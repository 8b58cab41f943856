"""A privacy-budget sweep's configuration, read from TOML, and the grid of cells it describes.

A cell is one federated run: (dataset, DP mode, privacy unit, target ε, seed). Target ε = ``inf`` means no DP
(one ``none`` cell per dataset and seed, whatever ``dp-modes`` says); every finite target runs once
per DP mode in ``dp-modes``:

- ``local``: DP-SGD on each workspace, calibrated per workspace to the target (message-level);
- ``central``: workspace-level DP-FedAvg on the server, calibrated to the target, no local noise;
- ``both``: the two mechanisms, each calibrated to the target on its own neighbouring relation.

Each cell runs once per privacy unit in ``privacy-units``: ``message`` (one DP sample per message) or
``member`` (one DP sample per member, at most ``max-messages-per-member`` of their messages).

Everything that does not need the data is checked here, before any data is generated; δ < 1/N
needs the workspaces' sizes and is checked when the cells are prepared (``experiments.research.sweep_cells``),
still before any training. An error is a ``ConfigError`` naming the file, the key, the value given
and what was expected
(``experiments.research.config_models``: each table is a pydantic model). ``experiments/configs/sweep_default.toml`` is a commented example;
docs/experiments.md lists every key.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn

from pydantic import AfterValidator, Field, ValidationInfo, field_validator, model_validator

from experiments.research.canary_audit import ONE_RUN_FORMAT, AuditSpec
from experiments.research.config_models import TableModel, distinct, is_number, key_error, validate_table
from experiments.research.folder_dataset import workspace_data
from federated.config import RunConfig
from federated.data import PARTITIONS, irc_corpus_dir, resolve_data_root
from federated.errors import ConfigError, DataError
from federated.privacy.accounting import ACCOUNTANTS
from federated.privacy.canaries import CanaryFormat
from federated.privacy.policy import PRIVACY_UNITS
from federated.tasks import TextScorer, get_task

FINITE_MODES = ("local", "central", "both")
RUN_MODES = ("inprocess", "flower-sim")
BASELINES = ("alone",)
"""Optional baselines a sweep runs per cell (``baselines``); the n-gram ones are always computed."""
PER_CELL_KEYS = ("noise-multiplier", "seed", "workspaces-root", "results-dir", "dp-mode", "min-available-nodes",
                 "central-noise-multiplier", "central-clipping-norm", "central-delta")
"""RunConfig keys the sweep sets for each cell; ``[run]`` may not set them."""
NAME = "a name of letters, digits, '-' and '_'"


def _name(value: str) -> str:
    if not (value and all(c.isalnum() or c in "-_" for c in value)):
        raise ValueError(NAME)
    return value


def _positive_distinct(values: list[float]) -> list[float]:
    if not all(is_number(v) and v > 0 for v in values):
        raise ValueError("expected numbers > 0")
    return distinct(values)


def _distinct_or_empty(values: list[str]) -> list[str]:
    return distinct(values) if values else values


def _at_least(minimum: int) -> Any:
    def check(values: list[int]) -> list[int]:
        if not all(v >= minimum for v in values):
            raise ValueError(f"expected integers >= {minimum}")
        return distinct(values)
    return AfterValidator(check)


Name = Annotated[str, AfterValidator(_name)]
OPTED_OUT = ("a list of distinct workspace names of this dataset, held opted out (consent off in every cell); "
             "at least one workspace must stay in")


class _Dataset(TableModel):
    opted_out: list[str] = Field([], description=OPTED_OUT)

    def check_opted_out(self, names: list[str]) -> None:
        """``key_error`` unless every opted-out name is one of ``names`` and at least one other remains."""
        if (self.opted_out and len(set(self.opted_out)) != len(self.opted_out)) \
                or not set(self.opted_out) <= set(names) or len(set(self.opted_out)) >= len(names):
            raise key_error("opted-out", self.opted_out, f"{OPTED_OUT}; its workspaces: {names}")


class SyntheticDataset(_Dataset):
    """Built-in synthetic workspaces (``federated.data.synthetic``); every workspace consents unless opted out."""

    kind: Literal["synthetic"] = "synthetic"
    name: Name = Field("synthetic", description=NAME)
    num_workspaces: int = Field(4, ge=1, description="an integer >= 1")
    min_messages: int = Field(200, ge=1, description="an integer >= 1")
    max_messages: int = Field(400, ge=1, description="an integer >= 1")
    seed: int = Field(0, ge=0, description="an integer >= 0")

    @model_validator(mode="after")
    def _sizes(self) -> SyntheticDataset:
        if self.max_messages < self.min_messages:
            raise key_error("max-messages", self.max_messages, f"at least min-messages ({self.min_messages})")
        return self


class IrcDataset(_Dataset):
    """IRC Disentanglement workspaces (``federated.data.build_irc_workspaces``); all consent unless opted out.

    ``path`` is the data root holding ``irc-disentanglement/`` (relative paths are relative to the
    sweep file; without it, ``$OPTIN_DATA`` or ``../shared/data`` beside the repository);
    ``partitions`` picks workspaces by name (empty: all); ``max_lines`` caps each one.
    """

    kind: Literal["irc"] = "irc"
    name: Name = Field("irc", description=NAME)
    path: Path = Field(default_factory=resolve_data_root,
                       description="the data root holding irc-disentanglement/ (a folder)")
    partitions: list[str] = Field([], description=f"a list of distinct workspace names from "
                                                  f"{[p.name for p in PARTITIONS]}")
    max_lines: int | None = Field(None, ge=1, description="an integer >= 1")

    @field_validator("path", mode="before")
    @classmethod
    def _root(cls, text: Any, info: ValidationInfo) -> Any:
        if not isinstance(text, str) or not text:
            return text
        path = (Path((info.context or {})["source"]).parent / text).resolve()
        try:
            irc_corpus_dir(path)
        except DataError as exc:
            raise key_error("path", text, f"a data root holding irc-disentanglement/data ({exc})") from None
        return path

    @field_validator("partitions")
    @classmethod
    def _partitions(cls, values: list[str]) -> list[str]:
        if not values:
            return values
        if not set(values) <= {p.name for p in PARTITIONS}:
            raise ValueError("unknown partition")
        return distinct(values)

    @model_validator(mode="after")
    def _opted_out(self) -> IrcDataset:
        if "path" not in self.model_fields_set:
            try:
                irc_corpus_dir(self.path)
            except DataError as exc:
                raise key_error("path", None, f"a data root holding irc-disentanglement/data ({exc})") from None
        self.check_opted_out([p.name for p in PARTITIONS if not self.partitions or p.name in self.partitions])
        return self


class FolderDataset(_Dataset):
    """A folder of workspaces (``experiments.research.folder_dataset``): each visible sub-folder is a workspace
    folder (data in ``data/``) or a raw Slack export, IRC manifest or JSONL folder. Only read, never written:
    every cell gets fresh copies of the data. Every workspace consents unless opted out."""

    kind: Literal["folder"] = "folder"
    name: Name = Field("folder", description=NAME)
    path: Path = Field(description="a folder whose sub-folders are workspaces (workspace folders with data/, or "
                                   "Slack exports, IRC manifests or JSONL folders)")

    @field_validator("path", mode="before")
    @classmethod
    def _folder(cls, text: Any, info: ValidationInfo) -> Any:
        if not isinstance(text, str) or not text:
            return text
        path = (Path((info.context or {})["source"]).parent / text).resolve()
        try:
            workspace_data(path)
        except DataError as exc:
            raise key_error("path", text, f"a folder of workspaces in a layout Optin reads ({exc})") from None
        return path

    @model_validator(mode="after")
    def _opted_out(self) -> FolderDataset:
        self.check_opted_out(self.workspaces())
        return self

    def workspaces(self) -> list[str]:
        """The workspace names, sorted."""
        return list(workspace_data(self.path))


Dataset = SyntheticDataset | IrcDataset | FolderDataset
DATASET_KINDS: dict[str, type[_Dataset]] = {"folder": FolderDataset, "synthetic": SyntheticDataset,
                                            "irc": IrcDataset}


class _SweepTable(TableModel):
    """The top-level table of a sweep file (the nested tables are validated on their own)."""

    name: Name = Field("sweep", description=NAME)
    target_epsilons: Annotated[list[float], AfterValidator(_positive_distinct)] = Field(
        description="a non-empty list of distinct numbers > 0 (inf: no DP)")
    seeds: Annotated[list[int], _at_least(0)] = Field([0], description="a non-empty list of distinct integers >= 0")
    dp_modes: Annotated[list[Literal[FINITE_MODES]], AfterValidator(distinct)] = Field(  # type: ignore[valid-type]
        ["local"], description=f"a non-empty list of distinct modes from {list(FINITE_MODES)} "
                               "(no DP is target-epsilons = inf)")
    privacy_units: Annotated[list[Literal[PRIVACY_UNITS]], AfterValidator(distinct)] = Field(  # type: ignore[valid-type]
        ["message"], description=f"a non-empty list of distinct privacy units from {list(PRIVACY_UNITS)}")
    max_messages_per_member: int = Field(8, ge=1, description="an integer >= 1 (messages in one member's DP sample)")
    delta: float = Field(1e-5, gt=0, lt=1, description="a number in (0, 1)")
    accountant: Literal[tuple(sorted(ACCOUNTANTS))] = Field(  # type: ignore[valid-type]
        "rdp", description=f"one of {sorted(ACCOUNTANTS)}")
    run_mode: Literal[RUN_MODES] = Field("inprocess", description=f"one of {list(RUN_MODES)}")  # type: ignore[valid-type]
    baselines: Annotated[list[Literal[BASELINES]], AfterValidator(_distinct_or_empty)] = Field(  # type: ignore[valid-type]
        [], description=f"a list of distinct baselines from {list(BASELINES)} ('alone': each consenting workspace "
                        "trained on its own at the cell's settings)")
    run: dict[str, Any] = Field({}, description="a table")
    central: dict[str, Any] = Field({}, description="a table")
    datasets: list[dict[str, Any]] = Field(min_length=1, description="one or more [[datasets]] tables")
    audit: dict[str, Any] | None = Field(None, description="a table")


class _CentralTable(TableModel):
    clipping_norm: float = Field(1.0, gt=0, description="a number > 0")


class _AuditTable(TableModel):
    """``[audit]``; every key is optional (``AuditSpec``'s defaults)."""

    workspace: int = Field(AuditSpec.workspace, ge=0, description="an integer >= 0 (index of the workspace holding "
                                                                  "the exposure canaries, among those that consent)")
    template: str = Field(CanaryFormat.template, description="a string with exactly one '{}' and no other braces")
    alphabet: str = Field(CanaryFormat.alphabet, description="a string of at least 2 distinct characters")
    length: int = Field(CanaryFormat.length, ge=1, description="an integer >= 1")
    separator: str = Field(CanaryFormat.separator, description="a string")
    repeats: Annotated[list[int], _at_least(1)] = Field(
        list(AuditSpec.repeats), description="a non-empty list of distinct integers >= 1 (copies of each exposure "
                                             "canary)")
    exact_limit: int = Field(AuditSpec.exact_limit, ge=1, description="an integer >= 1")
    samples: int = Field(AuditSpec.samples, ge=100, description="an integer >= 100")
    one_run_canaries: int = Field(AuditSpec.one_run_canaries, description="0 (no one-run audit) or an integer >= 2")
    guesses: int | None = Field(None, description="an even integer from 2 to one-run-canaries")
    confidence: float = Field(AuditSpec.confidence, gt=0, lt=1, description="a number in (0, 1)")

    @field_validator("template")
    @classmethod
    def _template(cls, value: str) -> str:
        if value.count("{}") != 1 or "{" in value.replace("{}", "", 1) or "}" in value.replace("{}", "", 1):
            raise ValueError("one '{}'")
        return value

    @field_validator("alphabet")
    @classmethod
    def _alphabet(cls, value: str) -> str:
        if len(value) < 2 or len(set(value)) != len(value):
            raise ValueError("distinct characters")
        return value

    @field_validator("one_run_canaries")
    @classmethod
    def _one_run(cls, value: int) -> int:
        if value == 1 or value < 0:
            raise ValueError("0 or >= 2")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> _AuditTable:
        space = CanaryFormat(self.template, self.alphabet, self.length, self.separator).space_size
        if len(self.repeats) > space:
            raise key_error("repeats", self.repeats, f"at most {space} canaries (the format's space)")
        if self.guesses is not None and not (self.guesses % 2 == 0 and 2 <= self.guesses <= self.one_run_canaries):
            raise key_error("guesses", self.guesses,
                            f"an even integer from 2 to one-run-canaries ({self.one_run_canaries})")
        return self


@dataclass(frozen=True)
class Cell:
    """One run of the grid."""

    dataset: str
    dp_mode: str
    target_epsilon: float
    seed: int
    privacy_unit: str = "message"

    @property
    def id(self) -> str:
        """A folder name: ``<dataset>-<mode>[-member]-eps<ε>-seed<seed>`` (message-level cells name no unit)."""
        unit = "" if self.privacy_unit == "message" else f"-{self.privacy_unit}"
        return f"{self.dataset}-{self.dp_mode}{unit}-eps{format_epsilon(self.target_epsilon)}-seed{self.seed}"


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
    privacy_units: tuple[str, ...] = ("message",)
    max_messages_per_member: int = 8
    """The member unit's bound: one member's DP sample is at most this many of their messages."""
    baselines: tuple[str, ...] = ()
    """Optional baselines run per cell (``BASELINES``); ``alone``: one run per consenting workspace on its own."""

    def cells(self) -> list[Cell]:
        """The grid, in a stable order: dataset, privacy unit, DP mode, target ε (large to small), then seed."""
        cells = []
        for dataset in self.datasets:
            targets = sorted(self.target_epsilons, reverse=True)
            for unit in self.privacy_units:
                if math.inf in targets:
                    cells += [Cell(dataset.name, "none", math.inf, seed, unit) for seed in self.seeds]
                for mode in self.dp_modes:
                    cells += [Cell(dataset.name, mode, eps, seed, unit) for eps in targets if eps != math.inf
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
    top = validate_table(_SweepTable, raw, source)
    central = validate_table(_CentralTable, top.central, source, "central.")
    run = _run_config(source, top.run)
    datasets = tuple(_dataset(source, d, i) for i, d in enumerate(top.datasets))
    names = [d.name for d in datasets]
    if len(set(names)) != len(names):
        _fail(source, "datasets", names, "distinct dataset names (set 'name' on each [[datasets]] table)")
    audit = parse_audit(source, top.audit, run) if top.audit is not None else None
    if audit is not None and top.run_mode != "inprocess":
        _fail(source, "run-mode", top.run_mode, "'inprocess' with an [audit] table (canaries are injected in memory "
                                                "into in-process nodes)")
    finite = [e for e in top.target_epsilons if not math.isinf(e)]
    return SweepConfig(source=source, name=top.name,
                       target_epsilons=tuple(sorted({float(e) for e in top.target_epsilons}, reverse=True)),
                       seeds=tuple(top.seeds), dp_modes=tuple(top.dp_modes) if finite else (), delta=top.delta,
                       accountant=top.accountant, run_mode=top.run_mode, central_clipping_norm=central.clipping_norm,
                       datasets=datasets, run=run, audit=audit, privacy_units=tuple(top.privacy_units),
                       max_messages_per_member=top.max_messages_per_member, baselines=tuple(top.baselines))


def parse_audit(source: Path, table: dict[str, Any], run: RunConfig) -> AuditSpec:
    """The ``[audit]`` table as an ``AuditSpec``; its canaries must fit in ``run``'s ``seq-len``, and ``run``'s task
    must score texts (canaries are ranked by their likelihood under the model)."""
    if not isinstance(get_task(run.task, run.seq_len), TextScorer):
        _fail(source, "run.task", run.task, "a task that scores texts by likelihood ('nextchar') with an [audit] "
                                            "table")
    audit = validate_table(_AuditTable, table, source, "audit.")
    canary_format = CanaryFormat(audit.template, audit.alphabet, audit.length, audit.separator)
    one_run = audit.one_run_canaries
    for fmt in (canary_format, ONE_RUN_FORMAT if one_run else None):
        if fmt is not None and len(fmt.text([0] * fmt.length).encode("utf-8")) > run.seq_len:
            _fail(source, "audit.template", fmt.template, f"canaries of at most seq-len = {run.seq_len} bytes, got "
                                                          f"{fmt.text([0] * fmt.length)!r}")
    guesses = audit.guesses if audit.guesses is not None else min(AuditSpec.guesses, one_run - one_run % 2)
    return AuditSpec(workspace=audit.workspace, canary_format=canary_format, repeats=tuple(audit.repeats),
                     exact_limit=audit.exact_limit, samples=audit.samples, one_run_canaries=one_run,
                     guesses=guesses, confidence=audit.confidence)


def _fail(source: Path, key: str, value: Any, expected: str) -> NoReturn:
    raise ConfigError(f"{source}: key {key!r}: expected {expected}, got {value!r}")


def _run_config(source: Path, table: dict[str, Any]) -> RunConfig:
    for key in PER_CELL_KEYS:
        if key in table:
            _fail(source, f"run.{key}", table[key], "no value here: the sweep sets it for each cell "
                                                    "(target-epsilons, seeds, dp-modes, [central])")
    try:
        return RunConfig.from_mapping(table, source=f"{source} [run]")
    except ConfigError as exc:
        message = str(exc)
        raise ConfigError(message if message.startswith(str(source)) else f"{source} [run]: {message}") from None


def _dataset(source: Path, raw: dict[str, Any], index: int) -> Dataset:
    prefix = f"datasets[{index}]."
    model = DATASET_KINDS.get(raw.get("kind"))  # type: ignore[arg-type]
    if model is None:
        _fail(source, prefix + "kind", raw.get("kind"), "one of 'folder', 'synthetic' or 'irc'")
    return validate_table(model, raw, source, prefix, context={"source": source})  # type: ignore[return-value]
