"""The parsed-workspace cache: never stale (edits, additions, removals, same-tick rewrites), callers cannot
change what it keeps, and its memory bound holds."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from clients.workspace_cache import WorkspaceCache
from clients.workspace_node import DATA_FOLDER, WorkspaceNode
from federated.config import RunConfig
from federated.data import load_workspace, split_messages
from federated.errors import DataError
from federated.privacy.policy import Policy

FRACTION, SECRET = 0.25, bytes(range(32))


def _records(prefix: str, count: int) -> list[dict[str, object]]:
    return [{"ts": 1700000000 + i, "user": f"u{i % 3}", "channel": "general", "text": f"{prefix} message {i}"}
            for i in range(count)]


def _write(file: Path, records: list[dict[str, object]]) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def _workspace(root: Path, name: str, count: int = 40) -> Path:
    data = root / name / DATA_FOLDER
    _write(data / "a.jsonl", _records(name, count))
    return data


def _texts(split: tuple[list, list]) -> set[str]:
    return {m.text for part in split for m in part}


def _uncached(data: Path) -> tuple[list, list]:
    return split_messages(list(load_workspace(data, name=data.parent.name).messages), FRACTION, SECRET)


def _load(cache: WorkspaceCache, data: Path) -> tuple[list, list]:
    return cache.load_split(data, data.parent.name, SECRET, FRACTION)


def _same_objects(a: tuple[list, list], b: tuple[list, list]) -> bool:
    """True when ``b`` came from the cache entry ``a`` was stored in (the very same message objects)."""
    return all(x is y for part_a, part_b in zip(a, b) for x, y in zip(part_a, part_b, strict=True))


@pytest.mark.parametrize("settle_seconds", [0.0, 2.0], ids=["settled-files", "just-written-files"])
def test_a_changed_added_or_removed_file_is_seen_at_the_next_call(tmp_path: Path, settle_seconds: float) -> None:
    # settle 0: every file is signed by its metadata; settle 2 s: these just-written files by their content.
    cache = WorkspaceCache(settle_seconds=settle_seconds)
    data = _workspace(tmp_path, "team")
    first = _load(cache, data)
    assert first == _uncached(data)
    assert _same_objects(first, _load(cache, data))  # unchanged files: served from the cache

    _write(data / "a.jsonl", _records("team", 41))  # one more message
    assert "team message 40" in _texts(_load(cache, data))
    _write(data / "b.jsonl", _records("added", 5))
    assert {f"added message {i}" for i in range(5)} <= _texts(_load(cache, data))
    (data / "a.jsonl").unlink()
    assert _texts(_load(cache, data)) == {f"added message {i}" for i in range(5)}
    assert _load(cache, data) == _uncached(data)
    assert len(cache) == 1  # each change replaced the workspace's entry


def test_a_same_size_rewrite_with_its_old_mtime_restored_is_seen(tmp_path: Path) -> None:
    """What a second write within one timestamp tick looks like: same path, inode, size and mtime."""
    cache = WorkspaceCache()
    data = _workspace(tmp_path, "team")
    file = data / "a.jsonl"
    before = file.stat()
    _load(cache, data)
    file.write_text(file.read_text(encoding="utf-8").replace("team message", "mean message"), encoding="utf-8")
    os.utime(file, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = file.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)
    assert all(text.startswith("mean message") for text in _texts(_load(cache, data)))


def test_a_workspace_cached_while_fresh_is_not_read_again_once_its_files_settle(tmp_path: Path) -> None:
    cache = WorkspaceCache(settle_seconds=0.2)
    data = _workspace(tmp_path, "team")
    first = _load(cache, data)
    time.sleep(0.3)  # the files are now older than settle_seconds
    assert _same_objects(first, _load(cache, data))


def test_callers_cannot_change_what_the_cache_keeps(tmp_path: Path) -> None:
    cache = WorkspaceCache(settle_seconds=0)
    data = _workspace(tmp_path, "team")
    train, held_out = _load(cache, data)
    expected = (list(train), list(held_out))
    train.clear()
    held_out.append(expected[0][0])
    assert _load(cache, data) == expected
    with pytest.raises(AttributeError):
        expected[0][0].text = "changed"  # type: ignore[misc]  # messages are frozen


def test_memory_bound_holds_and_the_least_recently_used_workspace_goes_first(tmp_path: Path) -> None:
    cache = WorkspaceCache(max_messages=100, settle_seconds=0)
    a, b, c = (_workspace(tmp_path, name) for name in ("a", "b", "c"))  # 40 messages each
    kept_a = _load(cache, a)
    kept_b = _load(cache, b)
    assert _same_objects(kept_a, _load(cache, a))  # a is now the most recently used
    _load(cache, c)
    assert (len(cache), cache.messages) == (2, 80)
    assert _same_objects(kept_a, _load(cache, a))
    assert not _same_objects(kept_b, _load(cache, b))  # b was evicted, so it was read again

    by_count = WorkspaceCache(max_workspaces=1, settle_seconds=0)
    for data in (a, b, c):
        _load(by_count, data)
    assert len(by_count) == 1

    too_big = _workspace(tmp_path, "big", count=101)
    fresh = WorkspaceCache(max_messages=100, settle_seconds=0)
    assert _load(fresh, too_big) == _uncached(too_big)
    assert (len(fresh), fresh.messages) == (0, 0)


def test_irc_log_files_outside_the_data_folder_are_watched(tmp_path: Path) -> None:
    log = tmp_path / "corpus" / "log.txt"
    log.parent.mkdir()
    log.write_text("[10:00] <alice> hello bob\n[10:01] <bob> hi alice\n", encoding="utf-8")
    data = tmp_path / "ws" / DATA_FOLDER
    data.mkdir(parents=True)
    (data / "source.toml").write_text(f'format = "irc"\nroot = "{log.parent}"\nchannel = "chat"\n\n'
                                      '[[files]]\npath = "log.txt"\ndate = 2020-02-03\n', encoding="utf-8")
    cache = WorkspaceCache(settle_seconds=0)
    assert _texts(_load(cache, data)) == {"hello bob", "hi alice"}
    (data / "roster.txt").write_text("alice\nbob\n", encoding="utf-8")  # a new roster is seen too
    assert _texts(_load(cache, data)) == {"hello <name>", "hi <name>"}
    with log.open("a", encoding="utf-8") as f:
        f.write("[10:02] <carol> good morning\n")
    assert "good morning" in _texts(_load(cache, data))


def test_unreadable_data_raises_the_loaders_error(tmp_path: Path) -> None:
    cache = WorkspaceCache()
    with pytest.raises(DataError, match="workspace data folder not found"):
        _load(cache, tmp_path / "nowhere" / DATA_FOLDER)
    data = _workspace(tmp_path, "team")
    (data / "a.jsonl").write_text("not json\n", encoding="utf-8")
    with pytest.raises(DataError, match="a.jsonl"):
        _load(cache, data)
    assert len(cache) == 0


def test_the_node_reads_its_workspace_through_the_process_cache(tmp_path: Path) -> None:
    data = _workspace(tmp_path, "team")
    node, config, policy = WorkspaceNode(data.parent), RunConfig(), Policy(held_out_fraction=FRACTION)
    first, again = _held_texts(node, config, policy), _held_texts(node, config, policy)
    assert first and all(x is y for x, y in zip(first, again, strict=True))
    _write(data / "a.jsonl", _records("changed", 40))
    assert all(text.startswith("changed") for text in _held_texts(node, config, policy))


def _held_texts(node: WorkspaceNode, config: RunConfig, policy: Policy) -> list[str]:
    return [m.text for m in node.held_out_messages(config, policy)]
