"""The TOML files Optin writes read back as written: ∞, NaN, quotes and control characters included."""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from experiments.runners.processes import toml_table
from experiments.runners.results import write_config
from federated.config import RunConfig
from federated.errors import ConfigError


def test_a_results_config_with_infinity_reads_back(tmp_path: Path) -> None:
    config = replace(RunConfig(), results_dir='a "quoted"\\path\twith\ttabs')
    values = {**config.to_mapping(), "max-epsilon": math.inf}
    read = tomllib.loads(write_config(tmp_path, values).read_text(encoding="utf-8"))
    assert read == values
    assert RunConfig.from_mapping(config.to_mapping()) == config


def test_the_run_config_override_file_reads_back() -> None:
    values = {"a": math.inf, "b": -math.inf, "c": 1, "d": "x\u0007\"y", "e": 0.1}
    read = tomllib.loads(toml_table(values))
    assert read == values
    assert math.isnan(tomllib.loads(toml_table({"n": math.nan}))["n"])


def test_every_run_config_default_is_the_apps_default() -> None:
    """``flwr run`` starts from ``[tool.flwr.app.config]``, the in-process modes from ``RunConfig()``: one run."""
    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["tool"]["flwr"]["app"]["config"] == RunConfig().to_mapping()


def test_run_config_fields_of_every_scalar_type_parse() -> None:
    """A field's type comes from its annotation, so a new bool field parses (and an int is not taken for one)."""

    @dataclass(frozen=True)
    class WithFlag(RunConfig):
        verbose: bool = False

    assert WithFlag.from_mapping({"verbose": True, "num-rounds": 2}) == WithFlag(num_rounds=2, verbose=True)
    with pytest.raises(ConfigError, match="'verbose' expected bool"):
        WithFlag.from_mapping({"verbose": 1})
    with pytest.raises(ConfigError, match="'num-rounds' expected int"):
        WithFlag.from_mapping({"num-rounds": True})
