"""Per-workspace counts (messages, members, channels, characters) for a folder of workspaces.

For the operator's eyes on their own machine: counts only, computed from the
texts as training would see them (scrubbed unless asked otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from federated.data.loader import detect_layout, load_workspace
from federated.data.paths import DATA_FOLDER
from federated.data.scrub import ScrubOptions
from federated.data.source import SkippedFile
from federated.errors import DataError


@dataclass(frozen=True)
class WorkspaceStats:
    """Counts for one workspace; ``characters`` are unicode code points of the message texts.

    ``skipped_entries`` counts entries not kept (all reasons), ``skipped_by_reason`` per reason;
    ``skipped_files`` lists the files not read and why.
    """

    name: str
    layout: str
    messages: int
    members: int
    channels: int
    characters: int
    skipped_entries: int
    skipped_files: tuple[SkippedFile, ...]
    skipped_by_reason: dict[str, int]


def find_workspaces(path: Path) -> list[tuple[str, Path]]:
    """(name, data folder) of each workspace at ``path``, in name order.

    ``path`` may be one workspace folder (it has ``data/``), a data folder itself (a Slack export, an IRC
    manifest, JSONL files), or a folder whose children are either (workspace folders and raw exports may be
    mixed; other children are ignored). Raises ``DataError`` if it is none of these.
    """
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: not a folder")
    if (path / DATA_FOLDER).is_dir():
        return [(path.name, path / DATA_FOLDER)]
    if _is_data_folder(path):
        return [(path.name, path)]
    found = []
    for child in sorted(p for p in path.iterdir() if p.is_dir()):
        if (child / DATA_FOLDER).is_dir():
            found.append((child.name, child / DATA_FOLDER))
        elif _is_data_folder(child):
            found.append((child.name, child))
    if not found:
        raise DataError(f"{path}: no workspace found; expected a workspace folder (with {DATA_FOLDER}/), "
                        f"a data folder (Slack export, IRC manifest, JSONL), or a folder of either")
    return found


def _is_data_folder(path: Path) -> bool:
    try:
        detect_layout(path)
    except DataError:
        return False
    return True


def workspace_stats(path: Path, *, scrub: bool | ScrubOptions = True,
                    skip_bad_files: bool = False) -> list[WorkspaceStats]:
    """Counts for every workspace ``find_workspaces(path)`` finds (errors as ``load_workspace``)."""
    stats = []
    for name, data in find_workspaces(path):
        ws = load_workspace(data, name=name, scrub=scrub, skip_bad_files=skip_bad_files)
        report = ws.report
        assert report is not None  # load_workspace always reports
        stats.append(WorkspaceStats(
            name=name,
            layout=report.layout,
            messages=len(ws.messages),
            members=len(ws.members),
            channels=len(ws.channels),
            characters=sum(len(m.text) for m in ws.messages),
            skipped_entries=report.total_skipped,
            skipped_files=report.skipped_files,
            skipped_by_reason=dict(report.skipped),
        ))
    return stats
