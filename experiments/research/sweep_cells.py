"""Preparing a sweep's cells: fresh workspaces, per-workspace noise calibration, policies, the cell's run config.

Guarantees (all established before any training of the sweep starts):

- **Fresh budgets.** A workspace's ledger is its lifetime budget across runs, so every cell gets
  its own copy of the dataset's workspace folders with new policy files and no ledger or audit
  log: no cell spends another's budget. Every workspace consents.
- **Local DP at a target ε** (``local``, ``both``). Every node samples each DP-SGD batch by Poisson
  sampling at the run's public rate ``q = sample-rate``, whatever its workspace's size, and runs
  ``T = num-rounds × local-steps`` steps. So one noise multiplier, calibrated for (target ε, δ, q, T)
  with the sweep's accountant (``federated.privacy.calibration``), serves every workspace: no
  workspace's size enters it. It becomes each workspace policy's ``noise_multiplier`` floor;
  the server requests 0, so the node runs exactly that floor (the stricter of server and policy
  wins). The policy's ``max_epsilon`` is the target, or the node's own RDP ε of the planned rounds
  if that is larger (a PRV calibration is tighter than the node's RDP ledger), so the node never
  refuses a planned round.
- **Central DP at a target ε** (``central``, ``both``): one noise multiplier for ``num-rounds``
  Gaussian releases at sampling rate 1 (no amplification: the cohort is every consenting node).
- **No local noise** (``none``, ``central``): the policy's floor is 0 and its ``max_epsilon`` is written
  out as ``inf`` (an explicit "no budget"), so the node releases without local noise and records ε = ∞.
- **Audit canaries** (with an ``[audit]`` table): each cell draws its canaries from its seed
  (``experiments.research.canary_audit.plan_canaries``) before training; each canary is one more training
  message of its workspace, sampled at the same rate ``q``, so the calibration is unchanged.
- Every policy written is read back with the node's own reader and must come back unchanged, and
  δ must be below 1/N for the unit it protects (under local DP, N is a workspace's messages plus its
  canaries, at least its training messages; under central DP, the number of workspaces); otherwise a
  ``ConfigError`` names the sweep file, the key, the value and what was expected. This check reads the
  workspaces, which the researcher preparing a sweep holds; calibration does not.
"""

from __future__ import annotations

import functools
import logging
import math
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from clients.workspace_node import DATA_FOLDER
from experiments.research.canary_audit import CanaryPlan, plan_canaries
from experiments.research.sweep_config import Cell, Dataset, SweepConfig, SyntheticDataset
from federated.config import CENTRAL_MODES, RunConfig
from federated.data import (PARTITIONS, SyntheticSpec, build_irc_workspaces, generate_federation, irc_corpus_dir,
                            load_workspace)
from federated.errors import ConfigError, PolicyError, PrivacyError
from federated.privacy.accounting import epsilon
from federated.privacy.calibration import Calibration, calibrate
from federated.privacy.policy import Policy, read_policy, write_policy

log = logging.getLogger("optin.sweep_cells")

LOCAL_MODES = ("local", "both")


@dataclass(frozen=True)
class WorkspacePlan:
    """One workspace of a cell: its messages, its node's (public) sampling rate, its calibration and its policy."""

    name: str
    folder: Path
    messages: int
    """Messages in its data plus canaries injected: at least its training messages (used for the δ check only)."""
    canaries: int
    sample_rate: float
    steps: int
    local: Calibration | None
    """The local DP-SGD calibration; ``None`` when the cell asks for no local noise."""
    policy: Policy


@dataclass(frozen=True)
class CellPlan:
    """A prepared cell: where it lives, what its server runs, and every mechanism it was calibrated for."""

    cell: Cell
    folder: Path
    run_config: RunConfig
    workspaces: tuple[WorkspacePlan, ...]
    central: Calibration | None
    canaries: CanaryPlan | None = None
    """The audit's canaries; ``None`` without an ``[audit]`` table."""


def build_dataset(dataset: Dataset, folder: Path) -> list[Path]:
    """The dataset's workspace folders (data only, no policy) under ``folder``, which is made anew."""
    shutil.rmtree(folder, ignore_errors=True)
    if isinstance(dataset, SyntheticDataset):
        spec = SyntheticSpec(num_workspaces=dataset.num_workspaces, seed=dataset.seed,
                             min_messages=dataset.min_messages, max_messages=dataset.max_messages)
        return generate_federation(folder, spec)
    partitions = tuple(p for p in PARTITIONS if not dataset.partitions or p.name in dataset.partitions)
    return build_irc_workspaces(irc_corpus_dir(dataset.path), folder, max_lines=dataset.max_lines,
                                partitions=partitions)


def prepare_cell(sweep: SweepConfig, cell: Cell, dataset_folders: list[Path], folder: Path) -> CellPlan:
    """Make ``folder`` anew with fresh copies of the workspaces, calibrated policies and the cell's run config."""
    shutil.rmtree(folder, ignore_errors=True)
    root = folder / "workspaces"
    copies = []
    for source in dataset_folders:
        copies.append(root / source.name)
        shutil.copytree(source, copies[-1])
    central = None
    if cell.dp_mode in CENTRAL_MODES:
        _check_delta(sweep, cell, len(copies), f"{len(copies)} workspaces: central DP protects one workspace")
        central = _calibrated(sweep, cell, 1.0, sweep.run.num_rounds)
    config = replace(sweep.run, seed=cell.seed, noise_multiplier=0.0, dp_mode=cell.dp_mode,
                     central_noise_multiplier=central.noise_multiplier if central else 0.0,
                     central_clipping_norm=sweep.central_clipping_norm, central_delta=sweep.delta,
                     min_available_nodes=len(copies), workspaces_root=str(root), results_dir=str(folder / "run"))
    canaries = None
    if sweep.audit is not None:
        try:
            canaries = plan_canaries(sweep.audit, sorted(c.name for c in copies), cell.seed)
        except ValueError as exc:
            raise ConfigError(f"{sweep.source}: key 'audit.workspace': {exc} (dataset {cell.dataset!r})") from exc
    workspaces = tuple(
        _prepare_workspace(sweep, cell, config, copy, _messages(source),
                           len(canaries.injected(copy.name)) if canaries else 0)
        for source, copy in zip(dataset_folders, copies, strict=True))
    return CellPlan(cell, folder, config, workspaces, central, canaries)


def _prepare_workspace(sweep: SweepConfig, cell: Cell, config: RunConfig, folder: Path, messages: int,
                       canaries: int) -> WorkspacePlan:
    unit = Policy(consent=True, delta=sweep.delta)  # message-level: the default privacy unit
    rate = config.sample_rate  # public and the same on every node
    steps = config.num_rounds * config.local_steps
    local = None
    if cell.dp_mode in LOCAL_MODES:
        units = messages + canaries
        _check_delta(sweep, cell, units, f"{units} messages (with canaries) in workspace {folder.name!r}")
        local = _calibrated(sweep, cell, rate, steps)
        planned = epsilon([(local.noise_multiplier, rate, config.local_steps)] * config.num_rounds, sweep.delta)
        policy = replace(unit, noise_multiplier=local.noise_multiplier, max_epsilon=max(cell.target_epsilon, planned))
    else:
        policy = replace(unit, noise_multiplier=0.0, max_epsilon=math.inf)
    path = write_policy(folder, policy)
    try:
        written = read_policy(path)
    except PolicyError as exc:
        raise ConfigError(f"{sweep.source}: cell {cell.id} (dp-mode {cell.dp_mode!r}) needs the policy "
                          f"max_epsilon = {policy.max_epsilon}, noise_multiplier = {policy.noise_multiplier} on its "
                          f"nodes, which the node's policy reader refuses: {exc}") from exc
    if written != policy:
        raise ConfigError(f"{sweep.source}: cell {cell.id}: {path} reads back as {written}, not {policy}")
    return WorkspacePlan(folder.name, folder, messages + canaries, canaries, rate, steps, local, policy)


def _check_delta(sweep: SweepConfig, cell: Cell, units: int, what: str) -> None:
    if not sweep.delta < 1 / units:
        raise ConfigError(f"{sweep.source}: key 'delta': expected a value below 1/N = {1 / units:.3g} ({what}; "
                          f"cell {cell.id}), got {sweep.delta}")


@functools.lru_cache(maxsize=None)
def _messages(folder: Path) -> int:
    """How many messages the dataset folder's workspace holds (as the node loads them, scrubbed): train and
    held out together, so at least the training messages its node will sample from. Counted once per folder."""
    return len(load_workspace(folder / DATA_FOLDER, name=folder.name).messages)


def _calibrated(sweep: SweepConfig, cell: Cell, rate: float, steps: int) -> Calibration:
    try:
        return _calibrate(cell.target_epsilon, sweep.delta, rate, steps, sweep.accountant)
    except PrivacyError as exc:
        raise ConfigError(f"{sweep.source}: key 'target-epsilons': {cell.target_epsilon} is not reachable for cell "
                          f"{cell.id}: {exc}") from exc


@functools.lru_cache(maxsize=None)
def _calibrate(target: float, delta: float, rate: float, steps: int, accountant: str) -> Calibration:
    """``calibrate``, remembered: every workspace of a cell, and cells that differ only in seed, share it."""
    return calibrate(target, delta, rate, steps, accountant)

