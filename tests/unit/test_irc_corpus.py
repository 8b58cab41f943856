"""Building IRC workspaces: a mini corpus in the exact layout of irc-disentanglement, and the real one if present."""

from __future__ import annotations

import datetime as dt
import tomllib
from pathlib import Path

import pytest

from federated.data import (
    MANIFEST_FILE,
    PARTITIONS,
    build_irc_workspaces,
    irc_corpus_dir,
    load_workspace,
    resolve_data_root,
)
from federated.data.roster import ROSTER_FILE
from federated.errors import DataError

UBUNTU_2006 = [
    "=== alice_ [~a@host.example.net]  has joined #ubuntu",
    "[23:58] <alice_> hi all, my wifi dies on 6.06",
    "[23:59] <bob> alice_: try sudo modprobe -r ipw2200 then see http://help.ubuntu.com/wifi.",
    "[00:01]  * alice_ tries",
    "[00:02] <[noob] > how do I mount an iso?",
    "[00:02] <bob> ",
    "",
    "=== bob is now known as bobby",
    "[00:03] <bobby> [noob]: sudo mount -o loop file.iso /mnt, mail me at bob@example.org",
]
UBUNTU_2006_DEV = ["[10:00] <carol> anyone on dapper? call 0123456789", "[10:01] <dave> carol: no"]
UBUNTU_2007 = ["[12:00] <erin> feisty is out", "[12:01] <frank> nice"]
UBUNTU_2010 = ["[05:00] <gina> lucid lynx!"]
LINUX = ["=== Nella entered the room.", "[01:00] <Felicia> rat .. lol", "[01:01] <Nella> Felicia: hi"]
RUST = [
    "rust 2018-05-29 [21:20:37] <talchas> but I don't know that I'd bother ",
    "rust 2018-05-29 [21:20:48] <talchas>\t it scans /proc/ ",
    "rust 2018-05-29 [22:26:06] -eval- SplitN(SplitNInternal { iter: 4 })",
    "rust 2018-05-29 === yofel_ is now known as yofel ",
    "rust 2018-05-30 [00:00:01] <yofel> talchas: thanks",
]


def _lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_mini_corpus(root: Path) -> Path:
    """A tiny corpus in the layout of ``irc-disentanglement/`` (raw logs, annotations, lists); returns ``root``."""
    data = root / "data"
    root.mkdir(parents=True)
    (root / "SOURCE.txt").write_text("mini corpus for tests\n", encoding="utf-8")
    _lines(data / "train" / "2006-03-01.train-c.raw.txt", UBUNTU_2006)
    _lines(data / "train" / "2006-03-01.train-c.annotation.txt", ["1 1 -"])
    _lines(data / "dev" / "2006-05-02_10.raw.txt", UBUNTU_2006_DEV)
    _lines(data / "train" / "2007-01-01.train-a.raw.txt", UBUNTU_2007)
    _lines(data / "test" / "2010-01-01_00.raw.txt", UBUNTU_2010)
    _lines(data / "channel-two" / "channel-two.all.raw.txt", LINUX)
    _lines(data / "channel-two" / "channel-two.dev.raw.txt", LINUX[:2])  # a subset of .all: not used
    _lines(data / "new-domains" / "rust.0.ascii.txt", RUST)
    _lines(data / "new-domains" / "rust.0.annotation.txt", ["1000 1000 -"])
    _lines(data / "list.ubuntu.train.txt", ["data/train/2006-03-01.train-c.ascii.txt"])
    return root


def _epoch(day: dt.date, hh: int, mm: int, ss: int = 0) -> int:
    return int(dt.datetime(day.year, day.month, day.day, hh, mm, ss, tzinfo=dt.timezone.utc).timestamp())


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    return write_mini_corpus(tmp_path / "shared" / "irc-disentanglement")


def test_partitions_are_channels_and_eras(corpus: Path, tmp_path: Path) -> None:
    folders = build_irc_workspaces(corpus, tmp_path / "ws")
    assert [f.name for f in folders] == ["linux", "rust", "ubuntu-2006", "ubuntu-2007", "ubuntu-2010-2011"]
    manifest = tomllib.loads((tmp_path / "ws" / "ubuntu-2006" / "data" / MANIFEST_FILE).read_text(encoding="utf-8"))
    assert manifest["format"] == "irc" and manifest["channel"] == "ubuntu"
    assert manifest["root"] == str((corpus / "data").resolve())
    assert manifest["files"] == [  # in date order
        {"path": "train/2006-03-01.train-c.raw.txt", "date": dt.date(2006, 3, 1), "start": 0},
        {"path": "dev/2006-05-02_10.raw.txt", "date": dt.date(2006, 5, 2), "start": 0},
    ]
    linux = tomllib.loads((tmp_path / "ws" / "linux" / "data" / MANIFEST_FILE).read_text(encoding="utf-8"))
    assert [f["path"] for f in linux["files"]] == ["channel-two/channel-two.all.raw.txt"]


def test_nothing_from_the_corpus_is_copied(corpus: Path, tmp_path: Path) -> None:
    for folder in build_irc_workspaces(corpus, tmp_path / "ws"):
        assert sorted(p.name for p in folder.rglob("*") if p.is_file()) == sorted([MANIFEST_FILE, ROSTER_FILE])
        manifest = (folder / "data" / MANIFEST_FILE).read_text(encoding="utf-8")
        for line in UBUNTU_2006 + UBUNTU_2006_DEV + LINUX + RUST:
            text = line.partition("> ")[2].strip()
            assert not text or text not in manifest + (folder / "data" / ROSTER_FILE).read_text(encoding="utf-8")


def test_ubuntu_workspace_exact_messages_raw_and_scrubbed(corpus: Path, tmp_path: Path) -> None:
    (folder, *_) = build_irc_workspaces(corpus, tmp_path / "ws", partitions=PARTITIONS[1:2])
    assert folder.name == "ubuntu-2006"
    raw = load_workspace(folder / "data", name=folder.name, scrub=False)
    day, next_day, dev_day = dt.date(2006, 3, 1), dt.date(2006, 3, 2), dt.date(2006, 5, 2)
    assert [(m.ts, m.user, m.text) for m in raw.messages] == [
        (f"{_epoch(day, 23, 58)}.000001", "alice_", "hi all, my wifi dies on 6.06"),
        (f"{_epoch(day, 23, 59)}.000002", "bob",
         "alice_: try sudo modprobe -r ipw2200 then see http://help.ubuntu.com/wifi."),
        (f"{_epoch(next_day, 0, 2)}.000004", "[noob]", "how do I mount an iso?"),  # past midnight: the next day
        (f"{_epoch(next_day, 0, 3)}.000008", "bobby",
         "[noob]: sudo mount -o loop file.iso /mnt, mail me at bob@example.org"),
        (f"{_epoch(dev_day, 10, 0)}.000000", "carol", "anyone on dapper? call 0123456789"),
        (f"{_epoch(dev_day, 10, 1)}.000001", "dave", "carol: no"),
    ]
    assert raw.channels == ("ubuntu",)
    assert raw.members == ("alice_", "bob", "[noob]", "bobby", "carol", "dave")
    assert raw.report is not None
    assert raw.report.layout == "irc"
    assert raw.report.skipped == {"action": 1, "blank_line": 1, "empty_text": 1, "system": 2}

    scrubbed = load_workspace(folder / "data", name=folder.name)
    assert scrubbed.texts == [
        "hi all, my wifi dies on 6.06",
        "<name>: try sudo modprobe -r ipw2200 then see <url>.",
        "how do I mount an iso?",
        "<name>: sudo mount -o loop file.iso /mnt, mail me at <email>",
        "anyone on dapper? call <number>",
        "<name>: no",
    ]
    assert scrubbed.report is not None
    assert scrubbed.report.scrubbed == {"<email>": 1, "<name>": 3, "<number>": 1, "<url>": 1}


def test_new_domains_lines_carry_their_date_and_seconds(corpus: Path, tmp_path: Path) -> None:
    rust = [p for p in PARTITIONS if p.name == "rust"]
    (folder,) = build_irc_workspaces(corpus, tmp_path / "ws", partitions=tuple(rust))
    ws = load_workspace(folder / "data", scrub=False)
    day = dt.date(2018, 5, 29)
    assert [(m.ts, m.user, m.text) for m in ws.messages] == [
        (f"{_epoch(day, 21, 20, 37)}.000000", "talchas", "but I don't know that I'd bother"),
        (f"{_epoch(day, 21, 20, 48)}.000001", "talchas", "it scans /proc/"),
        (f"{_epoch(dt.date(2018, 5, 30), 0, 0, 1)}.000004", "yofel", "talchas: thanks"),
    ]
    assert ws.report is not None and ws.report.skipped == {"notice": 1, "system": 1}
    assert load_workspace(folder / "data").texts[2] == "<name>: thanks"


def test_max_lines_slices_each_workspace_in_file_order(corpus: Path, tmp_path: Path) -> None:
    (folder,) = build_irc_workspaces(corpus, tmp_path / "ws", max_lines=3, partitions=PARTITIONS[1:2])
    manifest = tomllib.loads((folder / "data" / MANIFEST_FILE).read_text(encoding="utf-8"))
    assert manifest["files"] == [
        {"path": "train/2006-03-01.train-c.raw.txt", "date": dt.date(2006, 3, 1), "start": 0, "stop": 3},
    ]
    ws = load_workspace(folder / "data", scrub=False)
    assert [m.user for m in ws.messages] == ["alice_", "bob"]
    assert ws.report is not None and ws.report.skipped == {"system": 1}


def test_never_overwrites_a_workspace(corpus: Path, tmp_path: Path) -> None:
    build_irc_workspaces(corpus, tmp_path / "ws")
    with pytest.raises(DataError, match="refusing to write a workspace into an existing non-empty path"):
        build_irc_workspaces(corpus, tmp_path / "ws")


def test_missing_corpus_and_bad_max_lines(tmp_path: Path, corpus: Path) -> None:
    with pytest.raises(DataError, match="IRC corpus not found"):
        build_irc_workspaces(tmp_path / "nowhere", tmp_path / "ws")
    with pytest.raises(DataError, match="IRC corpus not found.*OPTIN_DATA"):
        irc_corpus_dir(tmp_path / "nowhere")
    with pytest.raises(DataError, match="max_lines"):
        build_irc_workspaces(corpus, tmp_path / "ws", max_lines=0)


def test_real_corpus_has_twelve_workspaces_and_linux_counts(tmp_path: Path) -> None:
    root = resolve_data_root()
    if not (root / "irc-disentanglement" / "data").is_dir():
        pytest.skip(f"IRC corpus not found under {root} (set OPTIN_DATA to the folder holding irc-disentanglement/)")
    folders = build_irc_workspaces(irc_corpus_dir(root), tmp_path / "ws")
    assert len(folders) == len(PARTITIONS) == 12
    linux = load_workspace(tmp_path / "ws" / "linux" / "data", scrub=False)
    assert len(linux.messages) == 1915 and len(linux.members) == 128  # the corpus' SOURCE.txt: 1,915 / 128
    assert linux.report is not None and linux.report.skipped == {"system": 686}
