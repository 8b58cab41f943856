"""``optin privacy``: the ε of a Gaussian mechanism, or the noise multiplier for a target ε.

Both commands describe a mechanism of ``--steps`` Gaussian steps, each over a batch drawn by
Poisson sampling at ``--sampling-rate`` (1: every unit, no amplification), with noise multiplier
z (std z × clipping norm). Neighbouring relation: one unit added or removed (a message for
message-level DP-SGD, a workspace's update for central DP-FedAvg). The last line printed is the
number alone, for scripts; ε = ∞ is printed ``inf``.
"""

from __future__ import annotations

import math

import typer

from experiments.cli_common import console, fail
from federated.errors import OptinError
from federated.privacy.accounting import epsilon as mechanism_epsilon
from federated.privacy.calibration import calibrate, check_mechanism

privacy_app = typer.Typer(help="Privacy accounting: ε of a mechanism, or the noise for a target ε.",
                          no_args_is_help=True, pretty_exceptions_enable=False)

_RATE = "Poisson sampling rate per step (expected batch size / N; 1 = every unit, no amplification)."
_STEPS = "Number of Gaussian steps (rounds × local steps for DP-SGD; rounds for central DP)."
_DELTA = "δ of the (ε, δ) guarantee; keep it below 1/N."
_ACCOUNTANT = "Opacus accountant: rdp (Rényi DP) or prv (privacy loss random variables; tighter)."


@privacy_app.command()
def epsilon(
    sampling_rate: float = typer.Option(..., "--sampling-rate", help=_RATE),
    noise_multiplier: float = typer.Option(..., "--noise-multiplier", help="Noise std / clipping norm (0: no DP)."),
    steps: int = typer.Option(..., "--steps", help=_STEPS),
    delta: float = typer.Option(1e-5, "--delta", help=_DELTA),
    accountant: str = typer.Option("rdp", "--accountant", help=_ACCOUNTANT),
) -> None:
    """Print the ε of the mechanism; the last line is the number alone.

    Example: optin privacy epsilon --sampling-rate 0.01 --noise-multiplier 1.1 --steps 1000 --delta 1e-5
    """
    if not noise_multiplier >= 0:
        fail(f"--noise-multiplier: expected a value >= 0, got {noise_multiplier}")
    try:
        check_mechanism(delta, sampling_rate, steps, accountant)
        value = mechanism_epsilon([(noise_multiplier, sampling_rate, steps)], delta, accountant)
    except OptinError as exc:
        fail(exc)
    console.print(f"ε of {steps} Gaussian step(s), z = {noise_multiplier:g}, Poisson rate q = {sampling_rate:g}, at "
                  f"δ = {delta:g} ({accountant} accountant, add/remove one unit):", highlight=False, soft_wrap=True)
    console.print(_number(value), highlight=False)


@privacy_app.command()
def noise(
    target_epsilon: float = typer.Option(..., "--target-epsilon", help="The ε to reach (inf: no DP, noise 0)."),
    sampling_rate: float = typer.Option(..., "--sampling-rate", help=_RATE),
    steps: int = typer.Option(..., "--steps", help=_STEPS),
    delta: float = typer.Option(1e-5, "--delta", help=_DELTA),
    accountant: str = typer.Option("rdp", "--accountant", help=_ACCOUNTANT),
) -> None:
    """Print the smallest noise multiplier with ε at most the target (within 0.01); last line: the number alone.

    Example: optin privacy noise --target-epsilon 8 --sampling-rate 0.01 --steps 1000 --delta 1e-5
    """
    try:
        result = calibrate(target_epsilon, delta, sampling_rate, steps, accountant)
    except OptinError as exc:
        fail(exc)
    console.print(f"noise multiplier for ε ≤ {target_epsilon:g} over {steps} Gaussian step(s), Poisson rate "
                  f"q = {sampling_rate:g}, at δ = {delta:g} ({accountant} accountant; gives ε = "
                  f"{_number(result.epsilon)}):", highlight=False, soft_wrap=True)
    console.print(_number(result.noise_multiplier), highlight=False)


def _number(value: float) -> str:
    return "inf" if math.isinf(value) else repr(value)
