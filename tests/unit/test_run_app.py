"""Which runs a node serves, read from the FAB as data: Optin's ClientApp named, and the node's allow-list."""

from __future__ import annotations

import io
import zipfile

import pytest

from clients.run_app import OPTIN_CLIENTAPP, run_app


def fab(pyproject: str | None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        if pyproject is not None:
            bundle.writestr("pyproject.toml", pyproject)
        bundle.writestr("clients/app.py", "raise SystemExit('never imported')\n")
    return buffer.getvalue()


OPTIN = '[tool.flwr.app.components]\nserverapp = "server.app:app"\nclientapp = "clients.app:app"\n'


@pytest.mark.parametrize("content, component", [
    (fab(OPTIN), OPTIN_CLIENTAPP),
    (fab(OPTIN.replace("clients.app:app", "evil.app:app")), "evil.app:app"),
    (fab(None), None),
    (fab("not = [toml"), None),
    (b"not a zip", None),
])
def test_the_component_is_read_from_the_bundle_as_data(content: bytes, component: str | None) -> None:
    app = run_app(7, "optin/optin", "1.0.0", "ab" * 32, content)
    assert app.clientapp == component
    refusal = app.refusal({})
    assert (refusal is None) == (component == OPTIN_CLIENTAPP)
    if refusal is not None:
        assert refusal[0] == "app-not-optin" and "run 7" in refusal[1]


def test_the_operators_allow_list_decides_which_bundles_are_served() -> None:
    app = run_app(7, "optin/optin", "1.0.0", "ab" * 32, fab(OPTIN))
    assert app.refusal({"allowed-fabs": "*"}) is None
    assert app.refusal({"allowed-fabs": f"cd{'00' * 31}, {'AB' * 32}"}) is None
    code, detail = app.refusal({"allowed-fabs": "cd" * 32})
    assert code == "fab-not-allowed" and "ab" * 32 in detail
