"""The commands an operator runs to see or change consent answer at once: none imports torch, Opacus or Flower.

A revocation (``optin consent off``) must not wait seconds for a deep-learning stack to import, on a busy
machine least of all. Each command runs in a fresh interpreter, which then reports what it imported.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from federated.privacy.policy import Policy, write_policy

HEAVY = ("torch", "opacus", "flwr", "matplotlib")
RUN = """
import json, sys
from experiments.cli.app import app
try:
    app(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
print(json.dumps({"code": code, "heavy": sorted(m for m in %r if m in sys.modules)}))
""" % (HEAVY,)


def _run(*args: str) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-c", RUN, *args], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("args", [["--help"], ["consent", "on", "-w", "{ws}"], ["consent", "off", "-w", "{ws}"],
                                  ["policy", "show", "-w", "{ws}"], ["policy", "check", "-w", "{ws}"],
                                  ["audit", "verify", "{ws}"], ["node", "--help"], ["complete", "--help"],
                                  ["evaluate", "--help"]],
                         ids=lambda args: " ".join(a for a in args if a != "{ws}" and a != "-w"))
def test_operator_commands_import_no_deep_learning_stack(args: list[str], tmp_path: Path) -> None:
    (tmp_path / "audit.jsonl").write_text("", encoding="utf-8")
    write_policy(tmp_path, Policy(consent=True))
    result = _run(*(a.replace("{ws}", str(tmp_path)) for a in args))
    assert result["heavy"] == [], result
    assert result["code"] in (0, None), result


def test_ledger_show_computes_lifetime_epsilon_without_torch(tmp_path: Path) -> None:
    """The ledger's ε check and the spent ε come from Opacus' RDP analysis loaded without torch, and agree with
    Opacus' own accountant."""
    from federated.privacy.accounting import make_accountant
    from federated.privacy.ledger import LEDGER_FILE, Ledger

    write_policy(tmp_path, Policy(consent=True, max_epsilon=50.0))
    (tmp_path / "audit.jsonl").write_text("", encoding="utf-8")
    with Ledger(tmp_path / LEDGER_FILE) as ledger:
        ledger.record("run-1", 1, noise_multiplier=0.9, sample_rate=0.05, steps=40, delta=1e-5, max_epsilon=50.0,
                      privacy_unit="message", group_size=1, sha256="0" * 64)
    expected = make_accountant("rdp", [(0.9, 0.05, 40)]).get_epsilon(delta=1e-5)
    done = subprocess.run([sys.executable, "-c", RUN, "ledger", "show", "-w", str(tmp_path)], capture_output=True,
                          text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["heavy"] == [], result
    assert f"spent ε = {expected:.3f}" in done.stdout, done.stdout


def test_the_torch_free_rdp_analysis_is_opacus_own() -> None:
    from opacus.accountants import RDPAccountant
    from opacus.accountants.analysis import rdp as opacus_rdp

    from federated.privacy.rdp_analysis import ORDERS, rdp

    assert list(ORDERS) == RDPAccountant.DEFAULT_ALPHAS
    assert rdp.__file__ == opacus_rdp.__file__
    assert list(rdp.compute_rdp(q=0.01, noise_multiplier=1.1, steps=7, orders=list(ORDERS))) == \
        list(opacus_rdp.compute_rdp(q=0.01, noise_multiplier=1.1, steps=7, orders=list(ORDERS)))
