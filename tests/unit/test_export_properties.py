"""Property tests for the export parsers (Slack export, IRC log lines, JSONL).

(a) Whatever a file holds, a loader returns messages or raises ``DataError`` naming the file (and the
line where its format has lines); never another exception, and every string it returns is text (it
encodes to UTF-8, as the tasks need).
(b) Messages written in a format read back as written, modulo the format's documented rules.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import tempfile
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from federated.data import ChatMessage, Workspace, read_jsonl, read_slack_export
from federated.data.irc import LogSlice, parse_log
from federated.errors import DataError

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- garbled contents -------------------------------------------------------------------------------

KEYS = st.one_of(st.sampled_from(["type", "subtype", "user", "text", "ts", "thread_ts", "bot_id", "id", "name",
                                  "profile", "is_bot", "channel", "real_name", "display_name"]),
                 st.text(max_size=4))
SLACK_TS = st.from_regex(r"[0-9]{1,12}\.[0-9]{1,6}", fullmatch=True)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12), SLACK_TS,
                    st.sampled_from(["message", "U1", "general", "channel_join", "thread_broadcast",
                                     "2024-01-02T03:04:05", "<@U1>", "&amp;", " "]))
JSON_VALUES = st.recursive(SCALARS,
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=5),
                           max_leaves=12)
MESSAGE_LIKE = st.fixed_dictionaries(
    {"type": st.one_of(st.just("message"), JSON_VALUES)},
    optional={"user": st.one_of(st.sampled_from(["U1", "U2", "B1"]), JSON_VALUES),
              "text": st.one_of(st.text(max_size=20), JSON_VALUES),
              "ts": st.one_of(SLACK_TS, JSON_VALUES), "thread_ts": st.one_of(SLACK_TS, JSON_VALUES),
              "subtype": st.one_of(st.sampled_from(["thread_broadcast", "channel_join", "bot_message"]), JSON_VALUES),
              "bot_id": JSON_VALUES, "channel": st.one_of(st.just("general"), JSON_VALUES)})


@st.composite
def mutated(draw: st.DrawFn, original: bytes) -> bytes:
    """``original`` with a few byte ranges replaced, deleted or inserted (a damaged disk, a bad copy)."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        start = draw(st.integers(0, len(data)))
        stop = min(len(data), start + draw(st.integers(0, 4)))
        data[start:stop] = draw(st.binary(max_size=4))
    return bytes(data)


def _dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def _contents(valid: bytes, values: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    """Arbitrary bytes, arbitrary JSON, or the valid contents damaged."""
    return st.one_of(st.binary(max_size=200), values.map(_dumps), mutated(valid))


def _all_text(workspace: Workspace) -> None:
    """Every string a loader hands on encodes to UTF-8 (a lone surrogate would crash training later)."""
    strings = [*workspace.members, *workspace.member_names, *workspace.channels]
    for m in workspace.messages:
        strings += [m.ts, m.user, m.channel, m.text, m.thread_ts or ""]
    for s in strings:
        s.encode("utf-8")


def _fails_well(load: Callable[[], Workspace], file: Path, *, lines: bool) -> None:
    """``load`` succeeds with text only, or raises DataError naming ``file`` (and a line, when ``lines``)."""
    try:
        workspace = load()
    except DataError as exc:
        message = str(exc)
        assert message.startswith(f"{file}"), message
        if lines:
            assert "line " in message or "UTF-8" in message, message
        return
    _all_text(workspace)


USERS = [{"id": "U1", "name": "alice", "profile": {"real_name": "Alice A"}},
         {"id": "U2", "name": "bob"}, {"id": "B1", "name": "deploybot", "is_bot": True}]
CHANNELS = [{"id": "C1", "name": "general"}]
DAY = [{"type": "message", "user": "U1", "text": "hi <@U2> &amp; all", "ts": "1700000000.000100"},
       {"type": "message", "user": "U2", "text": "hello", "ts": "1700000001.000000", "thread_ts": "1700000000.000100"},
       {"type": "message", "subtype": "channel_join", "user": "U2", "text": "joined", "ts": "1700000002.000000"}]
SLACK_FILES = {"users.json": USERS, "channels.json": CHANNELS, "general/2023-11-14.json": DAY}


def _slack_folder(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def _garbled_slack_file(name: str) -> st.SearchStrategy[tuple[str, bytes]]:
    values = st.lists(st.one_of(MESSAGE_LIKE, JSON_VALUES), max_size=5) if name.endswith("23-11-14.json") \
        else st.lists(JSON_VALUES, max_size=4)
    return st.tuples(st.just(name), _contents(_dumps(SLACK_FILES[name]), values | JSON_VALUES))


@PROPERTY
@given(st.sampled_from(sorted(SLACK_FILES)).flatmap(_garbled_slack_file), st.booleans())
@example(("general/2023-11-14.json", b'[{"type": "message", "subtype": [1], "user": "U1", "text": "x", "ts": "1.5"}]'),
         True)
@example(("general/2023-11-14.json", b"[" * 100_000), True)
@example(("users.json", b"[" + b"9" * 5000 + b"]"), True)
@example(("channels.json", b'[{"id": "C1", "name": "general"}, {"id": "C2", "name": "\\ud800"}]'), True)
@example(("general/2023-11-14.json", b'[{"type": "message", "user": "U1", "text": "a\\udfff", "ts": "1.5"}]'), False)
@example(("users.json", b'[{"id": "U1", "name": "\\udc00"}]'), True)
@example(("general/2023-11-14.json", b'[{"type": "message", "user": "U1", "text": "x", "ts": "1.5\\n"}]'), True)
def test_a_garbled_slack_file_loads_or_fails_naming_it(garbled: tuple[str, bytes], render: bool) -> None:
    name, data = garbled
    with tempfile.TemporaryDirectory() as tmp:
        files = {n: _dumps(v) for n, v in SLACK_FILES.items()} | {name: data}
        root = _slack_folder(Path(tmp), files)
        _fails_well(lambda: read_slack_export(root, render_markup=render).workspace, root / name, lines=False)


JSONL_LINE = {"ts": "1700000000.5", "user": "alice", "channel": "general", "text": "hello", "thread_ts": 1700000000}
JSONL_VALUES = st.one_of(JSON_VALUES, st.fixed_dictionaries(
    {k: st.one_of(st.just(v), JSON_VALUES) for k, v in JSONL_LINE.items() if k != "thread_ts"},
    optional={"thread_ts": st.one_of(st.just(1700000000), JSON_VALUES)}))


@PROPERTY
@given(st.one_of(st.binary(max_size=200), mutated(_dumps(JSONL_LINE) + b"\n" + _dumps(JSONL_LINE) + b"\n"),
                 st.lists(st.one_of(JSONL_VALUES.map(_dumps), st.sampled_from([b"", b"  ", b"\r"])), max_size=5)
                 .map(b"\n".join)))
@example(b'{"ts": "1e999999", "user": "u", "channel": "c", "text": "t"}')
@example(b'{"ts": 1e300, "user": "u", "channel": "c", "text": "t"}')
@example(b'{"ts": ' + b"9" * 40 + b', "user": "u", "channel": "c", "text": "t"}')
@example(b'{"ts": ' + b"9" * 5000 + b', "user": "u", "channel": "c", "text": "t"}')
@example(b"[" * 100_000)
@example(b'{"ts": 1, "user": "\\ud800", "channel": "c", "text": "t"}')
def test_a_garbled_jsonl_file_loads_or_fails_naming_file_and_line(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "messages.jsonl"
        file.write_bytes(data)
        _fails_well(lambda: read_jsonl(Path(tmp)).workspace, file, lines=True)


@PROPERTY
@given(st.lists(st.text(max_size=10).filter(str.strip), max_size=3), st.integers(0, 3), JSONL_VALUES)
def test_a_jsonl_error_names_the_bad_line(texts: list[str], at: int, bad: Any) -> None:
    """Valid lines with one more line among them: if the file fails, the error names exactly that line."""
    valid = [_dumps(JSONL_LINE | {"text": text}) for text in texts]
    at = min(at, len(valid))
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "m.jsonl"
        file.write_bytes(b"\n".join(valid[:at] + [_dumps(bad)] + valid[at:]) + b"\n")
        try:
            read_jsonl(Path(tmp))
        except DataError as exc:
            assert str(exc).startswith(f"{file}: line {at + 1}: "), str(exc)


IRC_PIECES = st.sampled_from(["[12:34] ", "[1:02:03] ", "[25:00] ", "[12:61]", "#rust 2020-02-30 [10:00] ",
                              "#rust 2020-01-01 ", "#rust 1969-12-31 ", "<bob> ", "<bob>", "< >", "<>",
                              "=== bob joined", "* bob waves", "-ChanServ- hi", "(bob/#rust) hi", "hello", " ", "\t",
                              "<", ">", "[", "]", "\r"])
IRC_LINES = st.lists(st.one_of(IRC_PIECES, st.text(max_size=6)), max_size=5).map("".join)


@PROPERTY
@given(st.one_of(st.binary(max_size=200), st.lists(IRC_LINES, max_size=8).map(lambda ls: "\n".join(ls).encode())),
       st.one_of(st.none(), st.dates(dt.date(1970, 1, 1))))
@example(b"[23:00] <a> x\n[01:00] <a> y\n", dt.date.max)
@example(b"#rust 1969-12-31 [10:00] <a> x\n", None)
def test_a_garbled_irc_log_parses_or_fails_naming_file_and_line(data: bytes, date: dt.date | None) -> None:
    """``date`` is the slice's start (from the manifest, see the next test for one before 1970)."""
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "log.txt"
        file.write_bytes(data)

        def load() -> Workspace:
            parsed = parse_log(LogSlice(file, "ubuntu", date))
            return Workspace("w", tuple(parsed.nicks), ("ubuntu",), tuple(parsed.messages))

        _fails_well(load, file, lines=True)


def test_an_irc_slice_starting_before_1970_fails_naming_the_file(tmp_path: Path) -> None:
    file = tmp_path / "log.txt"
    file.write_text("[10:00] <a> x\n", encoding="utf-8")
    with pytest.raises(DataError, match=f"^{re.escape(str(file))}: start date 1969-12-31 is before 1970-01-01"):
        parse_log(LogSlice(file, "ubuntu", dt.date(1969, 12, 31)))


# --- round trips -------------------------------------------------------------------------------------

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
NO_NEWLINE = st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r")
PLAIN = st.text(NO_NEWLINE, max_size=12)
WORDS = st.text(NO_NEWLINE, min_size=1, max_size=12).filter(str.strip)


def _slack_ts(seconds: int, micros: int) -> str:
    return f"{seconds}.{micros:06d}"


def _escape(text: str) -> str:
    """Slack's storage escaping: exactly ``&``, ``<`` and ``>``."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@st.composite
def slack_workspaces(draw: st.DrawFn) -> tuple[list[dict], list[str], list[tuple[str, dict, str]],
                                               list[tuple[str, list[dict]]]]:
    """(users.json entries, channel names, (channel, entry as Slack stores it, text as shown) per message,
    each channel's day entries with a skipped join and bot post added to the first)."""
    ids = draw(st.lists(st.from_regex(r"U[A-Z0-9]{2,8}", fullmatch=True), min_size=1, max_size=4, unique=True))
    users = [{"id": uid, "name": draw(WORDS)} for uid in ids]
    channels = draw(st.lists(st.from_regex(r"[a-z0-9][a-z0-9_-]{0,10}", fullmatch=True), min_size=1, max_size=3,
                             unique=True))
    entries = []
    for channel in channels:
        stamps = draw(st.lists(st.tuples(st.integers(0, 4 * 10**9), st.integers(0, 999_999)), max_size=6,
                               unique=True))
        for seconds, micros in stamps:
            user = draw(st.sampled_from(users))
            pieces = draw(st.lists(st.one_of(PLAIN, st.sampled_from(users)), max_size=4)) + [draw(WORDS)]
            stored = "".join(_escape(p) if isinstance(p, str) else f"<@{p['id']}>" for p in pieces)
            shown = "".join(p if isinstance(p, str) else f"@{p['name']}" for p in pieces)
            entry = {"type": "message", "user": user["id"], "text": stored, "ts": _slack_ts(seconds, micros)}
            if entries and draw(st.booleans()) and entries[-1][0] == channel:
                entry["thread_ts"] = entries[-1][1]["ts"]  # a reply to the message before it
            entries.append((channel, entry, shown))
    noise = [{"type": "message", "subtype": "channel_join", "user": ids[0], "text": "joined", "ts": "1.000001"},
             {"type": "message", "bot_id": "B1", "text": "deployed", "ts": "1.000002"}]
    by_channel = [(c, [e for ch, e, _ in entries if ch == c]) for c in channels]
    by_channel[0][1].extend(noise)
    return users, channels, [(c, e, s) for c, e, s in entries], by_channel


@PROPERTY
@given(slack_workspaces(), st.booleans())
def test_a_slack_export_reads_back_as_written(workspace: tuple, render: bool) -> None:
    """Users, channels (folder names), thread stamps and text come back; rendered, the text is what was typed
    (entities decoded, ``<@id>`` as ``@handle``), else exactly as stored."""
    users, channels, entries, by_channel = workspace
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = {"users.json": _dumps(users), "channels.json": _dumps([{"id": f"C{i}", "name": c}
                                                                       for i, c in enumerate(channels)])}
        for channel, items in by_channel:
            days: dict[str, list[dict]] = {}
            for item in items:
                day = dt.datetime.fromtimestamp(int(Decimal(item["ts"])), dt.timezone.utc).date().isoformat()
                days.setdefault(day, []).append(item)
            files |= {f"{channel}/{day}.json": _dumps(day_items) for day, day_items in days.items()}
        loaded = read_slack_export(_slack_folder(root, files), render_markup=render).workspace
    expected = sorted((ChatMessage(ts=e["ts"], user=e["user"], channel=c, text=shown if render else e["text"],
                                   thread_ts=e.get("thread_ts")) for c, e, shown in entries),
                      key=ChatMessage.sort_key)
    assert list(loaded.messages) == expected
    assert loaded.members == tuple(u["id"] for u in users)
    assert loaded.member_names == tuple(u["name"] for u in users)
    assert loaded.channels == tuple(channels)
    assert loaded.report is not None
    assert loaded.report.skipped == {"bot": 1, "subtype:channel_join": 1}


@st.composite
def irc_logs(draw: st.DrawFn) -> tuple[dt.date, list[str], list[ChatMessage], dict[str, int]]:
    """(slice date, lines, the messages they hold, skipped lines by reason) in both line formats."""
    date = draw(st.dates(dt.date(1970, 1, 1), dt.date(2100, 1, 1)))
    epoch_day = (date - EPOCH.date()).days * 86400
    classic_times = iter(sorted(draw(st.lists(st.integers(0, 86399), max_size=12))))  # no midnight rollover
    lines: list[str] = []
    messages: list[ChatMessage] = []
    skipped: dict[str, int] = {}
    for seconds in classic_times:
        h, m, s = seconds // 3600, seconds // 60 % 60, seconds % 60
        kind = draw(st.sampled_from(["classic", "dated", "system", "action", "notice", "blank"]))
        if kind in ("system", "action", "notice", "blank"):
            lines.append({"system": f"[{h:02d}:{m:02d}] === bob is now known as bobby", "action": "* bob waves",
                          "notice": "-ChanServ- welcome", "blank": "  "}[kind])
            skipped[kind if kind != "blank" else "blank_line"] = skipped.get(kind if kind != "blank" else "blank_line",
                                                                              0) + 1
            continue
        nick = draw(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="<>\n\r"), min_size=1,
                            max_size=8).filter(str.strip))
        text = draw(WORDS)
        if kind == "classic":
            lines.append(f"[{h:02d}:{m:02d}:{s:02d}] <{nick}> {text}")
            channel, ts = "ubuntu", f"{epoch_day + seconds}.{len(lines) - 1:06d}"
        else:
            day = draw(st.dates(dt.date(1970, 1, 1), dt.date(2100, 1, 1)))
            channel = draw(st.from_regex(r"#[a-z][a-z0-9-]{0,8}", fullmatch=True))
            lines.append(f"{channel} {day.isoformat()} [{h:02d}:{m:02d}:{s:02d}] <{nick}> {text}")
            ts = f"{(day - EPOCH.date()).days * 86400 + seconds}.{len(lines) - 1:06d}"
        messages.append(ChatMessage(ts=ts, user=nick.strip(), channel=channel, text=text.strip()))
    return date, lines, messages, skipped


@PROPERTY
@given(irc_logs())
def test_irc_lines_read_back_as_written(log: tuple[dt.date, list[str], list[ChatMessage], dict[str, int]]) -> None:
    """Nick and text (each stripped of surrounding whitespace), channel, and a ts from the line's date (or the
    slice's), time and index; every other line is counted under its reason."""
    date, lines, messages, skipped = log
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "log.txt"
        file.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        parsed = parse_log(LogSlice(file, "ubuntu", date))
    assert parsed.messages == messages
    assert dict(parsed.skipped) == skipped


TIMEZONES = st.sampled_from([None, dt.timezone.utc, dt.timezone(dt.timedelta(hours=5, minutes=30)),
                             dt.timezone(dt.timedelta(hours=-8))])


@st.composite
def jsonl_stamps(draw: st.DrawFn) -> tuple[Any, str]:
    """A timestamp in one of the accepted forms, and the Slack ts it must be stored as."""
    form = draw(st.sampled_from(["slack", "seconds", "iso"]))
    if form == "iso":
        moment = draw(st.datetimes(dt.datetime(1971, 1, 1), dt.datetime(2100, 1, 1), timezones=TIMEZONES))
        aware = moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)
        micros = (aware - EPOCH) // dt.timedelta(microseconds=1)
        return moment.isoformat(), _slack_ts(micros // 10**6, micros % 10**6)
    seconds, micros = draw(st.integers(0, 4 * 10**9)), draw(st.integers(0, 999_999))
    if form == "seconds":
        return seconds, _slack_ts(seconds, 0)
    return _slack_ts(seconds, micros), _slack_ts(seconds, micros)


@st.composite
def jsonl_messages(draw: st.DrawFn) -> tuple[dict, ChatMessage | None]:
    """One JSONL record and the message it must load as (None: blank text, skipped)."""
    ts, stored_ts = draw(jsonl_stamps())
    record = {"ts": ts, "user": draw(st.text(min_size=1, max_size=8)), "channel": draw(st.text(min_size=1, max_size=8)),
              "text": draw(st.one_of(st.text(max_size=20), st.sampled_from(["", " \t "])))}
    thread = draw(st.one_of(st.none(), jsonl_stamps()))
    if thread is not None:
        record["thread_ts"] = thread[0]
    if draw(st.booleans()):
        record["reactions"] = [{"name": "tada"}]  # other keys are ignored
    if not record["text"].strip():
        return record, None
    return record, ChatMessage(ts=stored_ts, user=record["user"], channel=record["channel"], text=record["text"],
                               thread_ts=None if thread is None else thread[1])


@PROPERTY
@given(st.lists(st.tuples(st.sampled_from(["a.jsonl", "b.jsonl", "c.jsonl"]), jsonl_messages()), max_size=10),
       st.booleans())
def test_jsonl_messages_read_back_as_written(records: list[tuple[str, tuple[dict, ChatMessage | None]]],
                                            ascii_only: bool) -> None:
    """user, channel and text exactly; ts and thread_ts as Slack stamps; blank texts counted as skipped;
    members and channels in order of first appearance over the files in name order."""
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("a.jsonl", "b.jsonl", "c.jsonl"):
            rows = [json.dumps(record, ensure_ascii=ascii_only) + "\n" for file, (record, _) in records if file == name]
            if rows:
                (Path(tmp) / name).write_text("".join(rows), encoding="utf-8")
        loaded = read_jsonl(Path(tmp)).workspace
    in_file_order = [message for _, (_, message) in sorted(records, key=lambda r: r[0]) if message is not None]
    def key(m: ChatMessage) -> tuple:  # the whole message, so ties in (channel, ts) compare as multisets
        return (*m.sort_key(), m.user, m.text, m.thread_ts or "")

    assert sorted(loaded.messages, key=key) == sorted(in_file_order, key=key)
    assert list(loaded.messages) == sorted(loaded.messages, key=ChatMessage.sort_key)
    assert loaded.members == tuple(dict.fromkeys(m.user for m in in_file_order))
    assert loaded.channels == tuple(dict.fromkeys(m.channel for m in in_file_order))
    blanks = sum(1 for _, (_, message) in records if message is None)
    assert loaded.report is not None and loaded.report.skipped == ({"empty_text": blanks} if blanks else {})
