"""Parsing the server's round config on the node: the server is not trusted to send sane values.

Guarantee: ``parse_train_config`` returns settings only for a ConfigRecord with exactly the keys of
``TRAIN_CONFIG_FIELDS``, each of its type (an int is accepted for a float), finite, in range and
under the hard caps (``MAX_BATCH_SIZE``, ``MAX_LR``; ``sample-rate`` in (0, 1]), so a hostile config cannot
crash the node. Anything else is a ``ConfigError`` naming the key, the value and what was expected. The
number of steps is bounded by the node's own limit (``clients.node_limits``), checked next.
"""

from __future__ import annotations

import math

from flwr.app import ConfigRecord

from clients.dp_training import DPSGDSettings
from federated.errors import ConfigError
from federated.limits import shown
from federated.protocol import TRAIN_CONFIG_FIELDS

MAX_BATCH_SIZE = 65_536
MAX_LR = 100.0

_RANGES: dict[str, tuple[float, float, bool]] = {
    # key: (lowest, highest, lowest allowed itself)
    "server-round": (0, math.inf, True),
    "local-steps": (1, math.inf, True),
    "sample-rate": (0.0, 1.0, False),
    "batch-size": (1, MAX_BATCH_SIZE, True),
    "lr": (0.0, MAX_LR, False),
    "noise-multiplier": (0.0, 1e6, True),
    "max-grad-norm": (0.0, 1e6, False),
}


def parse_train_config(record: ConfigRecord) -> tuple[DPSGDSettings, int]:
    """The requested DP-SGD settings and the server round, or a ``ConfigError``."""
    unknown = sorted(set(record.keys()) - set(TRAIN_CONFIG_FIELDS))
    if unknown:
        raise ConfigError(f"train config: unknown key(s) {shown(unknown)}; expected only "
                          f"{sorted(TRAIN_CONFIG_FIELDS)}")
    values: dict[str, int | float] = {}
    for key, kind in TRAIN_CONFIG_FIELDS.items():
        value = record.get(key)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value) if abs(value) < 2**1023 else math.inf
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ConfigError(f"train config: key {key!r} expected {kind.__name__}, got {shown(value)}")
        low, high, low_ok = _RANGES[key]
        if not ((value > low or (low_ok and value == low)) and value <= high and math.isfinite(float(value))):
            bound = (">=" if low_ok else ">") + f" {low}" + (f" and <= {high}" if math.isfinite(high) else "")
            raise ConfigError(f"train config: key {key!r} expected a value {bound}, got "
                              f"{shown(value)}")
        values[key] = value
    settings = DPSGDSettings(
        noise_multiplier=float(values["noise-multiplier"]),
        max_grad_norm=float(values["max-grad-norm"]),
        sample_rate=float(values["sample-rate"]),
        expected_batch_size=int(values["batch-size"]),
        local_steps=int(values["local-steps"]),
        lr=float(values["lr"]),
    )
    return settings, int(values["server-round"])
