"""The node's own limits on what the server may ask: checked before any work, whatever the server sends.

Guarantee: a run whose ``seq-len`` is over ``max-seq-len``, or whose task or federation name is longer than
``MAX_NAME_CHARS``, and a round that asks for more than ``max-local-steps`` DP-SGD steps, is refused with
``bad-config`` before a model is built or any data is read. With the other caps (``clients.train_config``:
batch-size, learning rate, sampling rate; ``federated.limits.PHYSICAL_BATCH``) this bounds the node's
memory and time per message. The limits come from the node config (set only by whoever starts the node,
``optin node --node-config``), defaulting to ``federated.limits``; a server cannot change them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from federated.config import RunConfig
from federated.errors import ConfigError
from federated.limits import MAX_LOCAL_STEPS, MAX_SEQ_LEN

if TYPE_CHECKING:  # dp_training imports torch; the CLI builds node commands without it
    from clients.dp_training import DPSGDSettings

MAX_SEQ_LEN_KEY = "max-seq-len"
MAX_LOCAL_STEPS_KEY = "max-local-steps"
MAX_NAME_CHARS = 128
"""The longest task or federation name a node accepts (names are logged and matched against the policy)."""


@dataclass(frozen=True)
class NodeLimits:
    """What this node accepts from a server: see the module docstring."""

    max_seq_len: int = MAX_SEQ_LEN
    max_local_steps: int = MAX_LOCAL_STEPS

    @classmethod
    def from_node_config(cls, node_config: Mapping[str, object]) -> NodeLimits:
        """The limits in the node config (keys ``max-seq-len``, ``max-local-steps``), else the defaults."""
        values = {}
        for key, field in ((MAX_SEQ_LEN_KEY, "max_seq_len"), (MAX_LOCAL_STEPS_KEY, "max_local_steps")):
            if key in node_config:
                values[field] = _positive_int(node_config[key], key)
        return cls(**values)

    def check_run(self, config: RunConfig) -> None:
        """``ConfigError`` if the run asks for more than this node accepts."""
        if config.seq_len > self.max_seq_len:
            raise ConfigError(f"run config: seq-len {config.seq_len} is over this node's limit of "
                              f"{self.max_seq_len} (node config {MAX_SEQ_LEN_KEY!r})")
        for key, value in (("task", config.task), ("federation", config.federation)):
            if len(value) > MAX_NAME_CHARS:
                raise ConfigError(f"run config: {key} is a name of {len(value)} characters; this node accepts at "
                                  f"most {MAX_NAME_CHARS}")

    def check_round(self, settings: DPSGDSettings) -> None:
        """``ConfigError`` if the round asks for more steps than this node runs."""
        if settings.local_steps > self.max_local_steps:
            raise ConfigError(f"train config: local-steps {settings.local_steps} is over this node's limit of "
                              f"{self.max_local_steps} (node config {MAX_LOCAL_STEPS_KEY!r})")


def _positive_int(value: object, key: str) -> int:
    try:
        number = int(str(value))
    except ValueError:
        number = 0
    if number < 1:
        raise ConfigError(f"node config {key!r}: expected a positive integer, got {str(value)[:60]!r}")
    return number
