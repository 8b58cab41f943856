"""A folder of workspaces as a sweep dataset: which sub-folders are workspaces, and copying their data only.

Each visible sub-folder of the dataset folder is one workspace, named after it, in either shape:

- a workspace folder: its messages in ``data/`` in any layout ``federated.data.load_workspace`` reads
  (Slack export, IRC manifest, JSONL), possibly with the node's own ``policy.toml``, ``ledger.sqlite``,
  ``audit.jsonl`` and ``node.secret`` beside it;
- a raw data folder: the layout itself (a Slack export with ``users.json``/``channels.json`` at its top,
  an IRC manifest, JSONL files).

Guarantee: the dataset folder is only read. ``copy_workspace_data`` copies a workspace's data alone (never its
policy, ledger, audit log or node secret) into a new folder's ``data/``; links are copied as links, so the
node's loader applies the same rules to the copy as to the original (a link that leaves the data folder is
refused). An IRC manifest whose ``root`` is relative resolves from where the copy is, so a manifest in a
dataset folder needs an absolute ``root``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from clients.workspace_node import DATA_FOLDER
from federated.data.loader import detect_layout
from federated.errors import DataError


def workspace_data(root: Path) -> dict[str, Path]:
    """Workspace name → its data folder, for each visible sub-folder of ``root`` in sorted order.

    ``DataError`` names ``root`` if it is not a folder or holds no sub-folder, and names the sub-folder whose
    data layout the loader does not recognise.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    found = {}
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            detect_layout(sub)
            found[sub.name] = sub
        except DataError:
            if not (sub / DATA_FOLDER).is_dir():
                raise
            detect_layout(sub / DATA_FOLDER)
            found[sub.name] = sub / DATA_FOLDER
    if not found:
        raise DataError(f"{root}: holds no workspace sub-folder")
    return found


def copy_workspace_data(data: Path, folder: Path) -> Path:
    """Copy the data folder ``data`` to ``folder/data`` (``folder`` must not exist); return ``folder``."""
    shutil.copytree(data, Path(folder) / DATA_FOLDER, symlinks=True)
    return Path(folder)
