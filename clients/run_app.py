"""What a run's app bundle (FAB) may do on this node: nothing but name Optin's ClientApp, which the node runs itself.

In Flower's Deployment Engine the code a SuperNode runs comes from the FAB that whoever submits the run uploads.
An Optin node never imports it (``clients.node_worker`` runs the ClientApp installed on the node); this module
decides whether the node serves a run at all, from the FAB's metadata and its ``pyproject.toml`` read as data:

- the FAB must name Optin's ClientApp (``[tool.flwr.app.components] clientapp = "clients.app:app"``),
  else ``refused: app-not-optin``: a federation that ships another ClientApp expects other behaviour than the
  node's, so the node says so instead of answering as if it ran that code;
- the node config key ``allowed-fabs`` (comma-separated SHA-256 hashes of FABs, or ``*``) limits which bundles
  are served, else ``refused: fab-not-allowed``. The default, ``*`` ("any FAB, my code"), is safe: the FAB's
  code never runs here, and the run config it carries is checked by the node like any server input.

Each run's FAB (hash, app id, version, component) is written to the workspace's audit log the first time the
node sees the run (``run-app`` entry), served or not.
"""

from __future__ import annotations

import io
import tomllib
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass

OPTIN_CLIENTAPP = "clients.app:app"
ALLOWED_FABS_KEY = "allowed-fabs"
_PYPROJECT_MAX_BYTES = 1 << 20


@dataclass(frozen=True)
class RunApp:
    """A run's app as the node sees it: the FAB's identity and the ClientApp component it names."""

    run_id: int
    fab_id: str
    fab_version: str
    fab_hash: str
    clientapp: str | None

    def refusal(self, node_config: Mapping[str, object]) -> tuple[str, str] | None:
        """(reason code, detail) if the node does not serve this run, else ``None``."""
        if self.clientapp != OPTIN_CLIENTAPP:
            return "app-not-optin", (f"run {self.run_id}: app {self.fab_id} {self.fab_version} names ClientApp "
                                     f"{self.clientapp!r}, not {OPTIN_CLIENTAPP!r}")
        allowed = allowed_fabs(node_config)
        if allowed is not None and self.fab_hash not in allowed:
            return "fab-not-allowed", (f"run {self.run_id}: FAB {self.fab_hash} is not in the node config "
                                       f"{ALLOWED_FABS_KEY!r}")
        return None


def allowed_fabs(node_config: Mapping[str, object]) -> frozenset[str] | None:
    """The FAB hashes the node serves, or ``None`` for any (``*``, the default)."""
    value = str(node_config.get(ALLOWED_FABS_KEY, "*")).strip()
    if value == "*":
        return None
    return frozenset(part.strip().lower() for part in value.split(",") if part.strip())


def run_app(run_id: int, fab_id: str, fab_version: str, fab_hash: str, content: bytes) -> RunApp:
    """The run's app, with the ClientApp component its ``pyproject.toml`` names (``None`` if it names none or
    cannot be read). The bundle is read as a zip of data: nothing in it is imported or executed."""
    return RunApp(run_id, fab_id, fab_version, fab_hash, _clientapp_component(content))


def _clientapp_component(content: bytes) -> str | None:
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as bundle:
            info = bundle.getinfo("pyproject.toml")
            if info.file_size > _PYPROJECT_MAX_BYTES:
                return None
            project = tomllib.loads(bundle.read(info).decode("utf-8"))
    except (KeyError, ValueError, zipfile.BadZipFile, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    components = project.get("tool", {}).get("flwr", {}).get("app", {}).get("components", {})
    value = components.get("clientapp") if isinstance(components, dict) else None
    return value if isinstance(value, str) else None
