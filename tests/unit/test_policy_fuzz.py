"""The policy parser on any input: a ``Policy`` or a ``PolicyError`` naming the file, in time linear in its size."""

from __future__ import annotations

import string
import tempfile
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from experiments.cli.app import app
from federated.errors import PolicyError
from federated.privacy.policy import POLICY_FILE, Policy, read_policy

KEYS = ["consent", "max_epsilon", "delta", "privacy_unit", "max_messages_per_member", "noise_multiplier",
        "held_out_fraction", "max_grad_norm", "expires", "scope", "tasks", "x"]
VALUES = st.one_of(
    st.integers(min_value=-10**500, max_value=10**500).map(str),
    st.floats().map(repr),  # TOML spells nan, inf and -inf as Python's repr does
    st.text(max_size=30).map(lambda t: '"' + t.replace("\\", "").replace('"', "") + '"'),
    st.sampled_from(["true", "false", "[]", '["*"]', "1979-05-27", "1979-05-27T07:32:00Z", "{}", '"member"']),
)
TOML_LIKE = st.lists(st.tuples(st.sampled_from(KEYS), VALUES), max_size=8).map(
    lambda pairs: "\n".join(f"{k} = {v}" for k, v in pairs))
INPUTS = st.one_of(st.binary(max_size=2_000), TOML_LIKE.map(str.encode),
                   st.text(alphabet=string.printable, max_size=2_000).map(str.encode),
                   TOML_LIKE.map(lambda t: b"\xef\xbb\xbf" + t.encode()))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=INPUTS, repeat=st.integers(min_value=1, max_value=20))
def test_any_policy_bytes_give_a_policy_or_an_error_naming_the_file(data: bytes, repeat: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / POLICY_FILE
        path.write_bytes(data * repeat)
        start = time.monotonic()
        try:
            assert isinstance(read_policy(path), Policy)
        except PolicyError as exc:
            assert str(path) in str(exc) and len(str(exc)) < 1_000
        # Generous (a loaded machine): a fixed cost plus a linear one, far below any quadratic blow-up.
        assert time.monotonic() - start < 2.0 + 20e-6 * len(data) * repeat


def test_the_policy_commands_print_one_line_for_an_overflowing_number_and_keep_brackets(tmp_path: Path) -> None:
    runner = CliRunner()
    (tmp_path / POLICY_FILE).write_text("consent = true\nmax_epsilon = " + "9" * 400 + "\n")
    for command in (["policy", "check"], ["consent", "on"], ["consent", "off"]):
        result = runner.invoke(app, [*command, "--workspace", str(tmp_path)])
        assert result.exit_code == 1 and isinstance(result.exception, (SystemExit, type(None)))
        assert "field 'max_epsilon' must be a number > 0 (or inf)" in result.output and "Traceback" not in result.output
    (tmp_path / POLICY_FILE).write_text('consent = true\n[scope]\nteams = ["x"]\n')
    result = runner.invoke(app, ["policy", "check", "--workspace", str(tmp_path)])
    assert result.exit_code == 1 and "unknown key(s) ['teams'] in [scope]" in result.output
