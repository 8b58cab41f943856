"""Central, workspace-level DP-FedAvg: Flower's server-side fixed-clipping DP wrapper around ConsentAwareFedAvg.

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
  Gaussian mechanism composed over the rounds that released a model. Flower's wrapper can account
  itself only for strategies that keep ``FedAvg.aggregate_train``; ConsentAwareFedAvg overrides it
  (to validate and record replies), so the server accounts the same mechanism here, and the
  tests recompute it with Flower's own RDP accountant (no amplification, add-or-remove-one).

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
server's audit log records each update after clipping (what entered the average), so its hash
equals the node's release hash only for updates already within the clipping norm.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable

import numpy as np
from flwr.app import Array, ArrayRecord, Message, MetricRecord
from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping
from flwr.supercore.differential_privacy import compute_clip_model_update, compute_stdv, get_norm

from federated.config import RunConfig
from federated.privacy.accounting import epsilon
from server.reply_check import check_train_reply
from server.strategy import ConsentAwareFedAvg

log = logging.getLogger("optin.server.central_dp")


def noise_generator() -> np.random.Generator:
    """A generator for one release's central noise, seeded with 128 fresh bits from the OS."""
    return np.random.Generator(np.random.PCG64(secrets.randbits(128)))


class CentralDPFedAvg(DifferentialPrivacyServerSideFixedClipping):
    """Workspace-level DP-FedAvg over a ConsentAwareFedAvg; see the module docstring for the guarantee.

    Consent gating is untouched: ``configure_train`` and ``configure_evaluate`` are the wrapped
    strategy's (Flower's wrapper delegates both), so only nodes that consent are ever sampled.
    """

    def __init__(self, strategy: ConsentAwareFedAvg, noise_multiplier: float, clipping_norm: float,
                 delta: float) -> None:
        # Flower's wrapper fixes the cohort size up front; here it is the number of updates each round
        # actually averages, so the noise is computed per round (``aggregate_train``).
        super().__init__(strategy, noise_multiplier, clipping_norm, num_sampled_clients=1)
        if noise_multiplier <= 0:
            raise ValueError("central DP needs a noise multiplier > 0")
        self.consent_strategy = strategy
        self.delta = delta
        self.releases = 0

    @classmethod
    def from_config(cls, strategy: ConsentAwareFedAvg, config: RunConfig) -> CentralDPFedAvg:
        return cls(strategy, config.central_noise_multiplier, config.central_clipping_norm, config.central_delta)

    def epsilon(self) -> float:
        """ε of every release so far at ``delta`` (RDP, Gaussian mechanism, no amplification)."""
        return epsilon([(self.noise_multiplier, 1.0, self.releases)], self.delta) if self.releases else 0.0

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Clip each acceptable update, let the wrapped strategy validate and record, then release the noised
        equal-weight average of the clipped updates it accepted."""
        replies = list(replies)
        key = self.consent_strategy.arrayrecord_key
        current = self.current_arrays.to_numpy_ndarrays()
        clipped: dict[int, list[np.ndarray]] = {}
        for reply in replies:
            # A reply the wrapped strategy will skip or drop never enters the average: leave it as it is.
            if reply.has_error() or check_train_reply(reply, self.current_arrays) is not None:
                continue
            arrays = reply.content[key].to_numpy_ndarrays()
            if get_norm([a - c for a, c in zip(arrays, current, strict=True)]) > 0:  # Flower divides by the norm
                compute_clip_model_update(arrays, current, self.clipping_norm)
            reply.content[key] = ArrayRecord(dict(zip(self.current_arrays.keys(), map(Array, arrays), strict=True)))
            clipped[reply.metadata.src_node_id] = arrays
        # Only its decisions (which replies count, whether the round updates the model at all), its record, audit
        # log and train metrics are used; the average is taken here, over the clipped updates, and noised.
        weighted, metrics = self.consent_strategy.aggregate_train(server_round, replies)
        round_record = self.consent_strategy.record.round(server_round)
        accepted = [arrays for node_id, arrays in clipped.items() if node_id in round_record.trained]
        if weighted is None or not accepted:
            return None, metrics
        cohort = len(accepted)
        std = compute_stdv(self.noise_multiplier, self.clipping_norm, cohort)
        rng = noise_generator()
        released = {}
        for name, column in zip(self.current_arrays.keys(), zip(*accepted, strict=True), strict=True):
            mean = np.mean(np.stack(column), axis=0).astype(column[0].dtype)
            released[name] = Array(mean + rng.normal(0.0, std, mean.shape).astype(mean.dtype))
        self.releases += 1
        spent = self.epsilon()
        round_record.metrics.update({"central-epsilon": spent, "central-delta": self.delta,
                                     "central-releases": self.releases, "central-cohort": cohort,
                                     "central-noise-std": std})
        log.info("round %d: central DP release %d: %d update(s) clipped to %g, noise std %.5f; ε=%.3f (δ=%g)",
                 server_round, self.releases, cohort, self.clipping_norm, std, spent, self.delta)
        return ArrayRecord(released), metrics
