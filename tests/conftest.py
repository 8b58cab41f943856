"""Shared fixtures: small synthetic federations on disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from experiments.runners.in_process import FederationLayout, make_synthetic_federation
from federated.config import RunConfig
from federated.data import SyntheticSpec

SMALL_SPEC = SyntheticSpec(num_workspaces=4, seed=3, min_messages=150, max_messages=300)
SMALL_CONFIG = RunConfig(num_rounds=3, local_steps=15, sample_rate=0.08, batch_size=16, lr=0.1, noise_multiplier=1.0,
                         max_grad_norm=1.0, seed=3)


@pytest.fixture
def small_federation(tmp_path: Path) -> FederationLayout:
    """Four small workspaces; workspace 1 has no policy file (so it does not consent)."""
    return make_synthetic_federation(tmp_path / "workspaces", SMALL_SPEC, opted_out=[1])
