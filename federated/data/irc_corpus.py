"""Partition the IRC Disentanglement corpus into workspaces, written as manifests (no text copied).

Corpus: Kummerfeld et al., ACL 2019 (#ubuntu, and #linux from Elsner &
Charniak 2008) and Gouravajhala et al., ALTA 2023 (#mediawiki, #rust, #stripe,
#ubuntu-meeting); data under CC-BY-4.0. See docs/data.md.

Twelve workspaces, non-IID by construction: #ubuntu split into seven eras
(2004-2005 ... 2014-2018: software, slang and regulars change), and one
workspace per other channel (different communities, topics and sizes). Each
workspace folder gets ``data/source.toml`` naming its log files and the slice
of each (the logs stay where they are), and ``data/roster.txt``: the nicks that
wrote in those slices, fixed once here so that scrubbing names never depends on
which messages a later load holds (``federated.data.roster``). ``channel-two.all`` is the only #linux
file used (the other channel-two files are subsets of it); new-domains
``*.ascii.txt`` are used because the corpus has no raw version of them.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from federated.data.irc import LogSlice, parse_log, read_log_lines
from federated.data.manifest import IrcManifest, write_manifest
from federated.data.paths import DATA_FOLDER
from federated.data.roster import write_roster
from federated.errors import DataError

log = logging.getLogger("optin.data.irc_corpus")

CITATION = "IRC Disentanglement corpus (Kummerfeld et al. 2019; Gouravajhala et al. 2023), CC-BY-4.0"
_DATE_PREFIX = re.compile(r"^(\d{4}-\d{2}-\d{2})")
_UBUNTU = ("train/*.raw.txt", "dev/*.raw.txt", "test/*.raw.txt")


@dataclass(frozen=True)
class IrcPartition:
    """One workspace: the corpus files matching ``patterns`` (under ``data/``), optionally only years ``years``."""

    name: str
    channel: str
    patterns: tuple[str, ...]
    years: tuple[int, int] | None = None

    def files(self, data_dir: Path) -> list[Path]:
        """The matching files in name order (for #ubuntu: date order)."""
        found = {p for pattern in self.patterns for p in data_dir.glob(pattern) if p.is_file()}
        if self.years is not None:
            found = {p for p in found if (d := file_date(p)) is not None and self.years[0] <= d.year <= self.years[1]}
        return sorted(found, key=lambda p: (p.name, str(p)))


PARTITIONS: tuple[IrcPartition, ...] = (
    IrcPartition("ubuntu-2004-2005", "ubuntu", _UBUNTU, (2004, 2005)),
    IrcPartition("ubuntu-2006", "ubuntu", _UBUNTU, (2006, 2006)),
    IrcPartition("ubuntu-2007", "ubuntu", _UBUNTU, (2007, 2007)),
    IrcPartition("ubuntu-2008-2009", "ubuntu", _UBUNTU, (2008, 2009)),
    IrcPartition("ubuntu-2010-2011", "ubuntu", _UBUNTU, (2010, 2011)),
    IrcPartition("ubuntu-2012-2013", "ubuntu", _UBUNTU, (2012, 2013)),
    IrcPartition("ubuntu-2014-2018", "ubuntu", _UBUNTU, (2014, 2018)),
    IrcPartition("linux", "linux", ("channel-two/channel-two.all.raw.txt",)),
    IrcPartition("mediawiki", "mediawiki", ("new-domains/mediawiki.*.ascii.txt",)),
    IrcPartition("rust", "rust", ("new-domains/rust.*.ascii.txt",)),
    IrcPartition("stripe", "stripe", ("new-domains/stripe.*.ascii.txt",)),
    IrcPartition("ubuntu-meeting", "ubuntu-meeting", ("new-domains/ubuntu-meeting.*.ascii.txt",)),
)


def file_date(path: Path) -> dt.date | None:
    """The date a log file's name starts with (``2006-01-05.train-c.raw.txt``), if any."""
    match = _DATE_PREFIX.match(path.name)
    if match is None:
        return None
    try:
        return dt.date.fromisoformat(match.group(1))
    except ValueError:
        return None


def partition_slices(partition: IrcPartition, data_dir: Path, max_lines: int | None = None) -> list[LogSlice]:
    """The slices of ``partition``: whole files in order, or only the first ``max_lines`` lines of them in all."""
    files = partition.files(data_dir)
    if max_lines is None:
        return [LogSlice(file, partition.channel, file_date(file)) for file in files]
    slices: list[LogSlice] = []
    budget = max_lines
    for file in files:
        if budget <= 0:
            break
        count = len(read_log_lines(file))
        stop = None if budget >= count else budget
        slices.append(LogSlice(file, partition.channel, file_date(file), 0, stop))
        budget -= min(count, budget)
    return slices


def build_irc_workspaces(corpus: Path, out: Path, *, max_lines: int | None = None,
                         partitions: tuple[IrcPartition, ...] = PARTITIONS) -> list[Path]:
    """Write one workspace folder per partition under ``out`` (``out/<name>/data/source.toml``); return them.

    ``corpus`` is the folder holding the corpus' ``data/``. ``max_lines`` caps
    each workspace at that many log lines (messages and system lines), taken
    from its files in order. A partition without any file is left out (and
    logged). Folders are returned in sorted order. Raises ``DataError`` if
    ``corpus/data`` is missing, no partition has files, ``max_lines < 1``, or a
    workspace's ``data`` folder already exists and is not empty (nothing is
    ever overwritten).
    """
    data_dir = (Path(corpus) / "data").resolve()
    if not data_dir.is_dir():
        raise DataError(f"IRC corpus not found: {data_dir} is not a folder")
    if max_lines is not None and max_lines < 1:
        raise DataError(f"max_lines: expected a positive number of lines, got {max_lines}")
    planned: list[tuple[IrcPartition, list[LogSlice]]] = []
    for partition in partitions:
        slices = partition_slices(partition, data_dir, max_lines)
        if slices:
            planned.append((partition, slices))
        else:
            log.warning("%s: no log files under %s match %s; workspace left out", partition.name, data_dir,
                        partition.patterns)
    if not planned:
        raise DataError(f"{data_dir}: no IRC log files of any workspace found")
    folders = []
    for partition, _ in planned:
        target = Path(out) / partition.name / DATA_FOLDER
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise DataError(f"{target}: refusing to write a workspace into an existing non-empty path")
    for partition, slices in planned:
        target = Path(out) / partition.name / DATA_FOLDER
        description = f"{CITATION}: #{partition.channel}, {len(slices)} file(s)"
        write_manifest(target, IrcManifest(data_dir, partition.channel, tuple(slices), description))
        write_roster(target, set().union(*(parse_log(piece).nicks for piece in slices)),
                     f"nicks that wrote in #{partition.channel} ({CITATION}), fixed when this workspace was built")
        folders.append(target.parent)
        log.debug("wrote %s (%d files)", target, len(slices))
    return sorted(folders)
