"""What the server learned in a run, per round and per node, written as ``metrics.json``.

Only what nodes sent (consent answers, allowed metrics) and what the server
decided (who was sampled, who was skipped and why) is recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from federated import json_numbers


@dataclass
class RoundRecord:
    """One round: consent answers, who trained, who was skipped and why, aggregated metrics."""

    consent: dict[int, str] = field(default_factory=dict)
    trained: dict[int, dict[str, float]] = field(default_factory=dict)
    evaluated: dict[int, dict[str, float]] = field(default_factory=dict)
    skipped: dict[int, str] = field(default_factory=dict)
    dropped: dict[int, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class RunRecord:
    """All rounds of a run; round 0 is the evaluation of the initial model."""

    config: dict[str, Any]
    rounds: dict[int, RoundRecord] = field(default_factory=dict)
    labels: dict[int, str] = field(default_factory=dict)
    """Node id -> the label its operator chose to share (the policy's ``label``); nodes without one are absent."""

    def round(self, server_round: int) -> RoundRecord:
        return self.rounds.setdefault(server_round, RoundRecord())

    def nodes(self) -> dict[int, dict[str, Any]]:
        """Per node: last consent reason, rounds joined, and the last ε/δ it reported."""
        summary: dict[int, dict[str, Any]] = {}
        for number in sorted(self.rounds):
            record = self.rounds[number]
            for node_id, reason in record.consent.items():
                entry = summary.setdefault(node_id, {"rounds_joined": 0, "epsilon": 0.0, "delta": None})
                entry["consent"] = reason
                if node_id in self.labels:
                    entry["label"] = self.labels[node_id]
            for node_id, metrics in record.trained.items():
                entry = summary[node_id]
                entry["rounds_joined"] += 1
                entry["epsilon"] = metrics["epsilon"]
                entry["delta"] = metrics["delta"]
        # Evaluation replies carry no metrics (nodes keep their held-out results): nothing per node to add.
        return summary

    def to_json(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "rounds": [
                {"round": number, "metrics": r.metrics, "consent": _keys(r.consent), "trained": _keys(r.trained),
                 "evaluated": _keys(r.evaluated), "skipped": _keys(r.skipped), "dropped": _keys(r.dropped)}
                for number, r in sorted(self.rounds.items())
            ],
            "nodes": _keys(self.nodes()),
        }

    def write(self, path: Path) -> None:
        """Write ``metrics.json`` atomically (a reader never sees half a file)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json_numbers.dumps(self.to_json()), encoding="utf-8")
        tmp.replace(path)


def _keys(mapping: dict[int, Any]) -> dict[str, Any]:
    return {str(k): v for k, v in mapping.items()}
