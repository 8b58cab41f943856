"""The central DP a workspace's runs said the server adds, as ε over the rounds the workspace trained in.

Guarantee (conditional): if the server really clipped each round's updates and added Gaussian noise with the
noise multiplier the run config stated (``server.central_dp``), the sequence of global models is
(ε, δ)-DP for this workspace's whole contribution (workspace-level), with ε from Opacus' RDP accountant
composed over the releases this workspace took part in (the ``central`` field of its ``release`` audit
entries; rounds without it are post-processing of earlier releases and of other workspaces' data).
Assumptions: the server is honest — the node cannot check that the noise was added, so this ε is a claim,
never counted in the ledger; sampling rate 1 (no amplification: cohorts are not Poisson-sampled).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from federated.privacy.accounting import epsilon


@dataclass(frozen=True)
class CentralClaim:
    releases: int
    epsilon: float
    delta: float


def central_claim(entries: Iterable[dict[str, Any]], delta: float) -> CentralClaim | None:
    """The claim from a workspace's audit entries (verified by the caller), or None if no run stated one."""
    history = []
    for entry in entries:
        central = entry.get("central") if entry.get("kind") == "release" else None
        if not isinstance(central, dict):
            continue
        z = central.get("noise_multiplier")
        if isinstance(z, (int, float)) and not isinstance(z, bool) and math.isfinite(z) and z > 0:
            history.append((float(z), 1.0, 1))
        else:  # a stated mechanism without noise: nothing to claim for it
            return CentralClaim(len(history) + 1, math.inf, delta)
    if not history:
        return None
    return CentralClaim(len(history), epsilon(history, delta), delta)
