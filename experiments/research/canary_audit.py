"""Empirical privacy audit of one federated run: canary exposure and a one-run ε lower bound.

What is injected (in memory only, through the node config key ``audit-canaries``; see
``clients.workspace_node``): nothing is ever written to a workspace's files.

- **Exposure canaries**: one random secret of the audit's format (default ``"my pin is d d d d d d"``)
  per entry of ``repeats``, each inserted that many times into one workspace's training split
  (``workspace``, by index in sorted order).
- **One-run canaries** (Steinke, Nasr, Jagielski 2023): ``m`` random secrets of a second format
  (``ONE_RUN_FORMAT``, disjoint from the exposure format's space), spread round-robin over the
  workspaces; each is included by an independent fair coin, so about half train and half do not.

What is measured, on the global model as another workspace receives it (the arrays of the last
round's ``evaluate`` message delivered to a workspace without exposure canaries — the question "does
data leak across workspaces"):

- exposure of each exposure canary (``federated.privacy.canaries``), exact or estimated;
- one-run audit: score = log-perplexity under the initial model minus under the final model (a
  canary the run trained on should gain likelihood); the ``guesses // 2`` highest scores are
  guessed "in", the rest of the ``guesses`` lowest "out"; ``v`` correct guesses give the
  lower bound ``federated.privacy.one_run_audit.epsilon_lower_bound(m, r, v, δ)`` at the audit's
  confidence.

Power: the audit shows something only when training can memorise a single message. Its config
(``experiments/configs/audit_canaries.toml``: each canary sighted about 24 times) gave a no-DP bound of
1.7–3.0; lighter training (about 5 sightings per canary) gave 0 even without DP, and a bound of 0
proves nothing. With m = 256 and r = 64 the bound cannot exceed about 3, far below the true ε of DP-SGD.

The claimed ε it is compared with, for adding or removing one canary message:
local DP-SGD: the largest ledger ε among workspaces holding one-run canaries; central DP-FedAvg:
the central accountant at *half* the noise multiplier (changing one canary *replaces* a
workspace's clipped update, sensitivity 2C, whereas the reported central ε is for zeroing it);
both: the smaller of the two; no DP: ∞. A lower bound above the claim at the audit's confidence
(95 % by default) means a bug in Optin's privacy accounting or mechanism, or the 1 − confidence
chance (1 in 20 per cell at 95 %) that a correct claim is exceeded anyway; rerunning with another
seed tells them apart. It is logged as an error and flagged in the report either way (and
``optin audit canaries`` exits with code 3).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, Context, Message, MessageType

from clients.app import app as client_app
from clients.workspace_node import CANARIES_KEY
from experiments.runners.in_process import served_folders
from experiments.runners.node_metrics import merge_node_local
from federated.config import RunConfig
from federated.inprocess import Observer, run_in_process
from federated.privacy.accounting import epsilon
from federated.privacy.canaries import CanaryFormat, chance_exposure, exposure
from federated.privacy.one_run_audit import epsilon_lower_bound
from federated.tasks import get_task
from server.app import app as server_app

log = logging.getLogger("optin.canary_audit")

ONE_RUN_FORMAT = CanaryFormat(template="audit word {}", alphabet="abcdefghijklmnopqrstuvwxyz", length=5,
                              separator="")
"""One-run canaries: 5 random letters, 26^5 ≈ 1.2e7 candidates (drawn distinct; none is a candidate of the
digit exposure format). Short secrets are memorised within a few dozen sightings, which the one-run
audit needs: with the audit config's training (docs/experiments.md, "Canary audit") 5 letters gave a
no-DP bound of 2.55 where 10 letters gave 2.25 and 30 letters gave 0."""


@dataclass(frozen=True)
class AuditSpec:
    """The ``[audit]`` table of a sweep file (docs/experiments.md)."""

    workspace: int = 0
    canary_format: CanaryFormat = field(default_factory=CanaryFormat)
    repeats: tuple[int, ...] = (1, 8, 32)
    exact_limit: int = 200_000
    samples: int = 5000
    one_run_canaries: int = 256
    guesses: int = 64
    confidence: float = 0.95


@dataclass(frozen=True)
class OneRunCanary:
    text: str
    workspace: str
    included: bool


@dataclass(frozen=True)
class CanaryPlan:
    """Which canary goes where, decided from the cell's seed before training."""

    exposure_workspace: str
    exposure: tuple[tuple[int, str], ...]
    """(copies, text) of each exposure canary."""
    one_run: tuple[OneRunCanary, ...]
    receiver: str
    """The workspace whose received global model is audited."""

    def injected(self, workspace: str) -> tuple[str, ...]:
        """The canary texts added to ``workspace``'s training split."""
        texts = [text for copies, text in self.exposure for _ in range(copies)] \
            if workspace == self.exposure_workspace else []
        return tuple(texts + [c.text for c in self.one_run if c.workspace == workspace and c.included])


def plan_canaries(spec: AuditSpec, workspaces: Sequence[str], seed: int) -> CanaryPlan:
    """Draw the canaries and the one-run coins for ``workspaces`` (names in sorted order) from ``seed``."""
    if not 0 <= spec.workspace < len(workspaces):
        raise ValueError(f"audit workspace {spec.workspace}: expected an index below {len(workspaces)}")
    rng = np.random.default_rng([seed, 0x0A0D17])
    secrets = spec.canary_format.random_secrets(len(spec.repeats), rng)
    exposure_canaries = tuple((copies, spec.canary_format.text(s)) for copies, s in zip(spec.repeats, secrets))
    one_run_texts = [ONE_RUN_FORMAT.text(s) for s in ONE_RUN_FORMAT.random_secrets(spec.one_run_canaries, rng)]
    coins = rng.integers(0, 2, size=len(one_run_texts)).astype(bool)
    one_run = tuple(OneRunCanary(text, workspaces[i % len(workspaces)], bool(coin))
                    for i, (text, coin) in enumerate(zip(one_run_texts, coins)))
    target = workspaces[spec.workspace]
    receiver = next((w for w in workspaces if w != target), target)
    return CanaryPlan(target, exposure_canaries, one_run, receiver)


class ReceivedModel:
    """A ClientApp wrapper that remembers the last global model delivered to one workspace's node."""

    def __init__(self, app: Callable[[Message, Context], Message], workspace: str) -> None:
        self._app = app
        self._workspace = workspace
        self.arrays: ArrayRecord | None = None
        self.message_type = ""
        self.round = ""

    def __call__(self, message: Message, context: Context) -> Message:
        if Path(str(context.node_config.get("workspace", ""))).name == self._workspace \
                and "arrays" in message.content:
            self.arrays = message.content["arrays"]
            self.message_type, self.round = message.metadata.message_type, message.metadata.group_id
        return self._app(message, context)


def run_with_canaries(folders: Sequence[Path], config: RunConfig, plan: CanaryPlan,
                      observer: Observer | None = None) -> ArrayRecord:
    """Run the federation in process with the plan's canaries in memory; the global model the receiver got last.

    With ``results-dir`` set, the run's ``metrics.json`` gets the node-local figures, as
    ``experiments.runners.in_process.run_federation`` adds them. Nothing here reads a count, loss or accuracy a node
    sent: the audit scores the received model itself. Raises ``RuntimeError`` unless that model is the one of
    the final round's evaluation (the receiver did not consent, or was not evaluated in the last round).
    """
    received = ReceivedModel(client_app, plan.receiver)
    node_configs = [{"workspace": str(f), CANARIES_KEY: json.dumps(plan.injected(f.name))} for f in folders]
    grid = run_in_process(server_app, received, node_configs, config.to_mapping(), observer=observer)
    if config.results_dir:
        merge_node_local(Path(config.results_dir) / "metrics.json", list(folders), str(grid.run.run_id),
                         {folder: node_id for node_id, folder in served_folders(grid).items()})
    if received.arrays is None or (received.message_type, received.round) != (MessageType.EVALUATE,
                                                                                str(config.num_rounds)):
        raise RuntimeError(f"audit: workspace {plan.receiver!r} did not receive the final global model (last message "
                           f"{received.message_type or 'none'} of round {received.round or '-'}); it must consent "
                           f"and be evaluated in round {config.num_rounds}")
    return received.arrays


def claimed_epsilon(dp_mode: str, local: Sequence[float], central_noise: float | None, central_releases: int,
                    delta: float, accountant: str) -> tuple[float, str]:
    """The ε the run claims for adding or removing one canary message, and how it was obtained."""
    claims = []
    if dp_mode in ("local", "both"):
        claims.append((max(local), f"local DP-SGD: largest ledger ε ({accountant}) of the canary workspaces"))
    if dp_mode in ("central", "both") and central_noise is not None and central_releases:
        value = epsilon([(central_noise / 2, 1.0, central_releases)], delta, accountant)
        claims.append((value, f"central DP-FedAvg at z/2 = {central_noise / 2:.3f} (one canary replaces a "
                              f"workspace's update: sensitivity 2C), {central_releases} releases, {accountant}"))
    if not claims:
        return math.inf, "no DP"
    return min(claims)


def audit_model(spec: AuditSpec, plan: CanaryPlan, config: RunConfig, final: ArrayRecord, delta: float,
                claimed: tuple[float, str]) -> dict[str, Any]:
    """Exposure and the one-run bound of ``final`` (the received global model), against ``claimed``."""
    task = get_task(config.task, config.seq_len)
    initial_model = task.build_model(config.seed)
    final_model = task.build_model(config.seed)
    final_model.load_state_dict(final.to_torch_state_dict())
    rng = np.random.default_rng([config.seed, 0xE7905])
    texts = [text for _, text in plan.exposure]
    exposures = exposure(texts, spec.canary_format, lambda t: task.score_texts(final_model, t),
                         exact_limit=spec.exact_limit, samples=spec.samples, rng=rng)
    result: dict[str, Any] = {
        "exposure_workspace": plan.exposure_workspace,
        "receiver": plan.receiver,
        "format": spec.canary_format.template,
        "space_size": spec.canary_format.space_size,
        "chance_exposure": chance_exposure(spec.canary_format.space_size),
        "exposure": [{"copies": copies, "bits": e.bits, "rank": e.rank, "method": e.method}
                     for (copies, _), e in zip(plan.exposure, exposures)],
        "claimed_epsilon": claimed[0],
        "claimed_basis": claimed[1],
        "delta": delta,
        "one_run": None,
        "violation": False,
    }
    if plan.one_run:
        one_run_texts = [c.text for c in plan.one_run]
        scores = task.score_texts(initial_model, one_run_texts) - task.score_texts(final_model, one_run_texts)
        included = np.array([c.included for c in plan.one_run])
        order = np.argsort(-scores, kind="stable")
        guesses_in = spec.guesses // 2
        guessed_in, guessed_out = order[:guesses_in], order[len(order) - (spec.guesses - guesses_in):]
        correct = int(included[guessed_in].sum() + (~included[guessed_out]).sum())
        bound = epsilon_lower_bound(len(plan.one_run), spec.guesses, correct, delta, spec.confidence)
        result["one_run"] = {"canaries": len(plan.one_run), "included": int(included.sum()),
                             "guesses": spec.guesses, "correct": correct, "confidence": spec.confidence,
                             "epsilon_lower_bound": bound}
        result["violation"] = bound > claimed[0]
        if result["violation"]:
            log.error("PRIVACY AUDIT FAILED: empirical ε lower bound %.3f at %.0f%% confidence exceeds the claimed ε "
                      "%.3f (%s): a bug in the mechanism or its accounting, or the %.0f%% chance per cell that a "
                      "correct claim is exceeded; rerun with another seed to tell", bound, 100 * spec.confidence,
                      claimed[0], claimed[1], 100 * (1 - spec.confidence))
        elif math.isinf(claimed[0]) and bound == 0:
            log.warning("canary audit without power: the one-run bound is 0 even without DP (%d of %d guesses right); "
                        "at this training a bound of 0 under DP shows nothing. Train each canary more (sample-rate, "
                        "rounds x local-steps, lr: experiments/configs/audit_canaries.toml)", correct, spec.guesses)
    return result
