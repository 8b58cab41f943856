"""The node's limits on the data it loads: linear-time scrubbing, the message length rule, regular files
only, no symbolic link out of the data folder, and the size and count limits of files and workspaces.

Each test shows the clear outcome (a ``DataError`` naming the file or folder, a cut text, a bounded time).
Loads that a regression could make hang (a FIFO) or read without end (``/dev/zero``) run in a thread with
a timeout, or in a subprocess with a memory limit, so that a regression fails instead of hanging.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from clients.workspace_cache import WorkspaceCache, data_signature
from federated.data import Workspace, load_workspace
from federated.data import files as data_files
from federated.data.scrub import Scrubber, ScrubOptions
from federated.data.source import cut_text
from federated.errors import DataError
from federated.limits import MESSAGE_MAX_CHARS, WORKSPACE_MAX_MESSAGES

T = TypeVar("T")
HANG_SECONDS = 20  # far more than any of these loads takes; only a load that blocks reaches it


# --- helpers ---------------------------------------------------------------------------------------

def _within_time(call: Callable[[], T]) -> T:
    """``call()`` run in a daemon thread: its result or exception, or a test failure if it blocks."""
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # handed to the test thread as it is
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(HANG_SECONDS)
    assert not thread.is_alive(), f"still running after {HANG_SECONDS} s (blocked on a special file?)"
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]


def _load(data: Path, **kwargs: object) -> Workspace:
    return _within_time(lambda: load_workspace(data, **kwargs))


def _refused(data: Path, *parts: str, **kwargs: object) -> str:
    """The ``DataError`` loading ``data`` raises; it must contain every one of ``parts``."""
    with pytest.raises(DataError) as info:
        _load(data, **kwargs)
    message = str(info.value)
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"
    return message


def _record(i: int, text: str | None = None, channel: str = "general") -> dict[str, object]:
    return {"ts": 1700000000 + i, "user": f"u{i % 3}", "channel": channel, "text": text or f"message {i}"}


def _jsonl(data: Path, records: list[dict[str, object]], name: str = "a.jsonl") -> Path:
    data.mkdir(parents=True, exist_ok=True)
    file = data / name
    file.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return file


def _write_json(file: Path, value: object) -> Path:
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(json.dumps(value), encoding="utf-8")
    return file


def _slack(data: Path, texts: tuple[str, ...] | list[str] = ("hello there",)) -> Path:
    _write_json(data / "users.json", [{"id": "U0ALICE1", "name": "alice"}])
    _write_json(data / "channels.json", [{"id": "C1", "name": "general"}])
    _write_json(data / "general" / "2024-01-01.json",
                [{"type": "message", "user": "U0ALICE1", "text": t, "ts": f"1704067200.{i:06d}"}
                 for i, t in enumerate(texts)])
    return data


def _irc(data: Path, log: Path, lines: list[str]) -> Path:
    """An IRC workspace whose manifest names ``log`` (written with ``lines``, unless it exists)."""
    if not os.path.lexists(log):
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    data.mkdir(parents=True, exist_ok=True)
    (data / "source.toml").write_text(f'format = "irc"\nroot = "{log.parent}"\nchannel = "c"\n\n'
                                      f'[[files]]\npath = "{log.name}"\n', encoding="utf-8")
    return data


# --- 1. scrubbing is linear ------------------------------------------------------------------------

# A unit repeated to 200,000 characters, and what that text scrubs to (None: itself). The e-mail rule
# retried from every position of a run made "a.", "a+", ".a" and "a.1" quadratic: minutes at this size.
SHAPES = {"a.": None, "a+": None, ".a": None, "a.1": None, "a@": None, "@a.": None, "a.a@": None, "a.@": None,
          "a@a.": None, "-@a.": None, "@a": None, "@a-": None, "a.a@a-": None, "b.": None, "a-": None,
          "http://": "<url>", "1": "<number>"}


@pytest.mark.parametrize("unit", list(SHAPES))
def test_scrubbing_an_adversarial_text_takes_time_linear_in_its_length(unit: str) -> None:
    text = unit * (200_000 // len(unit))
    _assert_scrubs_fast(text, SHAPES[unit] or text)


def test_a_long_e_mail_domain_or_mention_scrubs_fast() -> None:
    for text in ("x@" + "b." * 100_000 + "1", "@" + "b." * 100_000 + ".", "x@" + "b-" * 100_000 + ".1"):
        _assert_scrubs_fast(text, text)


def _assert_scrubs_fast(text: str, expected: str) -> None:
    # About 0.3 s for 200,000 characters here (linear); 3 s leaves room for a loaded machine.
    scrubber = Scrubber(["alice smith"], [], ScrubOptions())
    start = time.perf_counter()
    scrubbed = scrubber(text)
    elapsed = time.perf_counter() - start
    assert elapsed < 3.0, f"{len(text):,} characters ({text[:8]!r}...) took {elapsed:.1f} s"
    assert scrubbed == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("a|b.c@x.com", "a|b<email>"),  # a word ran into the local part: the e-mail is still tried there
    ("@bob.smith+tag@example.com", "@bob.smith<email>"),  # so did a mention
    ("a@b.com-x@y.com", "<email><email>"),  # so did an e-mail
    ("mail alice.b+tag@mail.example.co.uk now", "mail <email> now"),
])
def test_the_linear_scan_keeps_every_e_mail_the_old_pattern_found(text: str, expected: str) -> None:
    assert Scrubber([], [], ScrubOptions())(text) == expected


# --- 2. the message length rule ---------------------------------------------------------------------

def test_a_long_text_is_cut_at_its_last_whitespace_and_one_without_is_too_long() -> None:
    words = "see https://example.com/a or mail bob@example.org " * 200  # about 10,000 characters
    cut = cut_text(words)
    assert cut is not None and len(cut) <= MESSAGE_MAX_CHARS and words.startswith(cut)
    assert words[len(cut)].isspace() and not cut[-1].isspace()
    assert len(cut) > MESSAGE_MAX_CHARS - 60  # the last whitespace, not an earlier one
    scrubber = Scrubber([], [], ScrubOptions())
    assert scrubber(words).startswith(scrubber(cut))  # the kept text scrubs to a prefix of the whole
    assert cut_text("x" * (MESSAGE_MAX_CHARS + 1)) is None
    assert cut_text(" " + "x" * MESSAGE_MAX_CHARS) is None  # only whitespace before the cut
    exact = "x" * MESSAGE_MAX_CHARS
    assert cut_text(exact) is exact
    assert cut_text(exact + " tail") == exact  # the whitespace right after the limit is a cut


LONG = "word " * 2000  # 10,000 characters with whitespace
UNCUTTABLE = "x" * (MESSAGE_MAX_CHARS + 1)


def _three_layouts(root: Path, texts: list[str]) -> dict[str, Path]:
    return {
        "jsonl": _jsonl(root / "jsonl", [_record(i, t) for i, t in enumerate(texts)]).parent,
        "slack": _slack(root / "slack", texts),
        "irc": _irc(root / "irc", root / "corpus" / "log.txt", [f"[10:00] <nick> {t}" for t in texts]),
    }


@pytest.mark.parametrize("layout", ["jsonl", "slack", "irc"])
def test_every_layout_cuts_long_messages_and_skips_uncuttable_ones(tmp_path: Path, layout: str) -> None:
    data = _three_layouts(tmp_path, ["short one", LONG, UNCUTTABLE])[layout]
    for scrub in (False, True):
        ws = _load(data, scrub=scrub)
        assert sorted(ws.texts) == sorted(["short one", cut_text(LONG.strip())])
        assert ws.report is not None and ws.report.skipped.get("too_long") == 1 and ws.report.loaded == 2


# --- 3. regular files only -------------------------------------------------------------------------

def _fifo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("file", ["users.json", "channels.json", "groups.json", "general/2024-01-02.json"])
def test_a_fifo_in_a_slack_export_is_refused_naming_it(tmp_path: Path, file: str) -> None:
    data = _slack(tmp_path / "data")
    fifo = _fifo(data / file)
    _refused(data, str(fifo), "is a FIFO; expected a regular file")
    if file.startswith("general/"):  # a message file: skipped and listed on request, never read
        ws = _load(data, skip_bad_files=True)
        assert ws.report is not None
        assert [(f.path, "FIFO" in f.reason) for f in ws.report.skipped_files] == [(fifo, True)]


def test_fifos_elsewhere_in_a_slack_export_are_listed_not_read(tmp_path: Path) -> None:
    data = _slack(tmp_path / "data")
    top, note = _fifo(data / "notes"), _fifo(data / "general" / "notes.txt")
    ws = _load(data)
    assert ws.texts == ["hello there"]
    assert ws.report is not None
    assert {(f.path, f.reason) for f in ws.report.skipped_files} == {
        (top, "not part of the message layout"), (note, "not a JSON day file")}


@pytest.mark.parametrize("file", ["a.jsonl", "b.jsonl", "roster.txt"])
def test_a_fifo_in_a_jsonl_workspace_is_refused_naming_it(tmp_path: Path, file: str) -> None:
    data = _jsonl(tmp_path / "data", [_record(1)]).parent
    fifo = _fifo(data / file)
    _refused(data, str(fifo), "is a FIFO; expected a regular file")


def test_a_fifo_manifest_or_log_of_an_irc_workspace_is_refused_naming_it(tmp_path: Path) -> None:
    data = _irc(tmp_path / "data", _fifo(tmp_path / "corpus" / "log.txt"), [])
    _refused(data, str(tmp_path / "corpus" / "log.txt"), "is a FIFO")
    _fifo(data / "source.toml")
    _refused(data, str(data / "source.toml"), "is a FIFO")


def test_a_device_named_by_a_manifest_is_refused(tmp_path: Path) -> None:
    data = _irc(tmp_path / "data", Path("/dev/zero"), [])
    _refused(data, "/dev/zero", "is a character device; expected a regular file")


def test_a_folder_where_a_message_file_is_expected_is_refused(tmp_path: Path) -> None:
    data = _jsonl(tmp_path / "data", [_record(1)]).parent
    (data / "b.jsonl").mkdir()
    _refused(data, str(data / "b.jsonl"), "is a folder; expected a regular file")


def test_not_found_means_the_path_does_not_exist(tmp_path: Path) -> None:
    data = _slack(tmp_path / "data")
    (data / "users.json").unlink()
    _refused(data, str(data / "users.json"), "not found")
    _fifo(data / "users.json")
    assert "not found" not in _refused(data, str(data / "users.json"), "FIFO")


_DEV_ZERO_SCRIPT = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
from federated.data import load_workspace
from federated.errors import DataError
try:
    load_workspace(sys.argv[1])
except DataError as exc:
    print("DataError:", exc)
"""


@pytest.mark.parametrize("file", ["users.json", "general/2024-01-02.json", "roster.txt", "a.jsonl"])
def test_a_link_to_dev_zero_is_refused_without_reading_it(tmp_path: Path, file: str) -> None:
    data = tmp_path / "data"
    if file == "roster.txt" or file.endswith(".jsonl"):
        _jsonl(data, [_record(1)], name="z.jsonl")
    else:
        _slack(data)
    link = data / file
    link.unlink(missing_ok=True)
    link.symlink_to("/dev/zero")
    # A subprocess with 2 GiB of address space and a timeout: reading /dev/zero whole can neither hang
    # this test nor take the machine's memory.
    result = subprocess.run([sys.executable, "-c", _DEV_ZERO_SCRIPT, str(data)], capture_output=True, text=True,
                            timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("DataError:") and str(link) in result.stdout and "/dev/zero" in result.stdout


# --- 4. symbolic links stay inside the data folder -------------------------------------------------

def test_a_channel_folder_linked_into_another_workspace_is_refused(tmp_path: Path) -> None:
    other = _slack(tmp_path / "other" / "data", ["the other workspace's secret"])
    data = _slack(tmp_path / "mine" / "data")
    (data / "channels.json").write_text(json.dumps([{"id": "C1", "name": "general"},
                                                    {"id": "C2", "name": "stolen"}]), encoding="utf-8")
    (data / "stolen").symlink_to(other / "general")
    message = _refused(data, str(data / "stolen"), str((other / "general").resolve()), "leaves the workspace folder")
    assert "secret" not in message
    ws = _load(data, skip_bad_files=True)  # skipped and listed, never read
    assert ws.texts == ["hello there"]
    assert ws.report is not None and [f.path for f in ws.report.skipped_files] == [data / "stolen"]


def test_a_file_linked_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    outside = _jsonl(tmp_path / "other", [_record(1, "the other workspace's secret")])
    (tmp_path / "other" / "roster.txt").write_text("alice\n", encoding="utf-8")
    for link_name, target in (("b.jsonl", outside), ("roster.txt", tmp_path / "other" / "roster.txt")):
        data = _jsonl(tmp_path / f"data-{link_name}", [_record(2)]).parent
        (data / link_name).symlink_to(target)
        _refused(data, str(data / link_name), str(target.resolve()), "leaves the workspace folder")
    slack = _slack(tmp_path / "slack")
    (slack / "general" / "2024-01-02.json").symlink_to(
        _write_json(tmp_path / "day.json", [{"type": "message", "user": "U0ALICE1", "text": "x", "ts": "1.0"}]))
    _refused(slack, str(slack / "general" / "2024-01-02.json"), "leaves the workspace folder")


def test_links_that_stay_inside_the_folder_work(tmp_path: Path) -> None:
    data = _slack(tmp_path / "data")
    (data / "channels.json").write_text(json.dumps([{"id": "C1", "name": "general"},
                                                    {"id": "C2", "name": "alias"}]), encoding="utf-8")
    (data / "alias").symlink_to("general")  # relative, inside
    assert _load(data).texts == ["hello there", "hello there"]
    jsonl = _jsonl(tmp_path / "j" / "data", [_record(1, "kept")]).parent
    (jsonl / "store").mkdir()
    (jsonl / "a.jsonl").rename(jsonl / "store" / "a.json")
    (jsonl / "a.jsonl").symlink_to(jsonl / "store" / "a.json")
    assert _load(jsonl).texts == ["kept"]


def test_an_irc_log_outside_is_read_but_a_link_inside_may_not_lead_out(tmp_path: Path) -> None:
    corpus_log = tmp_path / "corpus" / "log.txt"
    data = _irc(tmp_path / "ws" / "data", corpus_log, ["[10:00] <nick> from the corpus"])
    assert _load(data).texts == ["from the corpus"]  # named by the manifest, outside the folder: as before
    linked = tmp_path / "ws2" / "data"
    linked.mkdir(parents=True)
    (linked / "log.txt").symlink_to(corpus_log)
    _irc(linked, linked / "log.txt", [])
    _refused(linked, str(linked / "log.txt"), "leaves the workspace folder")


def test_the_cache_signature_does_not_follow_a_link_out_of_the_folder(tmp_path: Path) -> None:
    other = _jsonl(tmp_path / "other", [_record(1, "theirs")]).parent
    data = _jsonl(tmp_path / "data", [_record(2, "mine")]).parent
    (data / "elsewhere").symlink_to(other)
    before = data_signature(data, content_after_ns=0)
    _jsonl(other, [_record(1, "theirs, changed"), _record(3)])  # a write the node must not even look at
    assert data_signature(data, content_after_ns=0) == before
    assert _load(data).texts == ["mine"]  # the loader does not read it either (not a *.jsonl entry)
    (data / "b.jsonl").symlink_to(other / "a.jsonl")
    with pytest.raises(DataError, match="leaves the workspace folder"):
        WorkspaceCache().load_split(data, "data", bytes(32), 0.25)


# --- 5. sizes and counts ---------------------------------------------------------------------------

def test_an_over_size_message_file_is_refused_naming_the_limit(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data_files, "DATA_FILE_MAX_BYTES", 1024)
    data = _jsonl(tmp_path / "jsonl", [_record(i) for i in range(40)]).parent
    _refused(data, str(data / "a.jsonl"), "over the node's limit of 1 KiB for one message file")
    slack = _slack(tmp_path / "slack", ["x " * 600])
    _refused(slack, str(slack / "general" / "2024-01-01.json"), "over the node's limit of 1 KiB")


def test_an_over_size_index_file_is_refused_naming_the_limit(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data_files, "INDEX_FILE_MAX_BYTES", 100)
    data = _slack(tmp_path / "data")
    _write_json(data / "users.json", [{"id": f"U{i:07d}", "name": f"user{i}"} for i in range(10)])
    _refused(data, str(data / "users.json"), "over the node's limit of 100 B")


def test_an_over_long_jsonl_line_is_refused_naming_the_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data_files, "JSONL_LINE_MAX_BYTES", 200)
    data = _jsonl(tmp_path / "data", [_record(1), _record(2, "y " * 150)]).parent
    _refused(data, f"{data / 'a.jsonl'}: line 2 is longer than the node's limit of 200 B")


@pytest.mark.parametrize("layout", ["jsonl", "slack", "irc"])
def test_a_workspace_with_too_many_messages_is_refused_even_when_skipping_bad_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: str) -> None:
    monkeypatch.setattr(data_files, "WORKSPACE_MAX_MESSAGES", 5)
    data = _three_layouts(tmp_path, [f"text {i}" for i in range(6)])[layout]
    for skip in (False, True):
        _refused(data, str(data), "more than 5 messages, the node's limit for one workspace", skip_bad_files=skip)
    monkeypatch.setattr(data_files, "WORKSPACE_MAX_MESSAGES", 6)
    assert len(_load(data).messages) == 6


def test_the_message_limit_stops_reading_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data_files, "WORKSPACE_MAX_MESSAGES", 3)
    data = _jsonl(tmp_path / "data", [_record(i) for i in range(4)]).parent
    with open(data / "a.jsonl", "a", encoding="utf-8") as f:
        f.write("not JSON: never reached\n")
    _fifo(data / "b.jsonl")  # nor is the next file opened
    _refused(data, "more than 3 messages", "reading stopped at " + str(data / "a.jsonl"))


def test_a_workspace_over_its_byte_limit_is_refused_before_the_file_that_passes_it_is_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data_files, "WORKSPACE_MAX_BYTES", 3 * 1024)
    data = _jsonl(tmp_path / "data", [_record(i) for i in range(30)]).parent  # about 2 KiB
    assert len(_load(data).messages) == 30
    _jsonl(data, [_record(i) for i in range(30)], name="b.jsonl")
    with open(data / "b.jsonl", "a", encoding="utf-8") as f:
        f.write("not JSON, but the size alone refuses the file\n")
    _refused(data, str(data), "message files hold more than 3 KiB, the node's limit for one workspace",
             str(data / "b.jsonl"), skip_bad_files=True)


def test_the_process_cache_keeps_any_workspace_the_loader_accepts() -> None:
    assert WorkspaceCache().max_messages >= WORKSPACE_MAX_MESSAGES


def test_a_workspace_at_the_message_limit_is_parsed_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data_files, "WORKSPACE_MAX_MESSAGES", 50)
    data = _jsonl(tmp_path / "team" / "data", [_record(i) for i in range(50)]).parent
    cache = WorkspaceCache(max_messages=50, settle_seconds=0.0)
    first = cache.load_split(data, "team", bytes(32), 0.25)
    assert cache.messages == 50
    again = cache.load_split(data, "team", bytes(32), 0.25)
    assert all(a is b for part_a, part_b in zip(first, again) for a, b in zip(part_a, part_b, strict=True))

