"""The typed run configuration shared by the ServerApp, the ClientApp and the runners.

Built once from Flower's run config (``[tool.flwr.app.config]`` plus any
``--run-config`` overrides, or the in-process runner's mapping) and passed down.
Unknown keys and values of the wrong type or range are ``ConfigError``s naming
the key, the value given and what was expected.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, get_type_hints

from federated.errors import ConfigError
from federated.limits import shown

DP_MODES = ("none", "local", "central", "both")
"""What a run asks for: ``local`` DP-SGD on each node (``noise-multiplier``, and each node's policy may add
more), ``central`` workspace-level DP-FedAvg on the server (``central-*`` keys), ``both``, or ``none``."""
CENTRAL_MODES = ("central", "both")


@dataclass(frozen=True)
class RunConfig:
    """One federated run: rounds, local DP-SGD settings, the privacy target and where things live.

    Local DP-SGD draws each step's batch by Poisson sampling with rate ``sample-rate`` (the same public rate on
    every node, so it reveals nothing about a workspace's size) and divides the noisy sum of clipped
    gradients by ``batch-size`` (a public normalizer that scales the step like the learning rate; set it near
    ``sample-rate`` times a typical workspace's number of training messages).

    ``dp-mode`` (one of ``DP_MODES``) says which DP mechanisms the server asks for; with central DP the
    server clips each workspace's update to ``central-clipping-norm``, adds Gaussian noise with
    multiplier ``central-noise-multiplier`` to the average and reports ε at ``central-delta``
    (``server.central_dp``).
    """

    num_rounds: int = 3
    local_steps: int = 10
    sample_rate: float = 0.05
    batch_size: int = 32
    lr: float = 0.1
    noise_multiplier: float = 1.0
    max_grad_norm: float = 1.0
    fraction_train: float = 1.0
    fraction_evaluate: float = 1.0
    min_train_nodes: int = 1
    min_available_nodes: int = 1
    reply_timeout: float = 3600.0
    task: str = "nextchar"
    federation: str = "optin"
    seq_len: int = 64
    seed: int = 0
    workspaces_root: str = ""
    results_dir: str = ""
    dp_mode: str = "local"
    central_noise_multiplier: float = 1.0
    central_clipping_norm: float = 1.0
    central_delta: float = 1e-5
    init_model: str = ""
    """A checkpoint (``optin pretrain``) the server starts from instead of ``task.build_model(seed)``; read on
    the server only (``federated.tasks.checkpoint.initial_state_dict``). Empty: a fresh model."""

    def __post_init__(self) -> None:
        positive = ("num_rounds", "local_steps", "batch_size", "lr", "max_grad_norm", "seq_len", "reply_timeout")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{_key(name)}: expected a positive value, got {getattr(self, name)}")
        if not 0 < self.sample_rate <= 1:
            raise ConfigError(f"sample-rate: expected a value in (0, 1], got {self.sample_rate}")
        if self.noise_multiplier < 0:
            raise ConfigError(f"noise-multiplier: expected a value >= 0, got {self.noise_multiplier}")
        for name in ("fraction_train", "fraction_evaluate"):
            if not 0 < getattr(self, name) <= 1:
                raise ConfigError(f"{_key(name)}: expected a value in (0, 1], got {getattr(self, name)}")
        for name in ("min_train_nodes", "min_available_nodes"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{_key(name)}: expected a value >= 0, got {getattr(self, name)}")
        if self.dp_mode not in DP_MODES:
            raise ConfigError(f"dp-mode: expected one of {list(DP_MODES)}, got {self.dp_mode!r}")
        if self.dp_mode in ("none", "central") and self.noise_multiplier != 0:
            raise ConfigError(f"noise-multiplier: dp-mode {self.dp_mode!r} asks nodes for no local noise; expected 0, "
                              f"got {self.noise_multiplier}")
        if self.central_noise_multiplier < 0 or (self.dp_mode in CENTRAL_MODES and self.central_noise_multiplier == 0):
            raise ConfigError(f"central-noise-multiplier: expected a value > 0 (>= 0 without central DP), "
                              f"got {self.central_noise_multiplier}")
        if self.central_clipping_norm <= 0:
            raise ConfigError(f"central-clipping-norm: expected a positive value, got {self.central_clipping_norm}")
        if not 0 < self.central_delta < 1:
            raise ConfigError(f"central-delta: expected a value in (0, 1), got {self.central_delta}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], source: str = "run config") -> RunConfig:
        """Build from kebab-case keys (Flower's style); unknown keys are errors."""
        known = {_key(f.name): f for f in fields(cls)}
        types = get_type_hints(cls)
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            if key not in known:
                raise ConfigError(f"{source}: unknown key {shown(key)}; expected one of {sorted(known)}")
            field = known[key]
            expected = types[field.name]
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value) if abs(value) < 2**1023 else math.inf
            if not isinstance(value, expected) or isinstance(value, bool) and expected is not bool:
                raise ConfigError(
                    f"{source}: key {key!r} expected {expected.__name__}, got {shown(value)} ({type(value).__name__})"
                )
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{source}: key {key!r} expected a finite number, got {value!r}")
            kwargs[field.name] = value
        return cls(**kwargs)

    def to_mapping(self) -> dict[str, int | float | str]:
        """Kebab-case mapping, the inverse of ``from_mapping``."""
        return {_key(f.name): getattr(self, f.name) for f in fields(self)}


def _key(name: str) -> str:
    return name.replace("_", "-")
