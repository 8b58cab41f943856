"""One encoding of ∞ in every JSON results file Optin writes (``metrics.json``, sweep cells, comparisons).

JSON has no Infinity or NaN. ε = ∞ (no DP) is a real figure, not a missing one, so ±∞ is written as the strings
``"inf"`` and ``"-inf"`` (the spelling TOML, CSV and Python's ``float()`` read back); NaN, which no figure
should be, is written as ``null``. :func:`loads` turns the strings back into floats, so a file written by
:func:`dumps` reads back equal to what was written (NaN aside). ``config.toml`` keeps TOML's own ``inf``.
"""

from __future__ import annotations

import json
import math
from typing import Any

_SPELLINGS = {"inf": math.inf, "-inf": -math.inf}


def encode(value: Any) -> Any:
    """``value`` with every non-finite float replaced by its JSON spelling, inside dicts and lists too."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [encode(v) for v in value]
    return value


def decode(value: Any) -> Any:
    """The inverse of :func:`encode`: ``"inf"``/``"-inf"`` values (not keys) become floats again."""
    if isinstance(value, str):
        return _SPELLINGS.get(value, value)
    if isinstance(value, dict):
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


def dumps(value: Any, indent: int | None = 2) -> str:
    """Strict JSON (``allow_nan=False``: nothing non-standard can slip through) with ∞ encoded."""
    return json.dumps(encode(value), indent=indent, allow_nan=False)


def loads(text: str) -> Any:
    """Parse a file written by :func:`dumps`, ∞ restored."""
    return decode(json.loads(text))
