"""Consent-aware FedAvg: query every node, sample only those that consent, then FedAvg.

Guarantee (server side): a node whose answer to this round's ``query`` was not
an explicit ``consent = true`` (consent off, a policy problem, an error, no
answer, a malformed answer) receives neither a ``train`` nor an ``evaluate``
message in that round; each skip is logged with its reason. The nodes enforce
consent themselves as well: this is the server honouring it, not the only
safeguard.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from federated.protocol import CONSENT_KEY
from server.run_record import RunRecord

log = logging.getLogger("optin.server.strategy")


class ConsentAwareFedAvg(FedAvg):
    """FedAvg over the nodes that consent this round (a uniform sample of ``fraction_train`` of them)."""

    def __init__(self, record: RunRecord, *, fraction_train: float = 1.0, min_train_nodes: int = 1,
                 min_available_nodes: int = 1, seed: int = 0, query_timeout: float = 60.0,
                 connect_timeout: float = 300.0) -> None:
        super().__init__(fraction_train=fraction_train, fraction_evaluate=1.0, min_train_nodes=min_train_nodes,
                         min_evaluate_nodes=0, min_available_nodes=min_available_nodes,
                         train_metrics_aggr_fn=_aggregate_train_metrics)
        self.record = record
        self.query_timeout = query_timeout
        self.connect_timeout = connect_timeout
        self._rng = random.Random(seed)
        self._eligible: dict[int, list[int]] = {}

    def eligible_nodes(self, server_round: int, grid: Grid) -> list[int]:
        """Query every connected node once per round; the sorted ids of those that consent."""
        if server_round in self._eligible:
            return self._eligible[server_round]
        node_ids = sorted(self._wait_for_nodes(grid))
        queries = [Message(RecordDict(), node_id, MessageType.QUERY, group_id=str(server_round))
                   for node_id in node_ids]
        replies = {m.metadata.src_node_id: m for m in grid.send_and_receive(queries, timeout=self.query_timeout)}
        round_record = self.record.round(server_round)
        eligible = []
        for node_id in node_ids:
            reason = _consent_reason(replies.get(node_id))
            round_record.consent[node_id] = reason
            if reason == "consent-on":
                eligible.append(node_id)
            else:
                round_record.skipped[node_id] = reason
                log.info("round %d: skipping node %d (%s)", server_round, node_id, reason)
        self._eligible[server_round] = eligible
        return eligible

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        eligible = self.eligible_nodes(server_round, grid)
        if len(eligible) < self.min_train_nodes:
            log.warning("round %d: %d consenting node(s), fewer than min-train-nodes=%d; no training this round",
                        server_round, len(eligible), self.min_train_nodes)
            return []
        size = min(len(eligible), max(int(len(eligible) * self.fraction_train), self.min_train_nodes))
        sampled = sorted(self._rng.sample(eligible, size))
        for node_id in sorted(set(eligible) - set(sampled)):
            self.record.round(server_round).skipped[node_id] = "not-sampled"
        log.info("round %d: training on %d of %d consenting node(s)", server_round, size, len(eligible))
        config["server-round"] = server_round
        return self._messages(arrays, config, sampled, MessageType.TRAIN, server_round)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        config["server-round"] = server_round
        return self._messages(arrays, config, self.eligible_nodes(server_round, grid), MessageType.EVALUATE,
                              server_round)

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        round_record = self.record.round(server_round)
        for reply in replies:
            if reply.has_error():
                round_record.skipped[reply.metadata.src_node_id] = f"train-error: {reply.error.reason}"
            else:
                round_record.trained[reply.metadata.src_node_id] = dict(reply.content["metrics"])
        arrays, metrics = super().aggregate_train(server_round, replies)
        if metrics is not None:
            round_record.metrics.update(metrics)
        return arrays, metrics

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        replies = list(replies)
        round_record = self.record.round(server_round)
        for reply in replies:
            if not reply.has_error():
                round_record.evaluated[reply.metadata.src_node_id] = dict(reply.content["metrics"])
        metrics = super().aggregate_evaluate(server_round, replies)
        if metrics is not None:
            round_record.metrics.update(metrics)
        return metrics

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


def _consent_reason(reply: Message | None) -> str:
    """The node's reason code, or why its answer could not count as consent."""
    if reply is None:
        return "no-answer"
    if reply.has_error():
        return "query-error"
    answer = reply.content.get(CONSENT_KEY) if CONSENT_KEY in reply.content else None
    if not isinstance(answer, ConfigRecord) or not isinstance(answer.get("consent"), bool):
        return "bad-answer"
    reason = answer.get("reason")
    if answer["consent"]:
        return "consent-on"
    return reason if isinstance(reason, str) and reason != "consent-on" else "consent-off"


def _aggregate_train_metrics(contents: list[RecordDict], weight_key: str) -> MetricRecord:
    """Example-weighted mean train loss, and the largest ε any node reported."""
    metrics = [next(iter(c.metric_records.values())) for c in contents]
    total = sum(float(m[weight_key]) for m in metrics)
    loss = sum(float(m["train-loss"]) * float(m[weight_key]) for m in metrics) / total
    return MetricRecord({"train-loss": loss, "max-epsilon": max(float(m["epsilon"]) for m in metrics)})
