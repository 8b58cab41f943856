"""How Optin's commands and reports show a number to a person: one rule everywhere.

``∞`` for an infinite figure (ε without DP), ``-`` for a missing one (no held-out data, nothing evaluated),
else the number in the format asked for. Files meant for programs use ``federated.json_numbers`` instead.
"""

from __future__ import annotations

import math


def figure(value: float | None, spec: str = ".3f") -> str:
    """``value`` for a table or report cell."""
    if value is None:
        return "-"
    return "∞" if math.isinf(value) and value > 0 else format(value, spec)
