"""A seeded generator of synthetic chat workspaces, written in Slack's export layout.

Every workspace speaks the same English-like language (shared function words,
sentence templates, greetings, thanks, questions) but talks about its own topic
(its own nouns, verbs, adjectives and channels), has its own members and its own
size. So the federation is non-IID while a shared model still helps everyone.

Guarantees:

* Deterministic: workspace ``i`` depends only on ``(spec, i)`` and draws all its
  randomness from ``numpy.random.Generator(PCG64(SeedSequence(spec.seed,
  spawn_key=(i,))))``, i.e. the ``i``-th independent child stream of the seed.
  The same spec gives bit-identical files; workspaces do not affect each other.
* Written files are exactly what ``load_slack_export`` reads back into an equal
  ``Workspace`` (give it the workspace name).
* Messages are 15-120 characters; about 20% are thread replies; timestamps are
  unique and lie within four weeks from 2026-01-05 00:00 UTC.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from federated.data.records import ChatMessage, Workspace, ts_sort_key
from federated.errors import ConfigError, DataError

log = logging.getLogger("optin.data.synthetic")


@dataclass(frozen=True)
class SyntheticSpec:
    """How many workspaces to generate, from which seed, and how large each may be.

    Each workspace's message count is drawn uniformly from
    ``[min_messages, max_messages]``. Raises ``ConfigError`` naming the field if
    ``num_workspaces < 1`` or not ``1 <= min_messages <= max_messages``.
    """

    num_workspaces: int = 8
    seed: int = 0
    min_messages: int = 300
    max_messages: int = 1200

    def __post_init__(self) -> None:
        for field in ("num_workspaces", "seed", "min_messages", "max_messages"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ConfigError(f"{field}: expected an integer, got {value!r}")
        if self.num_workspaces < 1:
            raise ConfigError(f"num_workspaces: expected at least 1, got {self.num_workspaces}")
        if self.seed < 0:
            raise ConfigError(f"seed: expected a non-negative integer, got {self.seed}")
        if self.min_messages < 1:
            raise ConfigError(f"min_messages: expected at least 1, got {self.min_messages}")
        if self.max_messages < self.min_messages:
            raise ConfigError(
                f"max_messages: expected at least min_messages ({self.min_messages}), got {self.max_messages}"
            )


@dataclass(frozen=True)
class Topic:
    """One workspace theme: its vocabulary and channels (nouns are unique to the topic)."""

    name: str
    channels: tuple[str, ...]
    nouns: tuple[str, ...]
    verbs: tuple[str, ...]
    adjectives: tuple[str, ...]


def _topic(name: str, channels: str, nouns: str, verbs: str, adjectives: str) -> Topic:
    return Topic(name, tuple(channels.split()), tuple(nouns.split()), tuple(verbs.split()), tuple(adjectives.split()))


TOPICS: tuple[Topic, ...] = (
    _topic(
        "cooking",
        "recipes kitchen-help meal-prep baking",
        "risotto sourdough skillet saffron broth dumplings marinade oven spatula brisket "
        "pesto lentils cilantro ramen custard baguette paprika colander casserole tortilla",
        "simmer knead marinate braise chop roast season sear blanch ferment",
        "crispy savory tender spicy creamy smoky",
    ),
    _topic(
        "devops",
        "deploys incidents infra ci",
        "kubernetes terraform pipeline container cluster loadbalancer runbook dashboard certificate ingress "
        "helm postgres redis pager rollback namespace artifact webhook prometheus nginx",
        "deploy provision restart scale rotate migrate patch monitor debug containerize",
        "flaky stale healthy degraded idempotent ephemeral",
    ),
    _topic(
        "gardening",
        "veggie-beds seedlings compost pests",
        "tomatoes mulch seedling trellis zucchini hydrangea fertilizer greenhouse aphids basil "
        "trowel perennials marigolds irrigation kale shrubs tulips soil wheelbarrow cucumbers",
        "prune water transplant sow weed harvest fertilize repot till stake",
        "leafy perennial organic shady loamy hardy",
    ),
    _topic(
        "finance",
        "budgeting investing taxes",
        "portfolio dividend mortgage spreadsheet invoice ledger bonds etf equities annuity "
        "receipts deductible paycheck savings brokerage inflation payroll escrow collateral liquidity",
        "rebalance reconcile invest deduct hedge refinance diversify amortize file forecast",
        "quarterly taxable volatile fiscal liquid diversified",
    ),
    _topic(
        "music",
        "practice gear gigs songwriting",
        "guitar chord amplifier metronome setlist chorus bassline drumkit synth pedalboard "
        "harmony melody tempo ukulele microphone capo arpeggio riff vinyl soundcheck",
        "strum tune rehearse record improvise transpose mix compose jam loop",
        "acoustic funky mellow distorted syncopated upbeat",
    ),
    _topic(
        "astronomy",
        "observing telescopes astrophotos",
        "telescope nebula eyepiece galaxy jupiter saturn comet meteor eclipse constellation "
        "mount planisphere andromeda orion supernova exoplanet spectrograph observatory asteroid starfield",
        "observe collimate align stack track calibrate magnify spot chart sketch",
        "faint celestial clear dark bright lunar",
    ),
    _topic(
        "cycling",
        "group-rides bike-repair routes",
        "derailleur chainring cassette saddle handlebar helmet peloton crankset cleats spokes "
        "tubes headwind climb velodrome sprocket pannier brakes cadence gravel jersey",
        "ride pedal sprint descend shift draft inflate lube true overhaul",
        "aero carbon hilly steep fast muddy",
    ),
    _topic(
        "chemistry",
        "lab-notes safety instruments",
        "beaker titration reagent catalyst solvent pipette centrifuge spectrometer precipitate buffer "
        "enzyme polymer ethanol molarity burette fumehood isotope chromatography flask electrolyte",
        "titrate distill dilute synthesize purify crystallize neutralize filter weigh evaporate",
        "aqueous acidic anhydrous exothermic viscous inert",
    ),
    _topic(
        "photography",
        "photo-walks editing cameras",
        "aperture lens shutter histogram viewfinder softbox polarizer bokeh exposure lightroom "
        "sensor negatives darkroom flash zoom portrait landscape gimbal tripod memorycard",
        "shoot frame crop edit retouch expose develop bracket meter focus",
        "grainy overexposed candid monochrome sharp moody",
    ),
    _topic(
        "hiking",
        "trails gear-talk trip-planning",
        "trailhead backpack switchbacks summit tent compass headlamp canteen ridge boots "
        "campsite poles topo bivy blisters waterfall ranger permit scree cairn",
        "hike camp pack navigate scramble ford trek bushwhack hydrate backtrack",
        "rocky alpine scenic remote exposed windy",
    ),
    _topic(
        "chess",
        "openings puzzles tournaments",
        "gambit rook bishop knight pawn endgame checkmate castling sicilian stalemate "
        "tournament elo blitz fianchetto zugzwang king opening tactic clock chessboard",
        "castle sacrifice promote analyze fork pin blunder resign study calculate",
        "positional tactical passed winning solid aggressive",
    ),
    _topic(
        "woodworking",
        "shop-talk projects tools",
        "chisel dovetail lathe plywood walnut bandsaw clamp router jig mortise "
        "tenon varnish sawdust workbench oak sander veneer dowel bevel joinery",
        "plane sand glue stain carve rip chamfer finish measure drill",
        "rustic flush square warped splintery polished",
    ),
    _topic(
        "beekeeping",
        "hives swarms honey",
        "hive queen beeswax honeycomb smoker drones brood nectar pollen propolis "
        "varroa frames super extractor swarm apiary veil colony larvae feeder",
        "inspect requeen extract smoke split feed treat overwinter bottle capture",
        "docile queenless defensive golden sticky buzzing",
    ),
    _topic(
        "sailing",
        "regattas boat-maintenance crew",
        "spinnaker jib mainsail tiller keel halyard winch mooring anchor buoy "
        "regatta hull rudder boom cleat dinghy marina forestay bilge transom",
        "tack jibe reef trim hoist moor helm heel sail furl",
        "nautical breezy choppy salty calm leeward",
    ),
)

FIRST_NAMES: tuple[str, ...] = tuple(
    (
        "alice bob carol dave erin frank grace heidi ivan judy kevin laura mallory nina oscar peggy "
        "quinn rupert sybil trent ursula victor wendy xavier yara zoe amir bea chen dina emeka fatima "
        "gustavo hana igor jamal kenji lena mateo noor olga priya rafael sana tomas uma vikram wei "
        "ximena yusuf zara arjun bianca colm"
    ).split()
)

# Shared language. Slots: {noun} {noun2} {a_noun} {verb} {adj} {num} {day} {time} {mention}.
_GREETINGS: tuple[str, ...] = (
    "good morning everyone!",
    "hi all, happy {day}!",
    "morning folks, coffee time",
    "hello team, hope the week is going well",
    "welcome {mention}! glad to have you here",
    "hey everyone, back from vacation today",
)
_POSTS: tuple[str, ...] = (
    "has anyone tried the {noun} with {noun2} yet?",
    "i think we should {verb} the {noun} before {day}",
    "does anyone know how to {verb} {a_noun}?",
    "what's the best way to {verb} the {noun}?",
    "just finished the {adj} {noun}, pretty happy with it",
    "the {noun} is {adj} again, not sure why",
    "quick question: do we {verb} the {noun} first or the {noun2}?",
    "reminder: we {verb} the {noun} on {day} at {time}",
    "found a great guide on {adj} {noun}, will share it later",
    "anyone up for a {noun} session this {day}?",
    "i spent {num} minutes trying to {verb} the {noun}",
    "hey {mention}, can you {verb} the {noun} today?",
    "{mention} do you still have the {noun}?",
    "ok so the {noun} finally works after {num} tries",
    "is it normal for the {noun} to look this {adj}?",
    "i'll {verb} the {noun} tomorrow morning",
    "my {noun} broke again lol",
    "new here! mostly interested in {adj} {noun} and {noun2}",
    "can someone help me {verb} my {noun}?",
    "posting my notes on the {noun} in a thread",
    "we should {verb} the {noun} every {num} days or so",
    "the {adj} {noun} from last week was a big hit",
)
_REPLIES: tuple[str, ...] = (
    "thanks {mention}, that worked!",
    "thank you, the {noun} looks great now",
    "nice, thanks for sharing",
    "+1, same thing happened to me",
    "agreed, let's {verb} it on {day}",
    "i can {verb} the {noun} after lunch",
    "try the {adj} {noun}, it helped me a lot",
    "did you {verb} the {noun} first?",
    "not sure, maybe ask {mention}?",
    "yes! that's exactly what i needed",
    "haha same, the {noun} is always {adj}",
    "good point, i had not thought about the {noun}",
    "how long did it take to {verb} it?",
    "i'd {verb} it twice just to be safe",
    "worked for me after about {num} tries",
    "lol, classic {noun} problem",
    "oh nice, is that the {adj} one?",
)
_DAYS: tuple[str, ...] = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_SUFFIXES: tuple[str, ...] = ("", "", "", "", "", " :tada:", " :+1:", " :sweat_smile:", "!", " :)")
_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

START = dt.datetime(2026, 1, 5, tzinfo=dt.timezone.utc)
SPAN_DAYS = 28
REPLY_FRACTION = 0.2
MIN_CHARS = 15
MAX_CHARS = 120
_MIN_MEMBERS, _MAX_MEMBERS = 5, 25
# Relative chat activity by UTC hour: quiet nights, busy working hours.
_HOUR_WEIGHTS = np.array([1, 1, 1, 1, 1, 2, 3, 5, 8, 10, 10, 10, 9, 10, 10, 10, 9, 8, 6, 5, 4, 3, 2, 1], dtype=float)
_HOUR_P = _HOUR_WEIGHTS / _HOUR_WEIGHTS.sum()
_NUM_DRAWS = 17  # uniforms pre-drawn per message (columns of the draw matrix below)


def workspace_name(index: int, spec: SyntheticSpec) -> str:
    """``ws<index>-<topic>``; the index is zero-padded so names sort in index order."""
    width = max(2, len(str(spec.num_workspaces - 1)))
    return f"ws{index:0{width}d}-{TOPICS[index % len(TOPICS)].name}"


def _rng(spec: SyntheticSpec, index: int) -> np.random.Generator:
    """The ``index``-th independent child stream of ``spec.seed``."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(spec.seed, spawn_key=(index,))))


def _zipf_cdf(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """CDF of Zipf-like weights over ``n`` items in a random order (who/what is popular)."""
    weights = np.empty(n)
    weights[rng.permutation(n)] = 1.0 / np.arange(1, n + 1) ** exponent
    cdf = np.cumsum(weights)
    return cdf / cdf[-1]


def _pick(cdf: np.ndarray, u: float) -> int:
    return min(int(np.searchsorted(cdf, u, side="right")), len(cdf) - 1)


def _member_ids(rng: np.random.Generator, n: int) -> list[str]:
    ids: list[str] = []
    while len(ids) < n:
        chars = rng.integers(0, len(_ID_ALPHABET), 6)
        uid = "U0" + "".join(_ID_ALPHABET[c] for c in chars)
        if uid not in ids:
            ids.append(uid)
    return ids


def _timestamps(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` strictly increasing, unique Slack timestamps within the span."""
    days = rng.integers(0, SPAN_DAYS, n)
    hours = rng.choice(24, size=n, p=_HOUR_P)
    within = rng.integers(0, 3_600_000_000, n)
    micros = np.sort(days * 86_400_000_000 + hours * 3_600_000_000 + within)
    ramp = np.arange(n)
    micros = np.maximum.accumulate(micros - ramp) + ramp  # bump exact ties by 1 µs
    base = int(START.timestamp())
    return [f"{base + int(m) // 1_000_000}.{int(m) % 1_000_000:06d}" for m in micros]


def _fit(text: str) -> str:
    """Clamp to MIN_CHARS..MAX_CHARS, cutting only at spaces (never inside markup)."""
    if len(text) > MAX_CHARS:
        cut = text.rfind(" ", 0, MAX_CHARS + 1)
        text = text[: cut if cut >= MIN_CHARS else MAX_CHARS]
    if len(text) < MIN_CHARS:
        text = (text + " - see above").strip()[:MAX_CHARS]
    return text


def generate_workspace(index: int, spec: SyntheticSpec) -> Workspace:
    """Workspace ``index`` of the federation described by ``spec``, in memory.

    Its topic is ``TOPICS[index % len(TOPICS)]``; it has 5-25 members, the
    topic's channels plus ``general``, and a message count drawn uniformly from
    ``[spec.min_messages, spec.max_messages]``. Messages are in canonical order
    (channel, ts); a thread parent's ``thread_ts`` equals its ``ts``, a reply's
    is its parent's ``ts`` (the parent is earlier, in the same channel).
    Member names are recorded in ``member_names``.

    Raises ``ConfigError`` if ``index`` is not in ``[0, spec.num_workspaces)``.
    """
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < spec.num_workspaces:
        raise ConfigError(f"index: expected an integer in [0, {spec.num_workspaces}), got {index!r}")
    index = int(index)
    rng = _rng(spec, index)
    topic = TOPICS[index % len(TOPICS)]

    n_members = int(rng.integers(_MIN_MEMBERS, _MAX_MEMBERS + 1))
    names = [FIRST_NAMES[i] for i in rng.choice(len(FIRST_NAMES), size=n_members, replace=False)]
    members = _member_ids(rng, n_members)
    channels = ("general",) + topic.channels
    n = int(rng.integers(spec.min_messages, spec.max_messages + 1))

    timestamps = _timestamps(rng, n)
    channel_cdf = np.cumsum(rng.dirichlet(np.full(len(channels), 2.0)))
    channel_cdf /= channel_cdf[-1]
    author_cdf = _zipf_cdf(rng, n_members, 0.8)
    noun_cdf = _zipf_cdf(rng, len(topic.nouns), 1.1)
    draws = rng.random((n, _NUM_DRAWS))

    chan_of: list[int] = []
    user_of: list[int] = []
    text_of: list[str] = []
    parent_of: list[int] = [-1] * n
    is_parent = [False] * n
    recent_top: dict[int, list[int]] = defaultdict(list)  # channel -> recent top-level message indices
    nouns, verbs, adjs = topic.nouns, topic.verbs, topic.adjectives

    for i in range(n):
        u = draws[i]
        chan = _pick(channel_cdf, u[0])
        author = _pick(author_cdf, u[1])
        candidates = recent_top[chan]
        if candidates and u[2] < REPLY_FRACTION:
            parent = candidates[int(u[3] * len(candidates))]
            parent_of[i] = parent
            is_parent[parent] = True
            template = _REPLIES[int(u[4] * len(_REPLIES))]
        else:
            pool = _GREETINGS if u[4] < 0.08 else _POSTS
            template = pool[int(u[5] * len(pool))]
            candidates.append(i)
            if len(candidates) > 8:
                del candidates[0]

        noun_i = _pick(noun_cdf, u[6])
        noun2_i = _pick(noun_cdf, u[7])
        if noun2_i == noun_i:
            noun2_i = (noun_i + 1) % len(nouns)
        noun = nouns[noun_i]
        other = int(u[8] * (n_members - 1))
        if other >= author:
            other += 1
        hour = 8 + int(u[15] * 11)
        text = template.format(
            noun=noun,
            noun2=nouns[noun2_i],
            a_noun=("an " if noun[0] in "aeiou" else "a ") + noun,
            verb=verbs[int(u[10] * len(verbs))],
            adj=adjs[int(u[11] * len(adjs))],
            num=2 + int(u[9] * 97),
            day=_DAYS[int(u[12] * len(_DAYS))],
            time=f"{hour}:{'30' if u[14] < 0.5 else '00'}",
            mention=f"<@{members[other]}>",
        )
        if u[13] < 0.12:
            text = text[0].upper() + text[1:]
        text = _fit(text + _SUFFIXES[int(u[16] * len(_SUFFIXES))])
        chan_of.append(chan)
        user_of.append(author)
        text_of.append(text)

    messages = []
    for i in range(n):
        if parent_of[i] >= 0:
            thread_ts = timestamps[parent_of[i]]
        elif is_parent[i]:
            thread_ts = timestamps[i]
        else:
            thread_ts = None
        messages.append(
            ChatMessage(
                ts=timestamps[i],
                user=members[user_of[i]],
                channel=channels[chan_of[i]],
                text=text_of[i],
                thread_ts=thread_ts,
            )
        )
    messages.sort(key=ChatMessage.sort_key)
    return Workspace(
        name=workspace_name(index, spec),
        members=tuple(members),
        channels=channels,
        messages=tuple(messages),
        member_names=tuple(names),
    )


def write_slack_export(ws: Workspace, folder: Path) -> None:
    """Write ``ws`` to ``folder`` in Slack's admin-export layout.

    Writes ``users.json``, ``channels.json`` and ``<channel>/<YYYY-MM-DD>.json``
    (messages grouped by the UTC day of their ts, each file sorted by ts; only
    channels with messages get a folder). Thread parents carry ``thread_ts``
    (their own ts), ``reply_count`` and ``reply_users_count``; replies carry
    ``thread_ts`` and ``parent_user_id``. Ids of channels are derived from the
    workspace and channel names, so the output is a pure function of ``ws``:
    bit-identical bytes for equal workspaces. ``load_slack_export(folder,
    name=ws.name)`` returns a workspace equal to ``ws`` when its messages are in
    canonical order and each has non-blank text.

    Raises ``DataError`` if ``folder`` exists and is not an empty folder (it
    never overwrites or mixes with existing data), or if a message names a
    channel that is not in ``ws.channels`` or is not a plain folder name.
    """
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise DataError(f"{folder}: refusing to write a Slack export into an existing non-empty path")
    known = set(ws.channels)
    for message in ws.messages:
        if message.channel not in known:
            raise DataError(f"{ws.name}: message {message.ts} is in channel {message.channel!r}, not in channels")
    for channel in ws.channels:
        if not channel or channel in {".", ".."} or "/" in channel or "\\" in channel:
            raise DataError(f"{ws.name}: channel name {channel!r} cannot be a folder name")

    by_channel: dict[str, list[ChatMessage]] = defaultdict(list)
    for message in ws.messages:
        by_channel[message.channel].append(message)
    author = {(m.channel, m.ts): m.user for m in ws.messages}
    replies: dict[tuple[str, str], list[str]] = defaultdict(list)
    for m in ws.messages:
        if m.is_reply:
            replies[(m.channel, m.thread_ts)].append(m.user)

    names = ws.member_names or tuple(uid.lower() for uid in ws.members)
    first_ts = min((int(ts_sort_key(m.ts)) for m in ws.messages), default=int(START.timestamp()))
    folder.mkdir(parents=True, exist_ok=True)
    _dump(
        folder / "users.json",
        [
            {"id": uid, "name": name, "real_name": name.capitalize(), "deleted": False, "is_bot": False}
            for uid, name in zip(ws.members, names)
        ],
    )
    _dump(
        folder / "channels.json",
        [
            {
                "id": _channel_id(ws.name, channel),
                "name": channel,
                "created": first_ts,
                "creator": ws.members[0] if ws.members else "",
                "is_archived": False,
                "is_general": channel == "general",
                "members": list(ws.members),
                "topic": {"value": "", "creator": "", "last_set": 0},
                "purpose": {"value": "", "creator": "", "last_set": 0},
            }
            for channel in ws.channels
        ],
    )
    for channel in ws.channels:
        days: dict[str, list[ChatMessage]] = defaultdict(list)
        for m in by_channel.get(channel, ()):
            day = dt.datetime.fromtimestamp(int(ts_sort_key(m.ts)), tz=dt.timezone.utc).date().isoformat()
            days[day].append(m)
        if not days:
            continue
        (folder / channel).mkdir()
        for day in sorted(days):
            entries = []
            for m in sorted(days[day], key=lambda m: ts_sort_key(m.ts)):
                entry: dict[str, Any] = {"type": "message", "user": m.user, "text": m.text, "ts": m.ts}
                if m.is_reply:
                    entry["thread_ts"] = m.thread_ts
                    parent_user = author.get((m.channel, m.thread_ts))
                    if parent_user is not None:
                        entry["parent_user_id"] = parent_user
                elif m.thread_ts is not None:
                    users = replies.get((m.channel, m.ts), [])
                    entry["thread_ts"] = m.thread_ts
                    entry["reply_count"] = len(users)
                    entry["reply_users_count"] = len(set(users))
                entries.append(entry)
            _dump(folder / channel / f"{day}.json", entries)


def generate_federation(root: Path, spec: SyntheticSpec) -> list[Path]:
    """Write every workspace of ``spec`` to ``root/<name>/data/``; return the ``root/<name>`` folders.

    The list is in index order, which is also the folders' sorted order. No
    policy file is written (the caller decides consent). Raises ``DataError`` if
    a ``data`` folder already exists and is not empty.
    """
    root = Path(root)
    folders: list[Path] = []
    for index in range(spec.num_workspaces):
        ws = generate_workspace(index, spec)
        folder = root / ws.name
        write_slack_export(ws, folder / "data")
        folders.append(folder)
        log.debug("wrote %s: %d messages, %d members", ws.name, len(ws.messages), len(ws.members))
    return folders


def _channel_id(workspace: str, channel: str) -> str:
    digest = hashlib.sha256(f"{workspace}/{channel}".encode()).hexdigest().upper()
    return "C0" + digest[:8]


def _dump(path: Path, obj: Any) -> None:
    path.write_bytes((json.dumps(obj, indent=4, ensure_ascii=False) + "\n").encode("utf-8"))
