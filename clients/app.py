"""Optin's ClientApp: ``query`` (consent), ``train`` (local DP-SGD) and ``evaluate``.

What a reply may carry: the consent answer (flag and a fixed reason code), the
model arrays after local DP-SGD, and the scalar metrics in ``TRAIN_METRICS`` /
``EVAL_METRICS``. Never text, names or anything per message.
Consent is checked from the policy file at every message, before any message
of the workspace is read; without consent the node replies with an error and
reads nothing.
The accountant's history lives in the node's ``Context.state``, which the
SuperNode (or the in-process grid) keeps across the messages of one run, so ε
accumulates over all rounds of the run.
"""

from __future__ import annotations

import logging

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from clients.dp_training import DPSGDSettings, train_dp_sgd
from clients.workspace_node import WorkspaceNode
from federated.config import RunConfig
from federated.errors import ConfigError, OptinError
from federated.privacy.accounting import Step, epsilon
from federated.protocol import CONSENT_KEY, REFUSED_CODE, TRAIN_CONFIG_FIELDS
from federated.tasks import get_task

log = logging.getLogger("optin.node")

ACCOUNTANT_STATE = "optin-accountant"
TRAIN_METRICS = ("num-examples", "train-loss", "epsilon", "delta", "steps", "sample-rate", "noise-multiplier")
EVAL_METRICS = ("num-examples", "eval-loss", "eval-accuracy")

app = ClientApp()


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Answer whether this workspace consents to training, with a fixed reason code."""
    node = WorkspaceNode.from_context(context)
    decision = node.consent()
    log.info("workspace %s: consent %s (%s)", node.name, decision.consent, decision.reason)
    answer = ConfigRecord({"consent": decision.consent, "reason": decision.reason})
    return Message(RecordDict({CONSENT_KEY: answer}), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Local DP-SGD from the global model; replies with the new model, metrics and ε spent so far in the run."""
    node = WorkspaceNode.from_context(context)
    decision = node.consent()
    if not decision.consent:
        log.warning("workspace %s: refused train (%s)", node.name, decision.reason)
        return Message(Error(REFUSED_CODE, f"refused: {decision.reason}"), reply_to=msg)
    try:
        config = RunConfig.from_mapping(context.run_config)
        settings, server_round = _settings(msg.content["config"])
        task = get_task(config.task, config.seq_len)
        data = task.encode(node.load_split(config, held_out=False))
    except OptinError as exc:
        log.error("workspace %s: cannot train: %s", node.name, exc)
        return Message(Error(REFUSED_CODE, f"refused: {exc}"), reply_to=msg)

    model = task.build_model(config.seed)
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    generator = torch.Generator().manual_seed(node.seed_for(config, server_round))
    outcome = train_dp_sgd(task, model, data, settings, _history(context), generator)
    context.state[ACCOUNTANT_STATE] = ConfigRecord({
        "noise": [z for z, _, _ in outcome.history],
        "rate": [q for _, q, _ in outcome.history],
        "steps": [t for _, _, t in outcome.history],
    })
    spent = epsilon(outcome.history, config.delta)
    log.info("workspace %s: round %d, %d DP-SGD steps at q=%.4f z=%.3f, ε=%.3f (δ=%g)", node.name,
             server_round, outcome.steps, outcome.sample_rate, settings.noise_multiplier, spent, config.delta)
    metrics = MetricRecord({
        "num-examples": len(data),
        "train-loss": outcome.mean_loss,
        "epsilon": spent,
        "delta": config.delta,
        "steps": outcome.steps,
        "sample-rate": outcome.sample_rate,
        "noise-multiplier": settings.noise_multiplier,
    })
    return Message(RecordDict({"arrays": ArrayRecord(outcome.state_dict), "metrics": metrics}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Loss and next-character accuracy of the received model on this workspace's held-out split."""
    node = WorkspaceNode.from_context(context)
    decision = node.consent()
    if not decision.consent:
        log.warning("workspace %s: refused evaluate (%s)", node.name, decision.reason)
        return Message(Error(REFUSED_CODE, f"refused: {decision.reason}"), reply_to=msg)
    try:
        config = RunConfig.from_mapping(context.run_config)
        task = get_task(config.task, config.seq_len)
        data = task.encode(node.load_split(config, held_out=True))
    except OptinError as exc:
        log.error("workspace %s: cannot evaluate: %s", node.name, exc)
        return Message(Error(REFUSED_CODE, f"refused: {exc}"), reply_to=msg)
    model = task.build_model(config.seed)
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    result = task.evaluate(model, data)
    metrics = MetricRecord({"num-examples": len(data), "eval-loss": result["loss"],
                            "eval-accuracy": result["accuracy"]})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)


def _settings(record: ConfigRecord) -> tuple[DPSGDSettings, int]:
    """Validate the server's train config; a missing or mistyped field is a ``ConfigError``."""
    values = {}
    for key, kind in TRAIN_CONFIG_FIELDS.items():
        value = record.get(key)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ConfigError(f"train config: key {key!r} expected {kind.__name__}, got {value!r}")
        if value < 0 or (value == 0 and key != "noise-multiplier"):
            raise ConfigError(f"train config: key {key!r} expected a positive value, got {value!r}")
        values[key] = value
    settings = DPSGDSettings(
        noise_multiplier=values["noise-multiplier"],
        max_grad_norm=values["max-grad-norm"],
        expected_batch_size=values["batch-size"],
        local_steps=values["local-steps"],
        lr=values["lr"],
    )
    return settings, values["server-round"]


def _history(context: Context) -> list[Step]:
    if ACCOUNTANT_STATE not in context.state:
        return []
    record = context.state[ACCOUNTANT_STATE]
    return list(zip(record["noise"], record["rate"], record["steps"]))
