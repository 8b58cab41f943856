"""Render Slack's message markup into the plain text a reader of the channel sees.

Slack stores message text with markup in angle brackets and escapes exactly
three characters (``&`` as ``&amp;``, ``<`` as ``&lt;``, ``>`` as ``&gt;``).
``render`` turns

* ``<@U123>`` / ``<@U123|label>`` into ``@handle`` (the handle from users.json,
  else the label, else the id),
* ``<#C123|general>`` / ``<#C123>`` into ``#general`` (the label, else the name
  from the conversation indexes, else the id),
* ``<!here>``, ``<!channel>``, ``<!everyone>`` into ``@here`` ...; other
  ``<!...|label>`` (user groups, dates) into their label,
* ``<https://example.com|label>`` into ``label`` and ``<https://example.com>``
  into ``https://example.com`` (also ``mailto:`` and any other scheme),

and then decodes the three entities, in labels too. Emoji shortcodes
(``:tada:``) and unicode are kept as written. A literal ``<`` never occurs in
Slack's stored text, so every ``<...>`` span is markup.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_MARKUP = re.compile(r"<([^<>]*)>")
_ENTITY = re.compile(r"&(lt|gt|amp);")
_ENTITIES = {"lt": "<", "gt": ">", "amp": "&"}
_SPECIAL_MENTIONS = frozenset({"here", "channel", "everyone"})


def render(text: str, users: Mapping[str, str], conversations: Mapping[str, str]) -> str:
    """``text`` as displayed: markup rendered, entities decoded.

    ``users`` maps member ids to handles; ``conversations`` maps conversation
    ids to names. Unknown ids are rendered as themselves.
    """
    out: list[str] = []
    pos = 0
    for match in _MARKUP.finditer(text):
        out.append(unescape(text[pos:match.start()]))
        out.append(_render_span(match.group(1), users, conversations))
        pos = match.end()
    out.append(unescape(text[pos:]))
    return "".join(out)


def unescape(text: str) -> str:
    """Decode Slack's three entities (and only those) in one pass."""
    return _ENTITY.sub(lambda m: _ENTITIES[m.group(1)], text)


def _render_span(span: str, users: Mapping[str, str], conversations: Mapping[str, str]) -> str:
    target, _, label = span.partition("|")
    label = unescape(label)
    if target.startswith("@"):
        uid = target[1:]
        return "@" + (users.get(uid) or label.lstrip("@") or uid)
    if target.startswith("#"):
        cid = target[1:]
        return "#" + (label or conversations.get(cid) or cid)
    if target.startswith("!"):
        command = target[1:]
        if command in _SPECIAL_MENTIONS:
            return "@" + command
        return label or "@" + command.split("^", 1)[0]
    return label or unescape(target)
