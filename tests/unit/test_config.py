import pytest

from federated.config import RunConfig
from federated.errors import ConfigError


def test_round_trip_and_int_to_float() -> None:
    config = RunConfig.from_mapping({"num-rounds": 7, "lr": 1, "task": "nextchar"})
    assert (config.num_rounds, config.lr) == (7, 1.0)
    assert RunConfig.from_mapping(config.to_mapping()) == config


@pytest.mark.parametrize("values, fragment", [
    ({"num-round": 3}, "unknown key 'num-round'"),
    ({"lr": "fast"}, "key 'lr' expected float, got 'fast'"),
    ({"num-rounds": True}, "key 'num-rounds' expected int"),
    ({"num-rounds": 0}, "num-rounds: expected a positive value, got 0"),
    ({"test-fraction": 0.2}, "unknown key 'test-fraction'"),  # the held-out split is the node's (policy)
    ({"noise-multiplier": -0.5}, "noise-multiplier: expected a value >= 0"),
    ({"fraction-train": 0.0}, "fraction-train: expected a value in (0, 1]"),
    ({"fraction-evaluate": 1.5}, "fraction-evaluate: expected a value in (0, 1], got 1.5"),
    ({"reply-timeout": 0}, "reply-timeout: expected a positive value, got 0"),
])
def test_bad_values_name_key_and_expectation(values: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        RunConfig.from_mapping(values)
    assert fragment in str(info.value)
