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
