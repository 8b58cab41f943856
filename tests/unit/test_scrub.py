"""Local scrubbing: each rule, its placeholder, what is deliberately kept, and that nothing is scrubbed twice."""

from __future__ import annotations

import pytest

from federated.data import ChatMessage, ScrubOptions, Workspace, scrub_workspace
from federated.data.scrub import Scrubber, name_keys
from federated.data.source import LoadReport
from federated.errors import ConfigError

NAMES = ["alice", "Bob Smith", "john.smith", "kyle_", "[noob]", "Zoë", "ubuntu", "you_", "al"]
IDS = ["U01ALICE1"]


def scrub(text: str, options: ScrubOptions | None = None) -> str:
    return Scrubber(NAMES, IDS, options or ScrubOptions())(text)


@pytest.mark.parametrize(("text", "expected"), [
    ("see https://example.com/a?b=1, then www.example.org/x.", "see <url>, then <url>."),
    ("(docs at http://x.io/path)", "(docs at <url>)"),
    ("mail alice.b+tag@mail.example.co.uk or ftp://files.example.com", "mail <email> or <url>"),
    ("@alice and @U01ALICE1 and @W0123ABCD and @john.smith.", "<user> and <user> and <user> and <user>."),
    ("@here @channel @someone_else", "@here @channel @someone_else"),
    ("thanks Alice, ALICE and alice!", "thanks <name>, <name> and <name>!"),
    ("Bob Smith said smith is fine", "<name> <name> said <name> is fine"),
    ("kyle: ping kyle_ and [noob]: hi", "<name>: ping <name> and <name>: hi"),
    ("zoë and ZOË", "<name> and <name>"),
    ("install ubuntu on the box", "install <name> on the box"),
    ("you and al and alien", "you and al and alien"),  # common word; too short; a longer word
    ("call 5551234567 or 555-1234, pin 1234, id abc123456", "call <number> or 555-1234, pin 1234, id abc<number>"),
    ("日本語 café 🎉 :tada:", "日本語 café 🎉 :tada:"),
])
def test_rules(text: str, expected: str) -> None:
    assert scrub(text) == expected


def test_placeholders_are_never_rescanned_and_counts_add_up() -> None:
    scrubber = Scrubber(["url", "name", "user"], [], ScrubOptions())
    assert scrubber("user name url http://u.rl <url>") == "<name> <name> <name> <url> <<name>>"
    assert scrubber.counts == {"<name>": 4, "<url>": 1}


def test_each_rule_can_be_turned_off() -> None:
    text = "@alice alice mailto a@b.org http://x.io 1234567"
    off = ScrubOptions(urls=False, emails=False, mentions=False, names=False, numbers=False)
    assert scrub(text, off) == text
    assert scrub(text, ScrubOptions(mentions=False)) == "@<name> <name> mailto <email> <url> <number>"
    assert scrub(text, ScrubOptions(min_digits=8)) == "<user> <name> mailto <email> <url> 1234567"
    assert scrub("you al", ScrubOptions(min_name_length=2, keep_words=frozenset())) == "<name> <name>"


def test_name_keys() -> None:
    assert name_keys(["Bob Smith", "kyle_", "12345", "x"], 3) == {"bob smith", "bob", "smith", "kyle_", "kyle"}


@pytest.mark.parametrize("bad", [0, -1, True, 2.5])
def test_bad_options_are_config_errors(bad: object) -> None:
    with pytest.raises(ConfigError, match="min_digits"):
        ScrubOptions(min_digits=bad)  # type: ignore[arg-type]


def test_scrub_workspace_keeps_everything_but_the_texts() -> None:
    messages = (ChatMessage("1.000001", "U01ALICE1", "general", "hi @alice", "1.000001"),
                ChatMessage("2.000001", "U02", "general", "mail me: a@b.org", "1.000001"))
    ws = Workspace("acme", ("U01ALICE1", "U02"), ("general",), messages, ("alice", "bob"),
                   report=LoadReport("slack", 2, {"bot": 1}))
    out = scrub_workspace(ws, ["alice"])
    assert out.texts == ["hi <user>", "mail me: <email>"]
    assert [(m.ts, m.user, m.channel, m.thread_ts) for m in out.messages] == [
        (m.ts, m.user, m.channel, m.thread_ts) for m in messages]
    assert (out.name, out.members, out.channels, out.member_names) == (ws.name, ws.members, ws.channels,
                                                                      ws.member_names)
    assert out.report == LoadReport("slack", 2, {"bot": 1}, scrubbed={"<email>": 1, "<user>": 1})
