"""Optin's ClientApp: ``query`` (consent and budget), ``train`` (local DP-SGD) and ``evaluate``.

The node enforces its own privacy, whatever the server asks:

- Consent, scope and expiry come from the policy file, re-read at every message, before any of
  the workspace's messages are read; without consent the node replies with an error and reads
  nothing.
- The round runs with the stricter of the server's request and the policy (more noise, smaller
  clipping norm).
- One writer at a time: from the budget check to the audit entry, a ``train`` holds the workspace's
  exclusive lock, so two runs (two federations, two nodes on one folder) cannot both spend the last
  of the budget. A (run, round) the workspace already released is refused: answering it twice would
  give the server two noisy views of one update.
- The lifetime budget is checked before training and again inside the ledger's write transaction: if
  the round would take the ledger's ε past ``max_epsilon``, the node refuses. A ledger that cannot be
  trusted (unreadable, or disagreeing with the verified audit log) means no training.
- Each release is written to the ledger (one transaction) and the audit log *before* the reply
  leaves, so a crash never loses a release that was sent. If either write fails (a full disk, an
  I/O error), the node replies with a refusal (``ledger-write-failed``, ``audit-unwritable``) and the
  model is not sent; a release the ledger recorded but the node did not send only costs budget.
- DP sampling and noise come from the OS at every release (``clients.dp_training``), never from the
  run config, so a server cannot replay them.

What a reply may carry (``federated.protocol``): the consent answer (``CONSENT_FIELDS``), the model
arrays after local DP-SGD, and the scalars in ``TRAIN_METRICS``, each independent of the messages
(public settings and the ε they account to). An ``evaluate`` reply carries no metrics: the node
evaluates on its held-out split and keeps the result in its audit log. Never text, names, counts,
losses or anything per message.
"""

from __future__ import annotations

import logging

from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict

from clients.dp_training import train_dp_sgd
from clients.egress import egress_check
from clients.ingress import GuardedClientApp, ingress_check
from clients.round_plan import plan_round
from clients.train_config import parse_train_config
from clients.workspace_node import WorkspaceNode
from federated.audit import AuditError, fingerprint, update_norm
from federated.config import CENTRAL_MODES, RunConfig
from federated.errors import BudgetError, OptinError
from federated.limits import cut
from federated.privacy.policy import Policy
from federated.protocol import CONSENT_KEY, REFUSED_CODE
from federated.tasks import get_task

log = logging.getLogger("optin.node")

app = GuardedClientApp(mods=[egress_check, ingress_check])


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Answer consent, and whether the proposed round (if the query carries one) fits the budget."""
    opened = _configured(msg, context)
    if isinstance(opened, Message):
        return opened
    node, config = opened
    decision = node.consent(config)
    answer = {"consent": decision.consent, "reason": decision.reason, "can-afford": False,
              "remaining-epsilon": 0.0, "label": decision.policy.label if decision.policy is not None else ""}
    if decision.consent and decision.policy is not None:
        policy = decision.policy
        try:
            with node.open_ledger() as ledger:
                spent = ledger.spent(policy.delta)
                answer["remaining-epsilon"] = max(0.0, policy.max_epsilon - spent)
                ledger.check_unit(policy.privacy_unit)
                if "config" in msg.content:
                    settings, _ = parse_train_config(msg.content["config"])
                    node.limits.check_round(settings)
                    plan_round(settings, policy, ledger)
                answer["can-afford"] = True
        except BudgetError as exc:
            answer["reason"] = exc.code
            log.info("workspace %s: cannot afford the proposed round: %s", node.name, exc)
        except OptinError as exc:
            answer.update(consent=False, reason=exc.code)
            log.error("workspace %s: %s", node.name, exc)
    log.info("workspace %s: consent %s (%s)", node.name, answer["consent"], answer["reason"])
    try:
        node.audit().append("consent", run_id=str(context.run_id), round=msg.metadata.group_id, **answer)
    except AuditError as exc:
        # An answer the workspace cannot show it gave is not given: the server reads the refusal as no consent.
        return _refuse(node, msg, context, exc.code, str(exc))
    return Message(RecordDict({CONSENT_KEY: ConfigRecord(answer)}), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Local DP-SGD from the global model; replies with the new model, its public settings and lifetime ε."""
    opened = _consenting(msg, context)
    if isinstance(opened, Message):
        return opened
    node, config, policy = opened
    run_id = str(context.run_id)
    group_size = policy.max_messages_per_member if policy.privacy_unit == "member" else 1
    try:
        requested, server_round = parse_train_config(msg.content["config"])
        node.limits.check_round(requested)
        task = get_task(config.task, config.seq_len)
        with node.lock(), node.open_ledger() as ledger:
            ledger.check_not_released(run_id, server_round)
            ledger.check_unit(policy.privacy_unit)
            plan = plan_round(requested, policy, ledger)
            data = node.training_samples(task, config, policy)
            model = task.build_model(config.seed)
            model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
            outcome = train_dp_sgd(task, model, data, plan.settings, node.generator(run_id, server_round))
            arrays = ArrayRecord(outcome.state_dict)
            size, digest = fingerprint(arrays)
            release = ledger.record(run_id, server_round, plan.settings.noise_multiplier, outcome.sample_rate,
                                    outcome.steps, policy.delta, max_epsilon=policy.max_epsilon,
                                    privacy_unit=policy.privacy_unit, group_size=group_size, sha256=digest,
                                    private=node.private)
            # Nothing leaves unlogged; if this append fails the ledger already counts the release (the safe side).
            node.audit().append(
                "release", run_id=run_id, round=server_round, bytes=size, sha256=digest,
                l2_norm=update_norm(arrays, msg.content["arrays"]), steps=outcome.steps,
                sample_rate=outcome.sample_rate, noise_multiplier=plan.settings.noise_multiplier,
                max_grad_norm=plan.settings.max_grad_norm, epsilon_total=release.epsilon_total,
                delta=policy.delta, privacy_unit=policy.privacy_unit, private=node.private,
                kept_local={"train_loss": outcome.mean_loss, "zeroed_gradients": outcome.dropped_samples},
                **_central_claim(config))
    except OptinError as exc:
        return _refuse(node, msg, context, exc.code, str(exc))
    log.info("workspace %s: round %d, %d DP-SGD steps at q=%.4f z=%.3f; lifetime ε=%.3f (δ=%g)%s", node.name,
             server_round, outcome.steps, outcome.sample_rate, plan.settings.noise_multiplier,
             release.epsilon_total, policy.delta, "" if node.private else " [repeatable seed: NOT private]")
    metrics = MetricRecord({
        "epsilon": release.epsilon_total,
        "delta": policy.delta,
        "steps": outcome.steps,
        "sample-rate": outcome.sample_rate,
        "noise-multiplier": plan.settings.noise_multiplier,
        "max-grad-norm": plan.settings.max_grad_norm,
        "private": int(node.private),
    })
    return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """The task's metrics (loss, accuracy, ...) of the received model on this workspace's held-out split, kept on
    the node.

    The result goes to the workspace's audit log (``evaluation`` entry, ``kept_local``) for its operator; the
    reply carries no metrics, since a noiseless evaluation is outside every ε.
    """
    opened = _consenting(msg, context)
    if isinstance(opened, Message):
        return opened
    node, config, policy = opened
    try:
        task = get_task(config.task, config.seq_len)
        data = task.encode(node.held_out_messages(config, policy))
        model = task.build_model(config.seed)
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        result = task.evaluate(model, data)
        node.audit().append("evaluation", run_id=str(context.run_id), round=msg.metadata.group_id, sent=[],
                            kept_local={**result, "held_out": len(data)})
    except OptinError as exc:
        return _refuse(node, msg, context, exc.code, str(exc))
    return Message(RecordDict({"metrics": MetricRecord({})}), reply_to=msg)


def _central_claim(config: RunConfig) -> dict[str, object]:
    """The central DP the run says the server adds (``optin ledger show`` reports its ε); the node cannot check
    that the server really adds it, so the ledger never counts it."""
    if config.dp_mode not in CENTRAL_MODES:
        return {}
    return {"central": {"noise_multiplier": config.central_noise_multiplier,
                        "clipping_norm": config.central_clipping_norm, "delta": config.central_delta}}


def _configured(msg: Message, context: Context) -> tuple[WorkspaceNode, RunConfig] | Message:
    """The node and the run's config once it is valid and within the node's limits, else the refusal to send."""
    node = WorkspaceNode.from_context(context)
    try:
        return node, node.run_config(context)
    except OptinError as exc:
        return _refuse(node, msg, context, exc.code, str(exc))


def _consenting(msg: Message, context: Context) -> tuple[WorkspaceNode, RunConfig, Policy] | Message:
    """As :func:`_configured`, and the policy re-read now if it consents to this run, else the refusal to send."""
    opened = _configured(msg, context)
    if isinstance(opened, Message):
        return opened
    node, config = opened
    decision = node.consent(config)
    if not decision.consent or decision.policy is None:
        return _refuse(node, msg, context, decision.reason)
    return node, config, decision.policy


def _refuse(node: WorkspaceNode, msg: Message, context: Context, reason: str, detail: str = "") -> Message:
    """An error reply with a fixed reason code; the detail stays in the node's log and audit log."""
    log.warning("workspace %s: refused %s (%s) %s", node.name, cut(msg.metadata.message_type), reason,
                cut(detail))
    try:
        node.audit().append("refusal", run_id=str(context.run_id), round=msg.metadata.group_id,
                            message_type=msg.metadata.message_type, reason=reason, detail=detail)
    except AuditError as exc:
        # The refusal goes out whether or not it could be logged (the same full disk may block both).
        log.error("workspace %s: could not audit the refusal: %s", node.name, exc)
    return Message(Error(REFUSED_CODE, f"refused: {reason}"), reply_to=msg)
