"""Privacy accounting for DP-SGD releases, delegated to Opacus' accountants.

Guarantee: for a history of Gaussian-mechanism steps ``(noise_multiplier z,
sample_rate q, steps T)`` the reported ε is what the chosen Opacus accountant
gives at the given δ for their adaptive composition.
Assumptions the number depends on: every step clipped each sample's gradient to
a fixed L2 norm and added Gaussian noise of std ``z * max_grad_norm``; each step's
batch was drawn by Poisson sampling with rate ``q`` (amplification by
sampling); neighbouring datasets differ by adding or removing one sample (one
message under the message privacy unit).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from opacus.accountants import RDPAccountant
from opacus.accountants.accountant import IAccountant

from federated.errors import PrivacyError

Step = tuple[float, float, int]
"""One run of identical steps: (noise_multiplier, sample_rate, steps)."""

ACCOUNTANTS = {"rdp": RDPAccountant}


def make_accountant(name: str = "rdp", history: Iterable[Step] = ()) -> IAccountant:
    """An Opacus accountant of kind ``name`` that has already seen ``history``."""
    if name not in ACCOUNTANTS:
        raise PrivacyError(f"accountant: unknown accountant {name!r}; expected one of {sorted(ACCOUNTANTS)}")
    accountant = ACCOUNTANTS[name]()
    accountant.history = [(float(z), float(q), int(t)) for z, q, t in history]
    return accountant


def epsilon(history: Sequence[Step], delta: float, accountant: str = "rdp") -> float:
    """ε spent by ``history`` at ``delta`` (0.0 when nothing was released)."""
    if not 0.0 < delta < 1.0:
        raise PrivacyError(f"delta: expected a value in (0, 1), got {delta}")
    if not history:
        return 0.0
    return float(make_accountant(accountant, history).get_epsilon(delta=delta))

