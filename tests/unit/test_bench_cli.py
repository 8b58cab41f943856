"""The benchmarks' command lines: each ``python -m experiments.bench.<name>`` module's Typer app answers ``--help``
with its description and options, and a list option takes several values after one flag, as BENCHMARKS.md
writes it (``--sizes 100 1000``)."""

from __future__ import annotations

import importlib

import pytest
import typer
from typer.testing import CliRunner

from experiments.bench.common import bench_app

OPTION_OF = {
    "demo_threads": "--busy",
    "deployment_overhead": "--local-steps",
    "dp_overhead": "--batch-size",
    "inprocess_overhead": "--profile",
    "privacy_cost": "--releases",
    "scale": "--evaluate-all",
    "simulation_overhead": "--timeout",
}
"""Each benchmark, and an option of its own its help must list."""


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("name", sorted(OPTION_OF))
def test_help_shows_description_and_options(name: str) -> None:
    module = importlib.import_module(f"experiments.bench.{name}")
    result = CliRunner().invoke(module.app, ["--help"])
    assert result.exit_code == 0, result.output
    assert OPTION_OF[name] in result.output
    assert "--seed" in result.output
    description = module.__doc__ if name != "deployment_overhead" else module.main.__doc__
    assert flat(description.split("\n\n")[0]) in flat(result.output)


def test_scale_hides_its_child_options() -> None:
    from experiments.bench.scale import app

    result = CliRunner().invoke(app, ["-h"])
    assert result.exit_code == 0, result.output
    for hidden in ("--child", "--variant", "--fraction-evaluate"):
        assert hidden not in result.output


def _recording_app(seen: dict[str, object]) -> typer.Typer:
    def main(
        sizes: list[int] = typer.Option([1]),  # noqa: B008 - Typer's way of declaring an option
        messages: tuple[int, int] = typer.Option((1, 2)),  # noqa: B008
        seed: int = typer.Option(0),  # noqa: B008
    ) -> None:
        seen.update(sizes=sizes, messages=messages, seed=seed)

    return bench_app(main, "A test bench.")


@pytest.mark.parametrize(("args", "sizes"), [
    (["--sizes", "10", "100", "--messages", "3", "4", "--sizes", "-5", "--seed", "7"], [10, 100, -5]),
    (["--sizes=10", "100", "--messages", "3", "4", "--seed", "7"], [10, 100]),
    (["--seed", "7", "--messages", "3", "4", "--sizes", "10", "--sizes", "100"], [10, 100]),
])
def test_list_option_takes_several_values_after_one_flag(args: list[str], sizes: list[int]) -> None:
    seen: dict[str, object] = {}
    result = CliRunner().invoke(_recording_app(seen), args)
    assert result.exit_code == 0, result.output
    assert seen == {"sizes": sizes, "messages": (3, 4), "seed": 7}


def test_a_value_after_a_single_value_option_is_still_an_error() -> None:
    result = CliRunner().invoke(_recording_app({}), ["--seed", "7", "8"])
    assert result.exit_code != 0
    assert "8" in result.output
