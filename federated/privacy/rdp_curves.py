"""RDP curves of the Poisson-subsampled Gaussian mechanism, kept on disk so a fresh process need not recompute them.

A node answers each message in a fresh process (``clients.node_worker``), and every ``query`` and ``train``
computes ε from the ledger's history: one curve per distinct (noise multiplier, sampling rate), about 0.1 s
each with Opacus' 151 default orders. ``CurveFolder`` stores each curve once, as ``.npy`` (no pickles), named
by the exact bits of its two parameters, and reads it back in about a millisecond.

Guarantee: ``CurveFolder.curve(z, q)`` returns exactly what ``opacus.accountants.analysis.rdp.compute_rdp(q, z,
steps=1, orders=RDPAccountant.DEFAULT_ALPHAS)`` returns, bit for bit: a stored curve is used only if its file
holds a float64 array of the orders' length with no NaN and no negative value, and whose name matches the exact
parameters; anything else is recomputed and rewritten (written to a temporary file, then renamed, so a reader
never sees half a curve). Assumption: only the node's operator can write the folder (it sits in the node's
Flower home, next to the SuperExec secret); whoever can write it could change ε, as they could edit the
ledger.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from federated.privacy.rdp_analysis import ORDERS
from federated.privacy.rdp_analysis import rdp as rdp_analysis


def compute_curve(noise_multiplier: float, sample_rate: float) -> np.ndarray:
    """One step's RDP at each of Opacus' default orders (read-only)."""
    curve = rdp_analysis.compute_rdp(q=sample_rate, noise_multiplier=noise_multiplier, steps=1, orders=list(ORDERS))
    curve = np.asarray(curve, dtype=np.float64)
    curve.flags.writeable = False
    return curve


class CurveFolder:
    """A folder of stored curves; see the module docstring for the guarantee."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, noise_multiplier: float, sample_rate: float) -> Path:
        return self.folder / f"rdp-z{float(noise_multiplier).hex()}-q{float(sample_rate).hex()}.npy"

    def curve(self, noise_multiplier: float, sample_rate: float) -> np.ndarray:
        path = self.path(noise_multiplier, sample_rate)
        stored = _read(path)
        if stored is not None:
            return stored
        curve = compute_curve(noise_multiplier, sample_rate)
        _write(path, curve)
        return curve


def _read(path: Path) -> np.ndarray | None:
    try:
        curve = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    if curve.dtype != np.float64 or curve.shape != (len(ORDERS),) or np.isnan(curve).any() or (curve < 0).any():
        return None
    curve.flags.writeable = False
    return curve


def _write(path: Path, curve: np.ndarray) -> None:
    """Best effort: a folder that cannot be written only means the next process computes the curve again."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".rdp-", suffix=".npy")
        with os.fdopen(fd, "wb") as out:
            np.save(out, curve, allow_pickle=False)
        os.replace(temporary, path)
    except OSError:
        pass
