"""The typed run configuration shared by the ServerApp, the ClientApp and the runners.

Built once from Flower's run config (``[tool.flwr.app.config]`` plus any
``--run-config`` overrides, or the in-process runner's mapping) and passed down.
Unknown keys and values of the wrong type or range are ``ConfigError``s naming
the key, the value given and what was expected.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from federated.errors import ConfigError


@dataclass(frozen=True)
class RunConfig:
    """One federated run: rounds, local DP-SGD settings, the privacy target and where things live."""

    num_rounds: int = 3
    local_steps: int = 10
    batch_size: int = 32
    lr: float = 0.1
    noise_multiplier: float = 1.0
    max_grad_norm: float = 1.0
    fraction_train: float = 1.0
    min_train_nodes: int = 1
    min_available_nodes: int = 1
    task: str = "nextchar"
    federation: str = "optin"
    seq_len: int = 64
    test_fraction: float = 0.2
    seed: int = 0
    workspaces_root: str = ""
    results_dir: str = ""

    def __post_init__(self) -> None:
        positive = ("num_rounds", "local_steps", "batch_size", "lr", "max_grad_norm", "seq_len")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{_key(name)}: expected a positive value, got {getattr(self, name)}")
        if self.noise_multiplier < 0:
            raise ConfigError(f"noise-multiplier: expected a value >= 0, got {self.noise_multiplier}")
        if not 0 < self.test_fraction < 1:
            raise ConfigError(f"test-fraction: expected a value in (0, 1), got {self.test_fraction}")
        if not 0 < self.fraction_train <= 1:
            raise ConfigError(f"fraction-train: expected a value in (0, 1], got {self.fraction_train}")
        for name in ("min_train_nodes", "min_available_nodes"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{_key(name)}: expected a value >= 0, got {getattr(self, name)}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], source: str = "run config") -> RunConfig:
        """Build from kebab-case keys (Flower's style); unknown keys are errors."""
        known = {_key(f.name): f for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            if key not in known:
                raise ConfigError(f"{source}: unknown key {key!r}; expected one of {sorted(known)}")
            field = known[key]
            expected = {"int": int, "float": float, "str": str}[str(field.type)]
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, expected) or isinstance(value, bool):
                raise ConfigError(
                    f"{source}: key {key!r} expected {expected.__name__}, got {value!r} ({type(value).__name__})"
                )
            kwargs[field.name] = value
        return cls(**kwargs)

    def to_mapping(self) -> dict[str, int | float | str]:
        """Kebab-case mapping, the inverse of ``from_mapping``."""
        return {_key(f.name): getattr(self, f.name) for f in fields(self)}


def _key(name: str) -> str:
    return name.replace("_", "-")
