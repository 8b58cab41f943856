"""Workspace operator commands: ``optin consent``, ``optin policy``, ``optin ledger``, ``optin audit``.

They act on one workspace folder (``--workspace``, default the current folder): its
``policy.toml``, ``ledger.sqlite`` and ``audit.jsonl``. Nothing here contacts a server.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import replace
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from experiments.cli.common import console, fail
from experiments.formatting import figure
from federated.audit import AUDIT_FILE, read_entries, repair, verify
from federated.errors import OptinError
from federated.privacy.central_claim import central_claim
from federated.privacy.policy import (
    POLICY_FILE,
    PRIVACY_UNITS,
    Policy,
    parse_policy,
    read_policy,
    render_policy,
    write_policy,
)

WORKSPACE = typer.Option(Path("."), "--workspace", "-w", help="The workspace folder (holds policy.toml).")

consent_app = typer.Typer(help="Turn a workspace's consent on or off.", no_args_is_help=True)
policy_app = typer.Typer(help="Create, show and check a workspace's policy file.", no_args_is_help=True)
ledger_app = typer.Typer(help="Read a workspace's privacy ledger.", no_args_is_help=True)
audit_app = typer.Typer(help="Verify and summarize audit logs; bound ε empirically.", no_args_is_help=True)


@consent_app.command("on")
def consent_on(workspace: Path = WORKSPACE) -> None:
    """Opt the workspace in (takes effect from the next message its node answers).

    Example: optin consent on --workspace ./acme
    """
    _set_consent(workspace, True)


@consent_app.command("off")
def consent_off(workspace: Path = WORKSPACE) -> None:
    """Opt the workspace out: no training or evaluation from the next round on.

    Example: optin consent off --workspace ./acme
    """
    _set_consent(workspace, False)


def _set_consent(workspace: Path, consent: bool) -> None:
    path = workspace / POLICY_FILE
    if not workspace.is_dir():
        fail(f"{workspace}: no such workspace folder")
    try:
        policy = read_policy(path) if path.exists() else Policy()
    except OptinError as exc:
        fail(f"{exc} (fix it, or recreate it with `optin policy init --force`)")
    write_policy(workspace, replace(policy, consent=consent))
    console.print(f"{path}: consent = {'true' if consent else 'false'}")


@policy_app.command("init")
def policy_init(
    workspace: Path = WORKSPACE,
    max_epsilon: float = typer.Option(8.0, help="Lifetime ε budget of the workspace, across all runs."),
    delta: float = typer.Option(1e-5, help="δ of the lifetime budget."),
    privacy_unit: str = typer.Option("message", help=f"One of {', '.join(PRIVACY_UNITS)}."),
    held_out_fraction: float = typer.Option(0.2, help="Share of messages held out for evaluation, in (0, 1)."),
    noise_multiplier: float = typer.Option(0.0, help="Least DP-SGD noise multiplier this node trains with, "
                                                     "whatever the server asks (0: the server's)."),
    max_messages_per_member: int = typer.Option(8, help="Most messages in one DP sample with --privacy-unit "
                                                        "member."),
    label: str = typer.Option("", help="A name for this workspace sent with every consent answer, so the "
                                       "federation's results can name it (empty: none is sent)."),
    force: bool = typer.Option(False, help="Replace an existing policy file."),
) -> None:
    """Write a policy file with every field explicit; consent stays off until `optin consent on`.

    Example: optin policy init --workspace ./acme --max-epsilon 4 --privacy-unit member
    """
    path = workspace / POLICY_FILE
    if path.exists() and not force:
        fail(f"{path}: already exists (use --force to replace it)")
    try:
        policy = parse_policy({"max_epsilon": max_epsilon, "delta": delta, "privacy_unit": privacy_unit,
                               "held_out_fraction": held_out_fraction, "noise_multiplier": noise_multiplier,
                               "max_messages_per_member": max_messages_per_member, "label": label},
                              "command line")
    except OptinError as exc:
        fail(exc)
    workspace.mkdir(parents=True, exist_ok=True)
    write_policy(workspace, policy)
    console.print(f"wrote {path}")


def _policy_or_fail(workspace: Path, note: str = "") -> Policy:
    try:
        return read_policy(workspace / POLICY_FILE)
    except OptinError as exc:
        fail(f"{exc}{note}")


@policy_app.command("show")
def policy_show(workspace: Path = WORKSPACE) -> None:
    """Print the policy as the node reads it, defaults included.

    Example: optin policy show --workspace ./acme
    """
    policy = _policy_or_fail(workspace, "; the node treats this as consent off")
    console.print(render_policy(policy), end="", highlight=False, markup=False)
    if policy.expires is not None and policy.expired(dt.datetime.now(dt.timezone.utc)):
        console.print("# expired: the node treats this as consent off", highlight=False)


@policy_app.command("check")
def policy_check(workspace: Path = WORKSPACE) -> None:
    """Validate the policy file; exit 1 with the field and what was expected if it is not valid.

    Example: optin policy check --workspace ./acme
    """
    policy = _policy_or_fail(workspace)
    console.print(f"{workspace / POLICY_FILE}: valid (consent = {'true' if policy.consent else 'false'})")


@ledger_app.command("show")
def ledger_show(workspace: Path = WORKSPACE) -> None:
    """Per run: releases, rounds, privacy unit, steps and lifetime ε after it; then spent and remaining budget,
    and whether the ledger agrees with the workspace's audit log (the check the node makes before training).

    Example: optin ledger show --workspace ./acme
    """
    from federated.privacy.ledger import LEDGER_FILE, Ledger
    from federated.privacy.ledger_check import audit_releases, match_releases

    path = workspace / LEDGER_FILE
    if not workspace.is_dir():
        fail(f"{workspace}: no such workspace folder")
    if not path.exists():
        try:
            audited = audit_releases(workspace / AUDIT_FILE)
        except OptinError as exc:
            fail(exc)
        if audited:
            console.print(f"[red]the node will refuse to train:[/red] {escape(str(path))} is missing but "
                          f"{AUDIT_FILE} records {len(audited)} release(s)", highlight=False)
            raise typer.Exit(1)
        # Not an error: a workspace that never trained has spent nothing (and gets no ledger until it does).
        console.print(f"{path}: no releases yet; spent ε = 0", highlight=False, markup=False)
        return
    try:
        policy = read_policy(workspace / POLICY_FILE)
    except OptinError as exc:
        console.print(f"[yellow]warning:[/yellow] {escape(str(exc))}; showing ε at the ledger's own δ", highlight=False)
        policy = None
    try:
        with Ledger(path) as ledger:
            releases = ledger.releases()
            delta = policy.delta if policy else (releases[-1].delta if releases else 1e-5)
            spent = ledger.spent(delta)
    except OptinError as exc:
        fail(exc)
    table = Table(title=f"Privacy ledger of {workspace.resolve().name} (RDP accountant, δ={delta:g})")
    for column in ("run", "releases", "rounds", "unit", "steps", "lifetime ε after run"):
        table.add_column(column, justify="left" if column in ("run", "unit") else "right", no_wrap=True)
    runs: dict[str, list] = {}
    for release in releases:
        runs.setdefault(release.run_id, []).append(release)
    for run_id, items in runs.items():
        rounds = sorted({r.round for r in items})
        units = ", ".join(sorted({r.privacy_unit if r.privacy_unit == "message" else f"member (≤{r.group_size} msgs)"
                                  for r in items}))
        table.add_row(run_id, str(len(items)), round_ranges(rounds), units, str(sum(r.steps for r in items)),
                      f"{items[-1].epsilon_total:.3f}")
    console.print(table)
    budget = f" of {figure(policy.max_epsilon, 'g')}; remaining {figure(max(0.0, policy.max_epsilon - spent))}" \
        if policy else ""
    console.print(f"spent ε = {figure(spent)}{budget}", highlight=False)
    try:
        audited = audit_releases(workspace / AUDIT_FILE)
        match_releases(path, releases, workspace / AUDIT_FILE, audited)
    except OptinError as exc:
        console.print(f"[red]the node will refuse to train:[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(1) from exc
    console.print(f"agrees with {AUDIT_FILE}: its {len(audited)} release(s) match ledger rows in order",
                  highlight=False)
    claim = central_claim(read_entries(workspace / AUDIT_FILE), delta) if audited else None
    if claim is not None:
        console.print(f"central DP, as the runs stated it: ε = {figure(claim.epsilon)} at δ={claim.delta:g} over "
                      f"{claim.releases} round(s) this workspace trained in (workspace-level; holds only if the "
                      "server added the noise, which this node cannot check; not counted in the budget)",
                      highlight=False, markup=False)


def round_ranges(rounds: list[int]) -> str:
    """Sorted rounds as ranges of consecutive rounds: ``[1, 2, 3, 5]`` -> ``"1-3, 5"``."""
    spans: list[list[int]] = []
    for number in rounds:
        if spans and number == spans[-1][1] + 1:
            spans[-1][1] = number
        else:
            spans.append([number, number])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


@audit_app.command("verify")
def audit_verify(path: Path = typer.Argument(..., help="An audit log, or a folder holding audit.jsonl.")) -> None:
    """Check the hash chain; exit 1 naming every edited, deleted or reordered entry.

    Example: optin audit verify ./acme/audit.jsonl
    """
    log_path = path / AUDIT_FILE if path.is_dir() else path
    result = verify(log_path)
    for problem in result.problems:
        console.print(f"[red]{problem}[/red]", highlight=False)
    if not result.ok:
        fail(f"{log_path}: audit log does not verify ({len(result.problems)} problem(s))")
    console.print(f"{log_path}: {result.entries} entries, chain intact")


@audit_app.command("repair")
def audit_repair(path: Path = typer.Argument(..., help="An audit log, or a folder holding audit.jsonl.")) -> None:
    """Recover a log whose last append was cut short by a crash; refuse (exit 1, nothing changed) anything else.

    A torn last line is moved, never deleted, to audit.jsonl.torn-<UTC time> next to the log; a head file behind
    the log is moved forward; a `repair` entry records what was done. Stop the workspace's node first.

    Example: optin audit repair ./acme
    """
    log_path = path / AUDIT_FILE if path.is_dir() else path
    try:
        done = repair(log_path)
    except OptinError as exc:
        fail(exc)
    if done.torn_file is not None:
        console.print(f"{log_path}: moved {done.torn_bytes} torn bytes (sha256 {done.torn_sha256}) to "
                      f"{done.torn_file}", highlight=False)
    if done.head_fixed:
        console.print(f"{log_path}: the head file was behind the log; it now names the last entry", highlight=False)
    if done.entry is not None:
        console.print(f"{log_path}: repair recorded as entry {done.entry['seq']}", highlight=False)
    result = verify(log_path)
    if not result.ok:
        fail(f"{log_path}: still does not verify: {'; '.join(result.problems)}")
    console.print(f"{log_path}: {'repaired' if done.entry else 'nothing to repair'}; {result.entries} entries, "
                  "chain intact", highlight=False)


@audit_app.command("show")
def audit_show(path: Path = typer.Argument(..., help="An audit log, or a folder holding audit.jsonl.")) -> None:
    """Summarize what the log records: entries by kind, refusals and skips by reason, what left.

    Example: optin audit show ./acme
    """
    log_path = path / AUDIT_FILE if path.is_dir() else path
    if not log_path.exists():
        fail(f"{log_path}: no such audit log")
    entries = list(read_entries(log_path))
    kinds = Counter(e.get("kind") for e in entries)
    console.print(f"{log_path}: {len(entries)} entries: " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())))
    reasons = Counter((e["kind"], e.get("reason")) for e in entries if e.get("kind") in ("refusal", "skip"))
    for (kind, reason), n in sorted(reasons.items()):
        console.print(f"  {kind}: {reason} x{n}", highlight=False)
    releases = [e for e in entries if e.get("kind") == "release"]
    if releases:
        table = Table(title="What left the workspace, one row per release: the noised model, and the settings "
                            "(steps, q, z, C) with the lifetime ε they account to")
        for column in ("run", "round", "bytes", "update L2 norm", "sha256", "steps", "q", "z", "C", "lifetime ε",
                       "private"):
            table.add_column(column, no_wrap=True)
        for e in releases:
            table.add_row(str(e["run_id"]), str(e["round"]), str(e["bytes"]), f"{e['l2_norm']:.4f}",
                          e["sha256"][:16] + "…", str(e.get("steps", "")), _number(e.get("sample_rate")),
                          _number(e.get("noise_multiplier")), _number(e.get("max_grad_norm")),
                          f"{e['epsilon_total']:.3f}", "no (repeatable seed)" if e.get("private") is False else "yes")
        console.print(table)
    kept = [e for e in entries if e.get("kind") in ("release", "evaluation") and isinstance(e.get("kept_local"), dict)]
    if kept:
        table = Table(title="Kept here, never sent: training loss and held-out evaluation")
        for column in ("run", "round", "kind", "train loss", "held-out loss", "held-out accuracy", "held out"):
            table.add_column(column, no_wrap=True)
        for e in kept:
            local = e["kept_local"]
            table.add_row(str(e["run_id"]), str(e["round"]), e["kind"], _number(local.get("train_loss")),
                          _number(local.get("loss")), _number(local.get("accuracy")), str(local.get("held_out", "")))
        console.print(table)


def _number(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


@audit_app.command("bound")
def audit_bound(
    canaries: int = typer.Option(..., help="m: canaries, each included in training with probability 1/2."),
    guesses: int = typer.Option(..., help="r: guesses made (abstentions excluded)."),
    correct: int = typer.Option(..., help="v: correct guesses."),
    delta: float = typer.Option(0.0, help="δ of the DP guarantee being tested."),
    confidence: float = typer.Option(0.95, help="Confidence of the lower bound."),
) -> None:
    """Empirical ε lower bound of a one-run audit (Steinke, Nasr, Jagielski 2023); last line: the number.

    Example: optin audit bound --canaries 1000 --guesses 100 --correct 100 --delta 0
    """
    from federated.privacy.one_run_audit import epsilon_lower_bound

    try:
        bound = epsilon_lower_bound(canaries, guesses, correct, delta, confidence)
    except OptinError as exc:
        fail(exc)
    console.print(f"ε lower bound at {confidence:.0%} confidence (m={canaries}, r={guesses}, v={correct}, "
                  f"δ={delta:g}):", highlight=False, soft_wrap=True)
    console.print(f"{bound:.4f}", highlight=False)
