"""Calling the ClientApp directly, as a SuperNode would, for node-side tests."""

from __future__ import annotations

from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict

from clients.app import app as client_app
from federated.config import RunConfig
from federated.inprocess import act_as, stamp
from federated.tasks import get_task


def train_config(server_round: int = 1, **overrides: float | int) -> ConfigRecord:
    values = {"server-round": server_round, "local-steps": 3, "sample-rate": 0.05, "batch-size": 8, "lr": 0.1,
              "noise-multiplier": 1.0, "max-grad-norm": 1.0}
    values.update(overrides)
    return ConfigRecord(values)


def send(folder: Path, message_type: str, config: RunConfig, content: RecordDict, run_id: int = 1,
         group_id: str = "1", node_config: dict[str, str] | None = None) -> Message:
    """Deliver one message to the node serving ``folder``; returns its reply."""
    act_as(1, run_id)
    message = stamp(Message(content, 7, message_type, group_id=group_id), run_id)
    context = Context(run_id, 7, {"workspace": str(folder), **(node_config or {})}, RecordDict(), config.to_mapping())
    return client_app(message, context)


def send_train(folder: Path, config: RunConfig, run_id: int = 1, server_round: int = 1,
               node_config: dict[str, str] | None = None, **overrides: float | int) -> Message:
    task = get_task(config.task, config.seq_len)
    content = RecordDict({"arrays": ArrayRecord(task.build_model(config.seed).state_dict()),
                          "config": train_config(server_round, **overrides)})
    return send(folder, "train", config, content, run_id, str(server_round), node_config)


def send_query(folder: Path, config: RunConfig, **overrides: float | int) -> ConfigRecord:
    reply = send(folder, "query", config, RecordDict({"config": train_config(**overrides)}))
    return reply.content["consent"]
