"""Local scrubbing: replace personal identifiers in message texts by placeholders, on the node.

Runs on the workspace's own node when its data is loaded, before any token
reaches a model. Rules (each can be turned off in ``ScrubOptions``):

* URLs (``http://``, ``https://``, ``ftp://``, ``www.``)      -> ``<url>``
* e-mail addresses                                           -> ``<email>``
* mentions: ``@`` + a roster name or id, or a Slack
  member id (``U``/``W`` + 6 or more capitals/digits)        -> ``<user>``
* names: a word that is a roster name (handles, real and
  display names from users.json, ``roster.txt``), or a part
  of one, compared case-insensitively                        -> ``<name>``
* runs of ``min_digits`` or more consecutive digits          -> ``<number>``

Guarantees: one left-to-right pass, so a placeholder is never scrubbed again;
a message is never dropped (its text only shrinks or changes); the message
count, order, authors and threads are unchanged. Each message is scrubbed as a
function of its own text and the roster alone (names and ids given independently
of the messages, ``federated.data.roster``), so adding or removing a message
never changes how another one is scrubbed: scrubbing keeps the neighbouring
relation DP-SGD protects.

Assumptions and limits: names are matched as whole words (letters, digits and
the IRC nick characters ``_-[]\\^{}|```), so a name written with different
spelling or inside a longer word is not found; names shorter than
``min_name_length`` and names that are common English words
(``COMMON_WORDS``: a member called ``Will`` or ``you_``) are not scrubbed, as
they cannot be told from the word; any other name that is a word (an IRC user
called ``ubuntu`` or ``root``) is scrubbed everywhere, which costs some
utility, never privacy; digits split by separators
(``555-123-4567``) are runs of fewer digits and are kept. Scrubbing is
defence in depth: the privacy guarantee is DP-SGD's.

Cost: linear in the text's length, whatever the text (no rule is retried from every position of a long
run). No rule matches across whitespace, so scrubbing a text cut at a whitespace character gives exactly
a prefix of what the whole text scrubs to (``federated.limits.MESSAGE_MAX_CHARS`` relies on it).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace

from federated.data.records import Workspace
from federated.errors import ConfigError

log = logging.getLogger("optin.data.scrub")

USER, NAME, EMAIL, URL, NUMBER = "<user>", "<name>", "<email>", "<url>", "<number>"

_WORD_CHARS = r"\w\-\[\]\\^{}|`"
_LOCAL_CHAR = r"[\w.+\-]"  # an e-mail address's local part
# Possessive local part: the only "@" it can reach is the one right after its run, so giving back
# characters could never help, and trying again from a later start in the same run always fails the same way.
_EMAIL = rf"{_LOCAL_CHAR}++@[\w\-]+(?:\.[\w\-]+)*\.[^\W\d_]{{2,}}"
_PATTERN = re.compile(
    r"(?P<url>(?:(?:https?|ftp)://|www\.)[^\s<>\"]+)"
    rf"|(?P<email>(?<!{_LOCAL_CHAR}){_EMAIL})"  # tried at the start of a run only; see Scrubber._scan
    rf"|(?P<mention>@(?P<handle>[{_WORD_CHARS}.]*[{_WORD_CHARS}]))"
    rf"|(?P<word>[{_WORD_CHARS}]+)"
)
_EMAIL_AT = re.compile(rf"(?P<email>{_EMAIL})")
_IS_LOCAL = re.compile(_LOCAL_CHAR)
_NOT_LOCAL = re.compile(rf"(?!{_LOCAL_CHAR}).", re.DOTALL)
_NAME_TOKEN = re.compile(rf"[{_WORD_CHARS}]+")
_SLACK_USER_ID = re.compile(r"^[UW][A-Z0-9]{6,}$")
_URL_TRAILING = ".,;:!?)]}'\""

COMMON_WORDS = frozenset("""
a about after again all also am an and any anyone are as at back be because been before being but by can
come could day did do does done either even every first for from get give go going good got had has have he
her here hi him his how i if in into is it its just know like look make many may me more most much must my
need new no not now of off ok okay on one only or other our out over people please really right said say see
she should so some someone something still sure take than thanks that the their them then there these they
thing think this those time to too try two up us use very want was way we well were what when where which
who why will with work would yeah yes yet you your
""".split())
"""Words never treated as names: indistinguishable from the word itself (nicks such as ``you_`` or ``will``)."""
_EDGE_PUNCTUATION = "_-|^`[]{}\\"


@dataclass(frozen=True)
class ScrubOptions:
    """Which rules run.

    ``min_digits``: shortest digit run scrubbed; ``min_name_length``: shortest
    name scrubbed; ``keep_words``: lower-case words never scrubbed as names.
    """

    urls: bool = True
    emails: bool = True
    mentions: bool = True
    names: bool = True
    numbers: bool = True
    min_digits: int = 5
    min_name_length: int = 3
    keep_words: frozenset[str] = COMMON_WORDS

    def __post_init__(self) -> None:
        for key in ("min_digits", "min_name_length"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"scrub: {key} expected an integer >= 1, got {value!r}")


class Scrubber:
    """Scrubs texts against one workspace's names; counts replacements by placeholder in ``counts``."""

    def __init__(self, names: Iterable[str], member_ids: Iterable[str], options: ScrubOptions) -> None:
        self.options = options
        self.names = name_keys(names, options.min_name_length) - options.keep_words
        self.ids = frozenset(member_ids)
        self.counts: Counter[str] = Counter()
        self._digits = re.compile(rf"\d{{{options.min_digits},}}")

    def __call__(self, text: str) -> str:
        return self._scan(text)

    def _scan(self, text: str) -> str:
        """One left-to-right pass, as ``_PATTERN.sub`` with the e-mail rule tried at every position would do it,
        in linear time.

        At a position inside a run of local-part characters the e-mail rule gives the same answer as at the
        first position of that run the pass reaches (the same "@" and domain follow), so it is tried only
        there: at the run's start (the pattern's lookbehind), or right after a match that began before the
        run and ended inside it (a word such as ``a|b`` or a mention running into it), tried here. A URL
        cannot start at such a position (it is ".", "+", "-", "_" or a digit), so trying the e-mail rule
        first keeps the rules' order.
        """
        out: list[str] = []
        pos = 0
        while (found := _PATTERN.search(text, pos)) is not None:
            out.append(text[pos:found.start()])
            match: re.Match[str] | None = found
            while match is not None:
                out.append(self._replace(match))
                pos = match.end()
                match = _EMAIL_AT.match(text, pos) if _enters_run(text, match) else None
        out.append(text[pos:])
        return "".join(out)

    def _replace(self, match: re.Match[str]) -> str:
        kind = match.lastgroup
        if kind == "url" and self.options.urls:
            url = match.group()
            kept = url.rstrip(_URL_TRAILING)
            return self._count(URL) + url[len(kept):]
        if kind == "email" and self.options.emails:
            return self._count(EMAIL)
        if kind == "mention":
            handle = match.group("handle")
            if self.options.mentions and self._is_member(handle):
                return self._count(USER)
            return "@" + self._scan(handle)
        return self._word(match.group())

    def _word(self, word: str) -> str:
        if self.options.names and word.casefold() in self.names:
            return self._count(NAME)
        if self.options.numbers:
            return self._digits.sub(lambda _: self._count(NUMBER), word)
        return word

    def _is_member(self, handle: str) -> bool:
        return handle in self.ids or bool(_SLACK_USER_ID.match(handle)) or handle.casefold() in self.names

    def _count(self, placeholder: str) -> str:
        self.counts[placeholder] += 1
        return placeholder


def _enters_run(text: str, match: re.Match[str]) -> bool:
    """Whether ``match`` ended inside a run of local-part characters that began after ``match`` began."""
    end = match.end()  # > match.start(): no rule matches the empty string
    return (_IS_LOCAL.match(text, end) is not None and _IS_LOCAL.match(text, end - 1) is not None
            and _NOT_LOCAL.search(text, match.start(), end) is not None)


def name_keys(names: Iterable[str], min_length: int) -> frozenset[str]:
    """Casefolded names and their word parts, also with edge punctuation stripped, of ``min_length``+ chars.

    ``"Alice Smith"`` gives ``alice``, ``smith`` (and ``alice smith``; whole
    names matter for handles such as ``john.smith`` after an ``@``); the nick
    ``"kyle_"`` gives ``kyle_`` and ``kyle``. Parts that are only digits are left out.
    """
    keys: set[str] = set()
    for name in names:
        candidates = {name.strip()}
        for token in _NAME_TOKEN.findall(name):
            candidates |= {token, token.strip(_EDGE_PUNCTUATION)}
        keys.update(c.casefold() for c in candidates if len(c) >= min_length and not c.isdigit())
    return frozenset(keys)


def scrub_workspace(workspace: Workspace, names: Iterable[str], options: ScrubOptions = ScrubOptions(),
                    member_ids: Iterable[str] = ()) -> Workspace:
    """``workspace`` with every message text scrubbed; its report (if any) gets the replacement counts.

    ``names`` and ``member_ids`` must come from the roster, not from the messages (``workspace.members`` of
    an IRC or JSONL workspace are its authors): see ``federated.data.roster``.
    """
    scrubber = Scrubber(names, member_ids, options)
    messages = tuple(replace(m, text=scrubber(m.text)) for m in workspace.messages)
    report = workspace.report
    if report is not None:
        report = replace(report, scrubbed=dict(sorted(scrubber.counts.items())))
    log.debug("%s: scrubbed %s", workspace.name, dict(scrubber.counts))
    return replace(workspace, messages=messages, report=report)
