"""IRC log lines, slices, and the source.toml manifest: what is kept, what is counted, what fails and where."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest

from federated.data import IrcManifest, load_workspace, read_irc_workspace, read_manifest
from federated.data.irc import LogSlice, parse_log
from federated.data.manifest import write_manifest
from federated.errors import DataError


def _log(tmp_path: Path, lines: list[str], name: str = "log.txt") -> Path:
    path = tmp_path / "corpus" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_each_line_kind_is_kept_or_counted(tmp_path: Path) -> None:
    path = _log(tmp_path, [
        "[09:14] <crimsun> kleedrac: I'm afraid not",
        "[09:14:30] <intinig> does a subversion gnome client exist?",
        "=== L0sT [~waa3@raptor.ukc.ac.uk]  has joined #ubuntu",
        "[09:15] === sid77 is now known as sid77_",
        "[03:48]  * Viper feels sorry for navandres",
        "[03:49] -ubottu- python-gtk2 (source: pygtk)",
        "[01:09] (soundray/#ubuntu) thomas: have you seen this",
        "[09:16] <brad[] > Hi, having some trouble",
        "[09:16] <empty>   ",
        "   ",
    ])
    parsed = parse_log(LogSlice(path, "ubuntu", dt.date(2006, 1, 5)))
    assert [(m.user, m.text, m.channel) for m in parsed.messages] == [
        ("crimsun", "kleedrac: I'm afraid not", "ubuntu"),
        ("intinig", "does a subversion gnome client exist?", "ubuntu"),
        ("brad[]", "Hi, having some trouble", "ubuntu"),
    ]
    assert dict(parsed.skipped) == {"system": 2, "action": 1, "notice": 2, "empty_text": 1, "blank_line": 1}
    assert parsed.nicks == {"crimsun", "intinig", "Viper", "ubottu", "soundray", "brad[]", "empty"}


def test_unknown_line_fails_naming_file_and_line(tmp_path: Path) -> None:
    path = _log(tmp_path, ["[09:14] <a> fine", '{"ts": "1.0", "text": "json is not a log"}'])
    with pytest.raises(DataError, match=r"log\.txt: line 2: not an IRC log line") as info:
        parse_log(LogSlice(path, "ubuntu"))
    assert str(path) in str(info.value)


def test_bad_time_and_bad_utf8(tmp_path: Path) -> None:
    path = _log(tmp_path, ["[25:14] <a> too late"])
    with pytest.raises(DataError, match="line 1: bad time 25:14:00"):
        parse_log(LogSlice(path, "ubuntu"))
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("[09:14] <a> caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match="latin1.txt: not valid UTF-8"):
        parse_log(LogSlice(latin1, "ubuntu"))


def test_slice_reads_only_its_lines_and_keeps_absolute_line_numbers(tmp_path: Path) -> None:
    path = _log(tmp_path, ["[00:00] <a> zero", "[00:01] <b> one", "[00:02] <c> two", "[00:03] <d> three"])
    parsed = parse_log(LogSlice(path, "ubuntu", dt.date(1970, 1, 1), start=1, stop=3))
    assert [(m.ts, m.user) for m in parsed.messages] == [("60.000001", "b"), ("120.000002", "c")]
    with pytest.raises(DataError, match=r"slice \[2, 9\) is outside the file's 4 lines"):
        parse_log(LogSlice(path, "ubuntu", start=2, stop=9))


def test_undated_log_starts_on_1970_01_01_and_rolls_over_midnight(tmp_path: Path) -> None:
    path = _log(tmp_path, ["[23:59] <a> late", "[23:58] <b> clock skew, same day", "[00:00] <c> next day"])
    parsed = parse_log(LogSlice(path, "linux"))
    assert [m.ts for m in parsed.messages] == [f"{86340}.000000", f"{86280}.000001", f"{86400}.000002"]


def _manifest(tmp_path: Path, body: str) -> Path:
    folder = tmp_path / "ws" / "data"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "source.toml").write_text(body, encoding="utf-8")
    return folder


def test_manifest_round_trip_with_a_relative_root(tmp_path: Path) -> None:
    log = _log(tmp_path, ["[10:00] <alice> hello bob", "[10:01] <bob> hi alice"])
    folder = _manifest(tmp_path, 'format = "irc"\nroot = "../../corpus"\nchannel = "chat"\n\n'
                                 '[[files]]\npath = "log.txt"\ndate = 2020-02-03\nstart = 0\nstop = 2\n')
    manifest = read_manifest(folder / "source.toml")
    assert manifest == IrcManifest(folder / "../../corpus", "chat",
                                   (LogSlice(folder / "../../corpus/log.txt", "chat", dt.date(2020, 2, 3), 0, 2),))
    assert manifest.slices[0].file.resolve() == log.resolve()
    copy = write_manifest(tmp_path / "copy", IrcManifest(log.parent, "chat", (LogSlice(log, "chat", None, 1),),
                                                         "a \"quoted\" description"))
    assert read_manifest(copy) == IrcManifest(log.parent, "chat", (LogSlice(log, "chat", None, 1, None),),
                                              'a "quoted" description')
    source = read_irc_workspace(folder)
    assert source.workspace.texts == ["hello bob", "hi alice"]
    assert source.names == frozenset()  # no roster.txt: the authors' nicks are not a name list
    assert load_workspace(folder).texts == ["hello bob", "hi alice"]
    (folder / "roster.txt").write_text("alice\nbob\n", encoding="utf-8")
    assert read_irc_workspace(folder).names == {"alice", "bob"}
    assert load_workspace(folder).texts == ["hello <name>", "hi <name>"]


@pytest.mark.parametrize(("body", "message"), [
    ('format = "irc"\nroot = "/x"\nchannel = "c"\nfiles = []\ncolour = "red"\n', "unknown key 'colour'"),
    ('format = "slack"\nroot = "/x"\nchannel = "c"\nfiles = []\n', "key 'format' expected \"irc\""),
    ('format = "irc"\nchannel = "c"\nfiles = []\n', "missing key 'root'"),
    ('format = "irc"\nroot = "/x"\nchannel = "c"\nfiles = []\n', "expected at least one"),
    ('format = "irc"\nroot = "/x"\nchannel = 3\nfiles = []\n', "key 'channel' expected str, got 3"),
    ('format = "irc"\nroot = "/x"\nchannel = "c"\n[[files]]\npath = "../etc/passwd"\n', "expected a path inside root"),
    ('format = "irc"\nroot = "/x"\nchannel = "c"\n[[files]]\npath = "a"\nstart = 5\nstop = 2\n', "0 <= start <= stop"),
    ('format = "irc"\nroot = "/x"\nchannel = "c"\n[[files]]\npath = "a"\nstart = true\n', "'files[0].start' expected int"),
    ('format = "irc"\nroot = "/x"\nchannel = "c"\n[[files]]\npath = "a"\nlines = 3\n', "unknown key 'files[0].lines'"),
    ('format = "irc"\nroot = "/x"\nchannel = "c"\n[[files]]\npath = "a"\ndate = "2020-01-01"\n', "expected date"),
    ('format = "irc"\nroot = \n', "malformed TOML"),
])
def test_manifest_errors_name_the_file_and_key(tmp_path: Path, body: str, message: str) -> None:
    folder = _manifest(tmp_path, body)
    with pytest.raises(DataError, match=re.escape(message)) as info:
        read_manifest(folder / "source.toml")
    assert str(folder / "source.toml") in str(info.value)


def test_missing_or_bad_log_file_fails_or_is_skipped_and_listed(tmp_path: Path) -> None:
    _log(tmp_path, ["[10:00] <alice> kept"], "good.txt")
    _log(tmp_path, ["[10:00] <alice> fine", "not a log line at all"], "bad.txt")
    root = tmp_path / "corpus"
    folder = _manifest(tmp_path, f'format = "irc"\nroot = "{root}"\nchannel = "c"\n'
                                 '[[files]]\npath = "good.txt"\n[[files]]\npath = "bad.txt"\n'
                                 '[[files]]\npath = "missing.txt"\n')
    with pytest.raises(DataError, match=r"bad\.txt: line 2"):
        load_workspace(folder)
    ws = load_workspace(folder, skip_bad_files=True)
    assert ws.texts == ["kept"]
    assert ws.report is not None
    assert [(f.path.name, f.reason.split(": ", 1)[1]) for f in ws.report.skipped_files] == [
        ("bad.txt", ("line 2: not an IRC log line (expected '[HH:MM] <nick> text' or "
                     "'<channel> YYYY-MM-DD [HH:MM:SS] <nick> text'): 'not a log line at all'")),
        ("missing.txt", "not found"),
    ]
