"""Central, workspace-level DP-FedAvg: the aggregation ConsentAwareFedAvg uses when a run asks for central DP.

Guarantee: the sequence of global models the server releases after training rounds is
(ε, δ)-differentially private, with ε reported per round as ``central-epsilon`` at
``central-delta`` in the run's ``metrics.json``.

- **Neighbouring relation**: one workspace. Two federations are neighbours if one workspace's
  update is replaced by the zero update (the "zero-out" form of add/remove-one-workspace for a
  cohort whose size is fixed before the round), whatever that workspace's data.
- **Mechanism, per round with a release**: the cohort is the ``m`` nodes ConsentAwareFedAvg sent
  ``train`` to (every consenting node that can afford the round, or a uniform fixed-size sample of
  them with ``fraction-train`` < 1). Each accepted reply's update ``w_i - w`` is clipped to L2 norm
  ``C = central-clipping-norm`` (Flower's ``compute_clip_model_update``), the clipped models are
  averaged with **equal weights**, and Gaussian noise of std ``z * C / m`` (Flower's
  ``compute_stdv``, ``z = central-noise-multiplier``) is added to every coordinate, where ``m`` is
  the number of updates that actually entered the average. One workspace moves the average by at
  most ``C / m``, so each round is a Gaussian mechanism with noise multiplier ``z``.
- **Sampling**: the cohort is all eligible nodes or a fixed-size sample; that is *not* Poisson
  sampling, so no amplification is claimed: each release is accounted at sampling rate 1.
- **Accountant**: Opacus' RDP accountant on ``(z, q = 1, releases)``, i.e. the Rényi DP of the
  Gaussian mechanism composed over the rounds that released a model (no amplification, add-or-remove-one).
- **Composition, not a subclass**: ConsentAwareFedAvg decides which replies count (consent, budget,
  well-formed, in time), records and audits them, then hands exactly the accepted models to this
  aggregation; Flower's clipping and noise-scale functions are used, its DP strategy wrapper is not (it
  fixes the cohort size up front and would need the accepted replies read back from the run record).

Assumptions and limits: the server is trusted to run this mechanism; it sees each update before
noise (unless the node added local DP noise too, ``dp-mode = "both"``). The cohort and ``m`` are
treated as public: they follow from consent answers, budgets and whether a reply is well-formed,
not from the values of a well-formed update (a node that sends a malformed reply reveals that, as
it would without DP). The wrapped strategy validates, records and audits every reply; the released
model is the equal-weight average of the clipped updates it accepted, plus noise.
The noise of every release comes from a fresh ``numpy.random.Generator`` (PCG64) seeded with 128 bits
from the OS (``secrets``), never from the run config: every node receives the run config, so noise
derived from its seed could be regenerated and subtracted by any workspace to recover another's
clipped update. PCG64 is not a cryptographic generator and a single Gaussian sample in floating point
is not a defence against floating-point attacks; the secret per-release seed is. The
server's audit log records each update as received, before clipping, so its hash equals the node's
release hash.

Utility warning: when the noise added to the model is larger than the clipped average update it carries
(expected noise norm ``std * sqrt(d)`` over ``d`` coordinates against the average's norm), the released model
is mostly noise and training will not converge: every such round logs a warning and records
``central-signal-to-noise`` (< 1) in ``metrics.json``. Workspace-level DP needs many workspaces per round for
the ``1/m`` in the noise to make it small; a handful of workspaces cannot get useful central DP at a small ε.
"""

from __future__ import annotations

import logging
import math
import secrets

import numpy as np
from flwr.app import Array, ArrayRecord
from flwr.supercore.differential_privacy import compute_clip_model_update, compute_stdv, get_norm

from federated.config import RunConfig
from federated.privacy.accounting import epsilon
from server.run_record import RunRecord

log = logging.getLogger("optin.server.central_dp")


def noise_generator() -> np.random.Generator:
    """A generator for one release's central noise, seeded with 128 fresh bits from the OS."""
    return np.random.Generator(np.random.PCG64(secrets.randbits(128)))


class CentralDP:
    """Clip, equal-weight average and noise the accepted models of a round; see the module docstring for the
    guarantee. Called by ``ConsentAwareFedAvg.aggregate_train`` with the model it sent and the models it accepted."""

    def __init__(self, noise_multiplier: float, clipping_norm: float, delta: float, record: RunRecord) -> None:
        if noise_multiplier <= 0:
            raise ValueError("central DP needs a noise multiplier > 0")
        if clipping_norm <= 0:
            raise ValueError("central DP needs a clipping norm > 0")
        self.noise_multiplier = noise_multiplier
        self.clipping_norm = clipping_norm
        self.delta = delta
        self.record = record
        self.releases = 0

    @classmethod
    def from_config(cls, config: RunConfig, record: RunRecord) -> CentralDP:
        return cls(config.central_noise_multiplier, config.central_clipping_norm, config.central_delta, record)

    def epsilon(self) -> float:
        """ε of every release so far at ``delta`` (RDP, Gaussian mechanism, no amplification)."""
        return epsilon([(self.noise_multiplier, 1.0, self.releases)], self.delta) if self.releases else 0.0

    def __call__(self, server_round: int, sent: ArrayRecord, accepted: list[ArrayRecord]) -> ArrayRecord:
        """The noised equal-weight average of ``accepted``, each clipped to ``clipping_norm`` around ``sent``."""
        current = sent.to_numpy_ndarrays()
        clipped = []
        for record in accepted:
            arrays = record.to_numpy_ndarrays()
            if get_norm([a - c for a, c in zip(arrays, current, strict=True)]) > 0:  # Flower divides by the norm
                compute_clip_model_update(arrays, current, self.clipping_norm)
            clipped.append(arrays)
        cohort = len(clipped)
        std = compute_stdv(self.noise_multiplier, self.clipping_norm, cohort)
        rng = noise_generator()
        released = {}
        update = []
        for name, column, base in zip(sent.keys(), zip(*clipped, strict=True), current, strict=True):
            mean = np.mean(np.stack(column), axis=0).astype(column[0].dtype)
            update.append(mean - base)
            released[name] = Array(mean + rng.normal(0.0, std, mean.shape).astype(mean.dtype))
        self.releases += 1
        spent = self.epsilon()
        signal = float(get_norm(update))
        noise = std * math.sqrt(sum(a.size for a in current))
        ratio = signal / noise
        self.record.round(server_round).metrics.update({
            "central-epsilon": spent, "central-delta": self.delta, "central-releases": self.releases,
            "central-cohort": cohort, "central-noise-std": std, "central-signal-to-noise": ratio})
        log.info("round %d: central DP release %d: %d update(s) clipped to %g, noise std %.5f; ε=%.3f (δ=%g)",
                 server_round, self.releases, cohort, self.clipping_norm, std, spent, self.delta)
        if ratio < 1:
            log.warning("round %d: central DP noise (expected norm %.3g) is %.0fx the average update it carries "
                        "(norm %.3g): the released model is mostly noise. More workspaces per round, a larger "
                        "clipping norm or a larger ε would help; see docs/experiments.md", server_round, noise,
                        1 / ratio if ratio > 0 else math.inf, signal)
        return ArrayRecord(released)
