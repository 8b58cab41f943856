"""Pydantic models for the research configs (sweeps, canary audits, ``optin irc``), with Optin's error messages.

Guarantee: ``validate_table`` returns a model only for a table whose every key is known, of the right TOML type
and in range; otherwise it raises one ``ConfigError`` naming the file, the key path (``datasets[0].kind``), the
value given and what was expected. Each table is validated on its own (the caller gives the key prefix of nested
tables), so an error's location is always one key of that table.

How a model states what it expects: each field's ``description`` is the expectation shown when its value is
missing, of the wrong type or out of range; a check that spans several keys raises :func:`key_error`, which
names the key it blames and its own expectation.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import PydanticCustomError

from federated.errors import ConfigError

Model = TypeVar("Model", bound=BaseModel)

KEY_ERROR = "optin_key"


class TableModel(BaseModel):
    """A TOML table: kebab-case keys, no unknown key, TOML's own types (no coercion: ``16.5`` is not an int)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, alias_generator=lambda n: n.replace("_", "-"),
                              populate_by_name=True)


def key_error(key: str, value: Any, expected: str) -> PydanticCustomError:
    """An error blaming ``key`` of the table being validated (raise it from a model validator)."""
    return PydanticCustomError(KEY_ERROR, "{expected}", {"key": key, "value": value, "expected": expected})


def validate_table(model: type[Model], raw: Any, source: Path | str, prefix: str = "",
                   context: dict[str, Any] | None = None) -> Model:
    """``raw`` (one parsed TOML table) as ``model``; ``ConfigError`` for the first problem found."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: key {prefix.rstrip('.') or '(file)'!r}: expected a table, got {raw!r}")
    try:
        return model.model_validate(raw, context=context)
    except ValidationError as exc:
        raise _config_error(model, raw, source, prefix, exc) from None


def _config_error(model: type[BaseModel], raw: dict[str, Any], source: Path | str, prefix: str,
                  exc: ValidationError) -> ConfigError:
    error = exc.errors(include_url=False)[0]
    if error["type"] == KEY_ERROR:
        ctx = error["ctx"]
        return ConfigError(f"{source}: key {prefix + ctx['key']!r}: expected {ctx['expected']}, got {ctx['value']!r}")
    key = str(error["loc"][0]) if error["loc"] else ""
    if error["type"] == "extra_forbidden":
        allowed = sorted(prefix + (f.alias or name) for name, f in model.model_fields.items())
        return ConfigError(f"{source}: unknown key {prefix + key!r}; expected one of {allowed}")
    field = next((f for name, f in model.model_fields.items() if key in (name, f.alias)), None)
    expected = field.description if field is not None and field.description else error["msg"]
    return ConfigError(f"{source}: key {prefix + key!r}: expected {expected}, got {raw.get(key)!r}")


def is_number(value: Any) -> bool:
    """A TOML number that is not NaN (``inf`` is a number)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def distinct(values: list[Any]) -> list[Any]:
    """``values`` if non-empty and without repeats; else ``ValueError`` (the field's description says why)."""
    if not values or len(set(values)) != len(values):
        raise ValueError("expected a non-empty list of distinct values")
    return values
