"""The in-process grid delivers copies, keeps each node's state, and turns crashes into error replies."""

import numpy as np
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from federated.inprocess import FIRST_NODE_ID, run_in_process

client = ClientApp()


@client.train()
def train(msg: Message, context: Context) -> Message:
    if context.node_config["crash"] == "yes":
        raise RuntimeError("disk on fire")
    arrays = msg.content["arrays"]
    arrays["w"] = ArrayRecord([np.full(3, 99.0)])["0"]  # tries to tamper with what it received
    seen = int(context.state["seen"]["n"]) + 1 if "seen" in context.state else 1
    context.state["seen"] = ConfigRecord({"n": seen})
    return Message(RecordDict({"metrics": MetricRecord({"seen": seen})}), reply_to=msg)


def test_copies_state_and_errors() -> None:
    outcome: dict = {}
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        arrays = ArrayRecord([np.zeros(3)])
        for _ in range(2):
            messages = [Message(RecordDict({"arrays": arrays}), n, "train") for n in grid.get_node_ids()]
            outcome["replies"] = list(grid.send_and_receive(messages))
        outcome["arrays"] = arrays
        outcome["run_config"] = dict(context.run_config)

    observed = []
    grid = run_in_process(server, client, [{"crash": "no"}, {"crash": "yes"}], {"k": 1},
                          observer=lambda t, g, r: observed.append((t, len(r))))
    replies = {m.metadata.src_node_id: m for m in outcome["replies"]}
    assert sorted(replies) == [FIRST_NODE_ID, FIRST_NODE_ID + 1]
    assert replies[FIRST_NODE_ID].content["metrics"]["seen"] == 2  # context.state persisted across messages
    assert replies[FIRST_NODE_ID + 1].has_error()
    assert "disk on fire" in replies[FIRST_NODE_ID + 1].error.reason
    assert list(outcome["arrays"].keys()) == ["0"]  # the node's tampering never reached the server's record
    assert outcome["run_config"] == {"k": 1}
    assert observed == [("train", 2), ("train", 2)]
    assert [n.context.node_config for n in grid.nodes] == [{"crash": "no"}, {"crash": "yes"}]
