"""Load one workspace's data folder, whatever its layout, and scrub it locally.

This is what a node calls: ``load_workspace`` detects the layout, reads it
(every skipped entry and file counted in ``Workspace.report``), and scrubs the
texts before they go anywhere else.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from federated.data.files import require_folder
from federated.data.jsonl import jsonl_files, read_jsonl
from federated.data.manifest import MANIFEST_FILE, read_irc_workspace
from federated.data.records import Workspace
from federated.data.scrub import ScrubOptions, scrub_workspace
from federated.data.slack_export import read_slack_export
from federated.data.source import SourceData
from federated.errors import DataError

log = logging.getLogger("optin.data.loader")

Reader = Callable[..., SourceData]
READERS: dict[str, Reader] = {"slack": read_slack_export, "irc": read_irc_workspace, "jsonl": read_jsonl}


def detect_layout(path: Path) -> str:
    """``"irc"`` if ``path`` holds ``source.toml``, ``"slack"`` if it holds ``users.json`` or
    ``channels.json``, ``"jsonl"`` if it holds ``*.jsonl`` entries (checked in that order). An entry of
    any kind counts (a FIFO ``users.json`` is a Slack export whose ``users.json`` the reader refuses).

    Raises ``DataError`` naming the folder if it is missing, not a folder, or matches none of them.
    """
    path = Path(path)
    require_folder(path)
    if os.path.lexists(path / MANIFEST_FILE):
        return "irc"
    if os.path.lexists(path / "users.json") or os.path.lexists(path / "channels.json"):
        return "slack"
    if jsonl_files(path):
        return "jsonl"
    found = sorted(p.name for p in path.iterdir())
    shown = ", ".join(found[:8]) + (", ..." if len(found) > 8 else "") if found else "nothing"
    raise DataError(
        f"{path}: unknown workspace data layout; expected a Slack export (users.json, channels.json), "
        f"an IRC manifest ({MANIFEST_FILE}) or JSONL files (*.jsonl); found {shown}"
    )


def load_workspace(path: Path, *, name: str | None = None, scrub: bool | ScrubOptions = True,
                   skip_bad_files: bool = False) -> Workspace:
    """The workspace in the data folder ``path``, scrubbed unless ``scrub`` is false.

    ``scrub=True`` applies the default ``ScrubOptions``; pass options to choose
    rules. Slack markup is rendered as displayed. The workspace is named
    ``name``, else after the folder; ``workspace.report`` says what was
    loaded, skipped (by reason, and which files) and scrubbed.

    Raises ``DataError`` (naming the file, and the line where known) for a
    missing folder, an unknown layout, or malformed data; with
    ``skip_bad_files`` a malformed message file is skipped and listed in the
    report instead (index files such as users.json and source.toml are always
    required).
    """
    layout = detect_layout(path)
    source = READERS[layout](Path(path), name=name, skip_bad_files=skip_bad_files)
    workspace = source.workspace
    if scrub is not False:
        options = scrub if isinstance(scrub, ScrubOptions) else ScrubOptions()
        workspace = scrub_workspace(workspace, source.names, options, member_ids=source.ids)
    log.debug("%s: %s layout, %d messages", workspace.name, layout, len(workspace.messages))
    return workspace
