"""Preparing a sweep's cells: fresh workspaces, per-workspace noise calibration, policies, the cell's run config.

Guarantees (all established before any training of the sweep starts):

- **Fresh budgets, the user's folders only read.** A workspace's ledger is its lifetime budget across runs,
  so every cell gets its own copy of the dataset's workspace data (``data/`` only: never a source folder's
  policy, ledger, audit log or node secret) with a new policy file: no cell spends another's budget, and a
  ``folder`` dataset's folders are never written (``experiments.research.folder_dataset``).
- **Consent.** Every workspace consents except those the dataset lists in ``opted-out``: their copies get
  ``consent = false``, so their nodes refuse every message, read none of their data, train and evaluate
  nothing and spend nothing.
- **Local DP at a target ε** (``local``, ``both``), calibrated for each consenting workspace from what its
  node will run: the node samples each DP-SGD batch by Poisson sampling at the run's public rate
  ``q = sample-rate`` (``clients.dp_training``; never batch / training-split size, which would make the
  mechanism, and every reply's ``sample-rate``, depend on the workspace's size) for
  ``T = num-rounds × local-steps`` steps, one DP sample per message or per member (``privacy-units``). So every
  workspace's calibration (target ε, δ, q, T, accountant: ``federated.privacy.calibration``) gives the same
  noise multiplier z, and each workspace's ε lands at the target (at most ``DEFAULT_TOLERANCE`` below). Each
  workspace's node-side training-split size (its DP samples: messages, or members, with canaries) is counted
  with the node's own split and recorded; it enters δ < 1/N, not the calibration.
- **Noise delivered in the open.** The run config's ``noise-multiplier`` is that z, so the server asks every
  node for it, and each consenting policy's ``noise_multiplier`` floor is z as well, so a node would run it
  even if asked for less (the stricter of server and policy wins). The policy's ``max_epsilon`` is the
  target, or the node's own RDP ε of the planned rounds if that is larger (a PRV calibration is tighter than
  the node's RDP ledger), so the node never refuses a planned round.
- **Central DP at a target ε** (``central``, ``both``): one noise multiplier for ``num-rounds``
  Gaussian releases at sampling rate 1 (no amplification: the cohort is every consenting node).
- **No local noise** (``none``, ``central``): z = 0 in the run config and the policy, and the policy's
  ``max_epsilon`` is written out as ``inf`` (an explicit "no budget"), so the node records ε = ∞.
- **Audit canaries** (with an ``[audit]`` table): each cell draws its canaries from its seed over the
  consenting workspaces (``experiments.research.canary_audit.plan_canaries``) before training; each canary is
  one more training message (and member) of its workspace, sampled at the same rate ``q``, so the calibration
  is unchanged.
- Every policy written is read back with the node's own reader and must come back unchanged, and
  δ must be below 1/N for the unit it protects (under local DP, N is a workspace's training-split size in
  DP samples; under central DP, the number of consenting workspaces); otherwise a ``ConfigError`` names the
  sweep file, the key, the value and what was expected. This check reads the workspaces, which the
  researcher preparing a sweep holds; calibration does not.
"""

from __future__ import annotations

import functools
import logging
import math
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from clients.workspace_cache import load_split
from clients.workspace_node import DATA_FOLDER, canary_messages, member_groups
from experiments.research.canary_audit import CanaryPlan, plan_canaries
from experiments.research.folder_dataset import copy_workspace_data, workspace_data
from experiments.research.sweep_config import Cell, Dataset, FolderDataset, SweepConfig, SyntheticDataset
from federated.config import CENTRAL_MODES, RunConfig
from federated.data import PARTITIONS, SyntheticSpec, build_irc_workspaces, generate_federation, irc_corpus_dir
from federated.privacy.node_secret import node_secret
from federated.errors import ConfigError, PolicyError, PrivacyError
from federated.privacy.accounting import epsilon
from federated.privacy.calibration import Calibration, calibrate
from federated.privacy.policy import Policy, read_policy, write_policy

log = logging.getLogger("optin.sweep_cells")

LOCAL_MODES = ("local", "both")


@dataclass(frozen=True)
class WorkspacePlan:
    """One workspace of a cell: its training-split size, its node's (public) sampling rate, its calibration and
    its policy."""

    name: str
    folder: Path
    training_samples: int
    """DP samples in its node's training split (messages, or members, with canaries); 0 if opted out (unread)."""
    canaries: int
    sample_rate: float
    steps: int
    local: Calibration | None
    """The local DP-SGD calibration; ``None`` when the cell asks for no local noise or the workspace opted out."""
    policy: Policy

    @property
    def opted_out(self) -> bool:
        return not self.policy.consent


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
    if isinstance(dataset, FolderDataset):
        return [copy_workspace_data(data, folder / name) for name, data in workspace_data(dataset.path).items()]
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
    opted_out = _opted_out(sweep, cell, [c.name for c in copies])
    consenting = sorted(c.name for c in copies if c.name not in opted_out)
    central = None
    if cell.dp_mode in CENTRAL_MODES:
        _check_delta(sweep, cell, len(consenting),
                     f"{len(consenting)} workspaces: central DP protects one workspace")
        central = _calibrated(sweep, cell, 1.0, sweep.run.num_rounds)
    # q and T are run-wide public settings, so this is every consenting workspace's calibration.
    local = (_calibrated(sweep, cell, sweep.run.sample_rate, sweep.run.num_rounds * sweep.run.local_steps)
             if cell.dp_mode in LOCAL_MODES else None)
    config = replace(sweep.run, seed=cell.seed, noise_multiplier=local.noise_multiplier if local else 0.0,
                     dp_mode=cell.dp_mode, central_noise_multiplier=central.noise_multiplier if central else 0.0,
                     central_clipping_norm=sweep.central_clipping_norm, central_delta=sweep.delta,
                     min_available_nodes=len(copies), workspaces_root=str(root), results_dir=str(folder / "run"))
    canaries = None
    if sweep.audit is not None:
        try:
            canaries = plan_canaries(sweep.audit, consenting, cell.seed)
        except ValueError as exc:
            raise ConfigError(f"{sweep.source}: key 'audit.workspace': {exc} (dataset {cell.dataset!r}, "
                              f"consenting workspaces)") from exc
    workspaces = tuple(
        _prepare_workspace(sweep, cell, config, copy, local, copy.name in opted_out,
                           canaries.injected(copy.name) if canaries else ())
        for copy in copies)
    return CellPlan(cell, folder, config, workspaces, central, canaries)


def _opted_out(sweep: SweepConfig, cell: Cell, names: list[str]) -> set[str]:
    """The dataset's ``opted-out`` names, checked against the workspaces it has (for datasets whose names are only
    known once built)."""
    dataset = sweep.dataset(cell.dataset)
    wanted = set(dataset.opted_out)
    if not wanted <= set(names) or len(wanted) >= len(names):
        index = sweep.datasets.index(dataset)
        raise ConfigError(f"{sweep.source}: key 'datasets[{index}].opted-out': expected names of this dataset's "
                          f"workspaces {names}, at least one left in, got {dataset.opted_out!r}")
    return wanted


def _prepare_workspace(sweep: SweepConfig, cell: Cell, config: RunConfig, folder: Path, local: Calibration | None,
                       opted_out: bool, canaries: tuple[str, ...]) -> WorkspacePlan:
    rate = config.sample_rate  # public and the same on every node
    steps = config.num_rounds * config.local_steps
    samples = 0
    if opted_out:
        policy = Policy(consent=False)
        local = None
    else:
        unit = Policy(consent=True, delta=sweep.delta, privacy_unit=cell.privacy_unit,
                      max_messages_per_member=sweep.max_messages_per_member)
        samples = training_samples(folder, unit, canaries)
        if local is not None:
            _check_delta(sweep, cell, samples, f"{samples} {cell.privacy_unit}s (with canaries) in workspace "
                                               f"{folder.name!r}'s training split")
            planned = epsilon([(local.noise_multiplier, rate, config.local_steps)] * config.num_rounds, sweep.delta)
            policy = replace(unit, noise_multiplier=local.noise_multiplier,
                             max_epsilon=max(cell.target_epsilon, planned))
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
    return WorkspacePlan(folder.name, folder, samples, len(canaries), rate, steps, local, policy)


def training_samples(folder: Path, policy: Policy, canaries: tuple[str, ...] = ()) -> int:
    """The DP samples in the training split the node of workspace ``folder`` will draw under ``policy``: its
    messages (or members) outside the held-out split, keyed by the folder's node secret (made here if new, as the
    node would), plus the canaries, each its own message and member."""
    secret = node_secret(folder)
    train, _ = load_split(folder / DATA_FOLDER, folder.name, secret, policy.held_out_fraction)
    train = [*train, *canary_messages(canaries)]
    if policy.privacy_unit == "message":
        return len(train)
    return len(member_groups(train, policy.max_messages_per_member, secret))


def _check_delta(sweep: SweepConfig, cell: Cell, units: int, what: str) -> None:
    if not sweep.delta < 1 / units:
        raise ConfigError(f"{sweep.source}: key 'delta': expected a value below 1/N = {1 / units:.3g} ({what}; "
                          f"cell {cell.id}), got {sweep.delta}")


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

