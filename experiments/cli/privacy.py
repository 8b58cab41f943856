"""``optin privacy``: the ε of a Gaussian mechanism, or the noise multiplier for a target ε.

Both commands describe a mechanism of ``--steps`` Gaussian steps, each over a batch drawn by
Poisson sampling at ``--sampling-rate`` (1: every unit, no amplification), with noise multiplier
z (std z × clipping norm). Neighbouring relation: one unit added or removed (a message for
message-level DP-SGD, a workspace's update for central DP-FedAvg). The last line printed is the
number alone, for scripts; ε = ∞ is printed ``inf``.

Edge rules (those of ``federated.privacy.accounting``): ε is never negative — where an accountant's
ε falls below 0 (δ large next to what the mechanism leaks) 0 is printed, still an upper bound since
δ alone then covers the leakage; noise above 1e6 is accounted as 1e6 and noise below 1e-6 gives
``inf`` (both upper bounds); inputs the PRV accountant cannot compute (δ below what its grid
resolves, about 1e-14..1e-12; δ very close to 1; grids over 1e7 points from tiny noise or huge step
counts) are one-line errors naming the accountant. The RDP accountant takes every valid input.
``noise`` says which accountant cannot certify a target and why, and what PRV gives when RDP
cannot.
"""

from __future__ import annotations

import math

import typer

from experiments.cli.common import console, fail
from federated.errors import OptinError

privacy_app = typer.Typer(help="Privacy accounting: ε of a mechanism, or the noise for a target ε.",
                          no_args_is_help=True, pretty_exceptions_enable=False)

_RATE = "Poisson sampling rate per step (expected batch size / N; 1 = every unit, no amplification)."
_STEPS = "Number of Gaussian steps (rounds × local steps for DP-SGD; rounds for central DP)."
_DELTA = ("δ of the (ε, δ) guarantee, in (0, 1); keep it below 1/N. ε is never negative: where the accountant "
          "gives ε < 0 (δ large next to the mechanism's leakage) 0 is printed, still an upper bound.")
_ACCOUNTANT = ("Opacus accountant: rdp (Rényi DP; any valid input) or prv (privacy loss random variables; tighter, "
               "but refuses δ below what its grid resolves, ~1e-14..1e-12, and grids over 1e7 points).")


@privacy_app.command()
def epsilon(
    sampling_rate: float = typer.Option(..., "--sampling-rate", help=_RATE),
    noise_multiplier: float = typer.Option(..., "--noise-multiplier",
                                           help="Noise std / clipping norm (0: no DP, ε = inf; below 1e-6: inf; "
                                                "above 1e6: accounted as 1e6)."),
    steps: int = typer.Option(..., "--steps", help=_STEPS),
    delta: float = typer.Option(1e-5, "--delta", help=_DELTA),
    accountant: str = typer.Option("rdp", "--accountant", help=_ACCOUNTANT),
) -> None:
    """Print the ε of the mechanism (≥ 0, or inf); the last line is the number alone.

    ε is clamped at 0 where the accountant's value is negative (large δ): (ε, δ)-DP with ε < 0 implies (0, δ)-DP.

    Example: optin privacy epsilon --sampling-rate 0.01 --noise-multiplier 1.1 --steps 1000 --delta 1e-5
    """
    from federated.privacy.accounting import epsilon as mechanism_epsilon
    from federated.privacy.calibration import check_mechanism

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

    A target an accountant cannot certify with any noise (RDP's order grid bottoms out near 0.1 at δ = 1e-5; PRV
    adds 0.01 to every ε) is an error naming that accountant, its smallest ε and, for RDP, what PRV gives.

    Example: optin privacy noise --target-epsilon 8 --sampling-rate 0.01 --steps 1000 --delta 1e-5
    """
    from federated.privacy.calibration import calibrate

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
