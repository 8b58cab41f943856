"""Random files where a workspace's data is expected: ``load_workspace`` parses them or refuses them cleanly.

Random byte strings, random JSON shapes, plausible-looking records and random sizes are written as the
files of Slack exports (``users.json``, ``channels.json``, day files), JSONL workspaces and ``roster.txt``.
The only outcomes allowed are a ``Workspace`` or a ``DataError`` whose message names the file or the
folder; any other exception is a bug. Loading must also take time linear in the bytes written (a generous
bound: 2 s + 50 µs per byte). The node's file and workspace limits are lowered for these tests, so that
random sizes also cross them.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from federated.data import Workspace, load_workspace
from federated.data import files as data_files
from federated.errors import DataError

FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SMALL_LIMITS = {"DATA_FILE_MAX_BYTES": 48 * 1024, "INDEX_FILE_MAX_BYTES": 16 * 1024, "JSONL_LINE_MAX_BYTES": 2048,
                "WORKSPACE_MAX_BYTES": 96 * 1024, "WORKSPACE_MAX_MESSAGES": 300}

KEYS = ("id", "name", "real_name", "profile", "display_name", "is_bot", "type", "subtype", "user", "text", "ts",
        "thread_ts", "bot_id", "channel")
SCALARS = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
           | st.sampled_from(("message", "general", "U0ALICE1", "thread_broadcast", "channel_join", "1e400", "NaN")))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=4), inner, max_size=6),
                      max_leaves=12)

# Plausible entries, as an export writes them; a few of the values they draw from are wrong on purpose.
TIMESTAMPS = st.sampled_from(("1700000000.000100", "1700000001.5", "1700000002", "1700000003.000001",
                              "2024-01-01T10:00:00", "1700000004.25", "2024-13-01"))
TEXTS = st.text(max_size=40) | st.sampled_from(("hi <@U0ALICE1> see <https://x.org|x>", "&lt;b&gt;", "  ",
                                                "mail bob@example.org", "a." * 300, "x" * 5000, "word " * 1000))
IDS = st.sampled_from(("U0ALICE1", "U0BOB222", "U0CAROL3", "USLACKBOT"))
USERS = st.fixed_dictionaries({"id": IDS}, optional={"name": st.text(max_size=10), "is_bot": st.booleans(),
                                                     "profile": VALUES})
MESSAGES = st.fixed_dictionaries(
    {"type": st.sampled_from(("message", "message", "message", "other")), "user": IDS, "text": TEXTS,
     "ts": TIMESTAMPS},
    optional={"subtype": st.sampled_from(("thread_broadcast", "channel_join", "me_message")),
              "thread_ts": TIMESTAMPS, "bot_id": st.text(max_size=3)})
RECORDS = st.fixed_dictionaries({"ts": TIMESTAMPS | st.floats(), "user": st.sampled_from(("alice", "bob")),
                                 "channel": st.sampled_from(("general", "random")), "text": TEXTS},
                                optional={"thread_ts": TIMESTAMPS, "extra": VALUES})
DAY_FILES = ("general/2024-01-01.json", "general/2024-01-02.json", "general/notes.txt", "random/2024-01-01.json",
             "D0DM/2024-01-01.json", "unlisted/2024-01-01.json")

# What may replace a file: random bytes, a random JSON value, or random text lines.
DAMAGE = st.one_of(st.binary(max_size=300), VALUES.map(lambda v: json.dumps(v).encode("utf-8")),
                   st.lists(st.text(max_size=30), max_size=10).map(lambda lines: "\n".join(lines).encode("utf-8")))


def _dumps(value: Any) -> bytes:
    return json.dumps(value).encode("utf-8")


def _damaged(draw: st.DrawFn, files: dict[str, bytes]) -> dict[str, bytes]:
    """``files`` with up to two of them replaced by ``DAMAGE``, given a BOM or cut short."""
    for name in draw(st.lists(st.sampled_from(sorted(files)), max_size=2, unique=True)):
        how = draw(st.sampled_from(("replace", "bom", "cut")))
        if how == "replace":
            files[name] = draw(DAMAGE)
        elif how == "bom":
            files[name] = b"\xef\xbb\xbf" + files[name]
        else:
            files[name] = files[name][:draw(st.integers(0, max(len(files[name]) - 1, 0)))]
    return files


@st.composite
def slack_exports(draw: st.DrawFn) -> dict[str, bytes]:
    """A Slack export: users, channels, day files of plausible messages (one repeated to a random size,
    up to a few hundred KiB), then damaged at random."""
    channels = ["general", *draw(st.lists(st.sampled_from(("random", "D0DM")), unique=True))]
    files = {"users.json": _dumps(draw(st.lists(USERS, min_size=1, max_size=4))),
             "channels.json": _dumps([{"id": f"C{i}", "name": name} for i, name in enumerate(channels)])}
    for name in draw(st.lists(st.sampled_from(DAY_FILES), min_size=1, max_size=4, unique=True)):
        files[name] = _dumps(draw(st.lists(MESSAGES, min_size=1, max_size=6)) * draw(st.sampled_from((1, 1, 50, 800))))
    return _damaged(draw, files)


@st.composite
def jsonl_workspaces(draw: st.DrawFn) -> dict[str, bytes]:
    """JSONL files of plausible records (repeated to a random size), maybe a roster, then damaged at random."""
    files: dict[str, bytes] = {}
    for name in draw(st.lists(st.sampled_from(("a.jsonl", "b.jsonl", "c.jsonl")), min_size=1, max_size=3,
                              unique=True)):
        lines = [_dumps(r) for r in draw(st.lists(RECORDS, min_size=1, max_size=6))] + [b""]
        files[name] = b"\n".join(lines * draw(st.sampled_from((1, 1, 20, 200))))
    if draw(st.booleans()):
        files["roster.txt"] = "\n".join(draw(st.lists(st.text(max_size=12), max_size=20))).encode("utf-8")
    return _damaged(draw, files)


@contextmanager
def _data_folder(files: dict[str, bytes]) -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as root:
        data = Path(root) / "data"
        for name, content in files.items():
            (data / name).parent.mkdir(parents=True, exist_ok=True)
            (data / name).write_bytes(content)
        yield data


def _loads_or_names_the_file(files: dict[str, bytes]) -> None:
    total = sum(len(content) for content in files.values())
    with _data_folder(files) as data, mock.patch.multiple(data_files, **SMALL_LIMITS):
        start = time.perf_counter()
        try:
            result = load_workspace(data)
        except DataError as exc:
            assert str(data) in str(exc), f"the error names neither a file nor the folder: {exc}"
        else:
            assert isinstance(result, Workspace) and result.report is not None
        elapsed = time.perf_counter() - start
    assert elapsed < 2.0 + 50e-6 * total, f"{total:,} bytes took {elapsed:.1f} s"


@FUZZ
@given(slack_exports())
def test_random_slack_exports_load_or_fail_naming_a_file(files: dict[str, bytes]) -> None:
    _loads_or_names_the_file(files)


@FUZZ
@given(jsonl_workspaces())
@example({"a.jsonl": b'{"ts": -0.0, "user": "alice", "channel": "general", "text": "0"}\n'})  # once '-0.000000'
def test_random_jsonl_workspaces_and_rosters_load_or_fail_naming_a_file(files: dict[str, bytes]) -> None:
    _loads_or_names_the_file(files)
