"""Consent-aware FedAvg: query every node, sample only those that consent, then FedAvg.

Guarantee (server side): a node whose answer to this round's ``query`` was not
an explicit ``consent = true`` (consent off, a policy problem, an error, no
answer, a malformed answer) receives neither a ``train`` nor an ``evaluate``
message in that round; a consenting node that says it cannot afford the
proposed round (its lifetime budget) receives no ``train`` message. Each skip is
logged, and written to the server's audit log when one is given, with its
reason. The nodes enforce all of this themselves as well: this is the server
honouring it, not the only safeguard.

Exchanges: a round is two exchanges, ``train`` and ``evaluate``. The consent ``query`` for round r + 1 is sent
in round r's evaluate exchange, to every connected node (a node that evaluates gets both messages; its
SuperNode answers them one after the other without waiting for its next poll); only round 0, and a node that
connected since, is asked in an exchange of its own. Revocation bound: the server may send round r + 1's
``train`` to a node whose operator revoked consent after it answered in round r's evaluate exchange; the node
re-reads its policy at every message and refuses it (``train-error: refused: consent-off``), so nothing is
released after the policy change is saved, and the server stops asking for training by the next exchange.

Faults: a sampled node that crashes (error reply) or does not answer is skipped
and logged (``train-error``, ``no-reply``); the round completes with the others.
"Does not answer" is either no reply within ``reply_timeout`` seconds, or an
error reply that Flower's SuperLink makes on the node's behalf when the node
missed its heartbeats or the message expired (its source is the SuperLink, not
the node: it is attributed to the node the message was sent to). If fewer than
``min_train_nodes`` usable updates arrive, the global model is left unchanged
for that round.

Aggregation: the **equal-weight** mean of the accepted models. Nodes send no
example counts (a count would reveal the workspace's size and let a lying node
take more weight), so each of ``k`` accepted nodes moves the global model by
exactly ``1/k`` of its own update. With central DP the accepted models go to
``server.central_dp.CentralDP`` instead (clipped, averaged with equal weights, noised). Evaluation replies carry no metrics (nodes
keep their held-out results); the server records who evaluated.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from federated.audit import AuditLog, fingerprint, update_norm
from federated.protocol import CONSENT_FIELDS, CONSENT_KEY, LABEL, REASON_CODE, REFUSAL_REASON
from server.reply_check import check_evaluate_reply, check_train_reply
from server.run_record import RunRecord

log = logging.getLogger("optin.server.strategy")

Aggregate = Callable[[int, ArrayRecord, list[ArrayRecord]], ArrayRecord]
"""(round, the model sent, the accepted models) -> the model released: the equal-weight mean, or central DP's
clipped and noised one (``server.central_dp.CentralDP``)."""

UNAVAILABLE = (ErrorCode.MESSAGE_UNAVAILABLE, ErrorCode.REPLY_MESSAGE_UNAVAILABLE, ErrorCode.NODE_UNAVAILABLE)
"""Error codes of the replies Flower's SuperLink makes for a node that did not answer (missed heartbeats, expired
message or reply)."""


@dataclass(frozen=True)
class TrainingRound:
    """A round's train exchange as sent: the global model, the sampled nodes, and the messages (with the ids
    the grid gave them, which the replies name)."""

    sent: ArrayRecord
    sampled: list[int]
    messages: list[Message] = field(default_factory=list)


class ConsentAwareFedAvg(FedAvg):
    """FedAvg over the nodes that consent this round (a uniform sample of ``fraction_train`` of them), evaluated
    on a uniform sample of ``fraction_evaluate`` of the consenting nodes (at least one)."""

    def __init__(self, record: RunRecord, proposal: ConfigRecord, *, audit: AuditLog | None = None,
                 fraction_train: float = 1.0, fraction_evaluate: float = 1.0, min_train_nodes: int = 1,
                 min_available_nodes: int = 1, seed: int = 0, query_timeout: float = 60.0,
                 connect_timeout: float = 300.0, reply_timeout: float = 3600.0,
                 num_rounds: int | None = None, aggregate: Aggregate | None = None) -> None:
        super().__init__(fraction_train=fraction_train, fraction_evaluate=fraction_evaluate,
                         min_train_nodes=min_train_nodes,
                         min_evaluate_nodes=0, min_available_nodes=min_available_nodes)
        self.record = record
        self.proposal = proposal
        self.audit = audit
        self.query_timeout = query_timeout
        self.connect_timeout = connect_timeout
        self.reply_timeout = reply_timeout  # seconds to wait for train and evaluate replies (3600: Flower's default)
        self.num_rounds = num_rounds  # None: unknown, so no round's consent is asked ahead
        self.aggregate = aggregate or (lambda server_round, sent, accepted: equal_weight_mean(accepted))
        self._rng = random.Random(seed)
        # A stream of its own, so that sampling evaluators leaves the training cohorts of a seed unchanged.
        self._evaluate_rng = random.Random(f"{seed}:evaluate")
        self._answers: dict[int, dict[int, str]] = {}
        self._training: dict[int, TrainingRound] = {}  # round -> what was sent, until its replies are aggregated
        self._asked_ahead: dict[int, list[Message]] = {}  # round -> its queries sent in the previous evaluate exchange

    def consent_answers(self, server_round: int, grid: Grid) -> dict[int, str]:
        """Every connected node's answer for ``server_round`` (with the proposed round); node id -> reason code.

        Answers asked ahead (in the previous round's evaluate exchange) are used; a node connected without one
        is queried now. ``consent-on`` means consent and budget for the proposed round; ``budget-exhausted``
        means consent without budget; anything else means no consent.
        """
        if server_round in self._answers:
            late = sorted(set(grid.get_node_ids()) - set(self._answers[server_round]))
        else:
            late = sorted(self._wait_for_nodes(grid))
        if late or server_round not in self._answers:
            queries = self._queries(late, server_round)
            replies = list(grid.send_and_receive(queries, timeout=self.query_timeout))
            self._record_answers(server_round, queries, replies)
        return self._answers[server_round]

    def _queries(self, node_ids: list[int], server_round: int) -> list[Message]:
        return [Message(RecordDict({"config": self.proposal}), node_id, MessageType.QUERY,
                        group_id=str(server_round)) for node_id in node_ids]

    def _record_answers(self, server_round: int, queries: list[Message], replies: list[Message]) -> None:
        """Each queried node's reason code for ``server_round`` from ``replies`` (a node without one: no-answer)."""
        node_of = _node_of_reply(queries)
        answered = {node_of(reply): reply for reply in replies}
        answers = {(node := m.metadata.dst_node_id): _consent_reason(answered.get(node)) for m in queries}
        self.record.round(server_round).consent.update(answers)
        # A label counts only in a well-formed answer (bad-answer ones are never read further).
        self.record.labels.update({node: str(reply.content[CONSENT_KEY]["label"]) for node, reply in answered.items()
                                   if answers.get(node) not in (None, "bad-answer", "query-error")
                                   and reply.content[CONSENT_KEY]["label"]})
        self._audit_all([("consent", {"round": server_round, "node": node_id, "reason": reason})
                         for node_id, reason in answers.items()])
        self._answers.setdefault(server_round, {}).update(answers)

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        answers = self.consent_answers(server_round, grid)
        eligible = [n for n, reason in answers.items() if reason == "consent-on"]
        refused = [(n, reason) for n, reason in answers.items() if reason != "consent-on"]
        if len(eligible) < self.min_train_nodes:
            self._skip_all(server_round, refused)
            log.warning("round %d: %d consenting node(s), fewer than min-train-nodes=%d; no training this round",
                        server_round, len(eligible), self.min_train_nodes)
            return []
        size = min(len(eligible), max(int(len(eligible) * self.fraction_train), self.min_train_nodes))
        sampled = sorted(self._rng.sample(eligible, size))
        self._skip_all(server_round, refused + [(n, "not-sampled") for n in sorted(set(eligible) - set(sampled))])
        log.info("round %d: training on %d of %d eligible node(s)", server_round, size, len(eligible))
        config["server-round"] = server_round
        # Kept until the replies are in: the grid gives each message its id when it pushes it.
        messages = self._messages(arrays, config, sampled, MessageType.TRAIN, server_round)
        self._training[server_round] = TrainingRound(arrays, sampled, messages)
        return messages

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        """Evaluate on a uniform sample of ``fraction_evaluate`` of the consenting nodes, at least one.

        A node without budget left still counts as consenting here (evaluation makes no DP release).
        """
        answers = self.consent_answers(server_round, grid)
        consenting = [n for n, reason in answers.items() if reason in ("consent-on", "budget-exhausted")]
        for node_id, reason in answers.items():
            if reason not in ("consent-on", "budget-exhausted"):
                self.record.round(server_round).skipped[node_id] = reason
        evaluators = consenting
        if self.fraction_evaluate < 1 and consenting:
            size = min(len(consenting), max(int(len(consenting) * self.fraction_evaluate), 1))
            evaluators = sorted(self._evaluate_rng.sample(consenting, size))
            log.info("round %d: evaluating on %d of %d consenting node(s)", server_round, size, len(consenting))
        config["server-round"] = server_round
        messages = self._messages(arrays, config, evaluators, MessageType.EVALUATE, server_round)
        if self.num_rounds is not None and server_round < self.num_rounds:
            # Next round's consent, in this exchange: a message of its own, so the evaluate reply stays empty.
            self._asked_ahead[server_round + 1] = self._queries(sorted(grid.get_node_ids()), server_round + 1)
            messages += self._asked_ahead[server_round + 1]
        return messages

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        round_record = self.record.round(server_round)
        training = self._training.pop(server_round, None)
        if training is None:  # nothing was sent this round (too few eligible nodes)
            return None, None
        sent = training.sent
        accepted = []
        node_of = _node_of_reply(training.messages)
        replied = set()
        for reply in replies:
            node_id = node_of(reply)
            replied.add(node_id)
            if reply.has_error():
                unavailable = reply.error.code in UNAVAILABLE
                # A node's error text is recorded only if it is a refusal code: a hostile node could send megabytes.
                reason = reply.error.reason if REFUSAL_REASON.fullmatch(str(reply.error.reason)) else "malformed error"
                self._skip(server_round, node_id, "no-reply" if unavailable else f"train-error: {reason}")
                continue
            problem = check_train_reply(reply, sent)
            if problem is not None:
                self._drop(server_round, node_id, "train", problem)
                continue
            accepted.append(reply)
            round_record.trained[node_id] = dict(reply.content["metrics"])
            size, digest = fingerprint(reply.content["arrays"])
            self._audit("release-received", round=server_round, node=node_id, bytes=size, sha256=digest,
                        l2_norm=update_norm(reply.content["arrays"], sent))
        for node_id in training.sampled:
            if node_id not in replied:
                self._skip(server_round, node_id, "no-reply")
        if len(accepted) < self.min_train_nodes:
            log.warning("round %d: %d usable update(s), fewer than min-train-nodes=%d; the model is not updated",
                        server_round, len(accepted), self.min_train_nodes)
            return None, None
        arrays = self.aggregate(server_round, sent, [reply.content["arrays"] for reply in accepted])
        metrics = _train_metrics([reply.content["metrics"] for reply in accepted])
        round_record.metrics.update(metrics)
        return arrays, metrics

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Record which nodes evaluated (their results stay on the nodes), and the next round's consent answers
        asked in the same exchange; no metrics to aggregate."""
        replies = list(replies)
        queries = self._asked_ahead.pop(server_round + 1, [])
        if queries:
            asked = {m.metadata.message_id for m in queries}
            self._record_answers(server_round + 1, queries,
                                 [r for r in replies if r.metadata.reply_to_message_id in asked])
            replies = [r for r in replies if r.metadata.reply_to_message_id not in asked]
        round_record = self.record.round(server_round)
        for reply in replies:
            if reply.has_error():
                continue
            problem = check_evaluate_reply(reply)
            if problem is not None:
                self._drop(server_round, reply.metadata.src_node_id, "evaluate", problem)
                continue
            round_record.evaluated[reply.metadata.src_node_id] = {}
        return None

    def _skip(self, server_round: int, node_id: int, reason: str) -> None:
        self._skip_all(server_round, [(node_id, reason)])

    def _skip_all(self, server_round: int, skips: list[tuple[int, str]]) -> None:
        """Record and log each (node, reason) skip; their audit entries are written as one batch."""
        for node_id, reason in skips:
            self.record.round(server_round).skipped[node_id] = reason
            log.info("round %d: skipping node %d (%s)", server_round, node_id, reason)
        self._audit_all([("skip", {"round": server_round, "node": node_id, "reason": reason})
                         for node_id, reason in skips])

    def _drop(self, server_round: int, node_id: int, message_type: str, problem: str) -> None:
        self.record.round(server_round).dropped[node_id] = f"{message_type}: {problem}"
        log.warning("round %d: dropped the %s reply of node %d: %s", server_round, message_type, node_id, problem)
        self._audit("reply-dropped", round=server_round, node=node_id, message_type=message_type, reason=problem)

    def _audit(self, kind: str, **fields: object) -> None:
        if self.audit is not None:
            self.audit.append(kind, **fields)

    def _audit_all(self, entries: list[tuple[str, dict[str, object]]]) -> None:
        """Many entries as one batch, synced once rather than once per entry: a round writes one entry per node,
        which at a thousand nodes would otherwise dominate the server's time."""
        if self.audit is not None:
            self.audit.append_many(entries)

    def _messages(self, arrays: ArrayRecord, config: ConfigRecord, node_ids: list[int], message_type: str,
                  server_round: int) -> list[Message]:
        content = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        return [Message(content, node_id, message_type, group_id=str(server_round)) for node_id in node_ids]

    def _wait_for_nodes(self, grid: Grid) -> list[int]:
        deadline = time.monotonic() + self.connect_timeout
        while len(node_ids := list(grid.get_node_ids())) < self.min_available_nodes:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(node_ids)} node(s) connected after {self.connect_timeout:.0f} s; "
                                   f"min-available-nodes is {self.min_available_nodes}")
            log.info("waiting for nodes: %d connected, %d required", len(node_ids), self.min_available_nodes)
            time.sleep(1.0)
        return node_ids


def _node_of_reply(sent: list[Message]) -> Callable[[Message], int]:
    """Which node a reply answers for: the destination of the message of ``sent`` it replies to, else its source.

    Not simply its source: a reply Flower's SuperLink makes on a node's behalf (``UNAVAILABLE``) comes from the
    SuperLink itself.
    """
    destination = {m.metadata.message_id: m.metadata.dst_node_id for m in sent}
    return lambda reply: destination.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)


def _consent_reason(reply: Message | None) -> str:
    """The node's reason code, or why its answer could not count as consent."""
    if reply is None:
        return "no-answer"
    if reply.has_error():
        return "query-error"
    answer = reply.content.get(CONSENT_KEY)
    if not isinstance(answer, ConfigRecord) or set(answer) != set(CONSENT_FIELDS) or not all(
            isinstance(answer[k], kind) for k, kind in CONSENT_FIELDS.items()) or not REASON_CODE.fullmatch(
            answer["reason"]) or not LABEL.fullmatch(answer["label"]):
        return "bad-answer"
    if answer["consent"]:
        return "consent-on" if answer["can-afford"] else "budget-exhausted"
    return answer["reason"] if answer["reason"] not in ("consent-on", "budget-exhausted") else "consent-off"


def equal_weight_mean(records: list[ArrayRecord]) -> ArrayRecord:
    """The coordinate-wise mean of ``records`` (same keys, shapes and dtypes), each with weight ``1/len(records)``;
    summed in float64 so the order of replies does not change the result beyond the final rounding."""
    first = records[0]
    mean = {}
    for key in first.keys():
        total = np.zeros(first[key].shape, dtype=np.float64)
        for record in records:
            total += record[key].numpy()
        mean[key] = Array((total / len(records)).astype(first[key].numpy().dtype))
    return ArrayRecord(mean)


def _train_metrics(metrics: list[MetricRecord]) -> MetricRecord:
    """The largest lifetime ε any node reported, how many updates were averaged, and how many of them came from
    repeatable (not private) research runs."""
    return MetricRecord({"max-epsilon": max(float(m["epsilon"]) for m in metrics), "updates": len(metrics),
                         "not-private-updates": sum(1 for m in metrics if int(m["private"]) == 0)})
