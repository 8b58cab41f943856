"""The workspace's ledger under attack: a budget race, a replayed round, a weakened privacy unit, and a ledger
rolled back or replaced behind the node's back. Each test plays the attack and checks that the node refuses
(``BudgetError``, ``ReplayError``, ``UnitChangeError``, ``LedgerError``/``AuditError``) and writes nothing."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import threading
import time
from contextlib import closing
from pathlib import Path

import pytest

from clients.workspace_node import WorkspaceNode
from federated.audit import AUDIT_FILE, AuditError, AuditLog, read_entries, verify, verify_log
from federated.errors import BudgetError, LedgerError, LockError, ReplayError, UnitChangeError
from federated.privacy.accounting import epsilon
from federated.privacy.ledger import LEDGER_FILE, SCHEMA_VERSION, Ledger, Release
from federated.privacy.ledger_check import forget_checkpoints

DELTA = 1e-5
STEP = (1.0, 0.1, 10)  # (noise multiplier, sample rate, steps): ε ≈ 3.44 after one release, ≈ 4.22 after two
ONE_ROUND = epsilon([STEP], DELTA)
TWO_ROUNDS = epsilon([STEP, STEP], DELTA)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _record(ledger: Ledger, run_id: str, server_round: int, *, max_epsilon: float = 100.0, unit: str = "message",
            group_size: int = 1, sha256: str | None = None) -> Release:
    return ledger.record(run_id, server_round, *STEP, DELTA, max_epsilon=max_epsilon, privacy_unit=unit,
                         group_size=group_size, sha256=sha256 or _sha(f"{run_id}/{server_round}"))


def _release(node: WorkspaceNode, run_id: str, server_round: int, unit: str = "message") -> Release:
    """One release the way the node makes it: under the lock, checked ledger, record, then the audit entry."""
    with node.lock(), node.open_ledger() as ledger:
        ledger.check_not_released(run_id, server_round)
        ledger.check_unit(unit)
        digest = _sha(f"{node.name}/{run_id}/{server_round}")
        release = _record(ledger, run_id, server_round, unit=unit, group_size=4 if unit == "member" else 1,
                          sha256=digest)
        node.audit().append("release", run_id=run_id, round=server_round, bytes=10, sha256=digest,
                            epsilon_total=release.epsilon_total, delta=DELTA, privacy_unit=unit)
    return release


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    forget_checkpoints()


@pytest.fixture
def node(tmp_path: Path) -> WorkspaceNode:
    folder = tmp_path / "acme"
    folder.mkdir()
    return WorkspaceNode(folder)


def _rounds(path: Path) -> list[int]:
    with Ledger(path) as ledger:
        return [r.round for r in ledger.releases()]


# --- 1. the budget race ---------------------------------------------------------------------------------------


def test_two_writers_that_both_planned_within_budget_cannot_both_record(tmp_path: Path) -> None:
    """The attack: two train calls check the budget, both fit, both train, both record. The second record sees
    the first's row inside its own write transaction and refuses."""
    path = tmp_path / LEDGER_FILE
    budget = (ONE_ROUND + TWO_ROUNDS) / 2  # one round fits, two do not
    first, second = Ledger(path), Ledger(path)
    with first, second:
        for ledger in (first, second):  # both plan against the same spent ε, before either records
            assert epsilon(ledger.history() + [STEP], DELTA) <= budget
        _record(first, "run-a", 1, max_epsilon=budget)
        with pytest.raises(BudgetError, match=r"over the budget max_epsilon=3\.8.*Nothing was recorded"):
            _record(second, "run-b", 1, max_epsilon=budget)
    with Ledger(path) as ledger:
        assert [r.run_id for r in ledger.releases()] == ["run-a"]
        assert ledger.spent(DELTA) <= budget


def test_threads_racing_to_record_never_pass_the_budget(tmp_path: Path) -> None:
    path = tmp_path / LEDGER_FILE
    Ledger(path).close()
    budget = TWO_ROUNDS + 0.01  # exactly two rounds fit
    outcomes: list[str] = []
    barrier = threading.Barrier(6)

    def attempt(i: int) -> None:
        with Ledger(path) as ledger:
            barrier.wait()
            try:
                _record(ledger, f"run-{i}", 1, max_epsilon=budget)
                outcomes.append("recorded")
            except BudgetError:
                outcomes.append("refused")

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["recorded"] * 2 + ["refused"] * 4
    with Ledger(path) as ledger:
        assert ledger.spent(DELTA) <= budget


def test_many_openers_of_a_new_ledger_create_it_once(tmp_path: Path) -> None:
    """A second opener that finds the file the first just created, before its schema was committed, waits for it
    instead of failing on an empty file."""
    path = tmp_path / LEDGER_FILE
    barrier, errors = threading.Barrier(6), []

    def open_it() -> None:
        barrier.wait()
        try:
            Ledger(path).close()
        except LedgerError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert _rounds(path) == []


def test_a_replayed_round_is_refused_before_training_and_at_record(tmp_path: Path) -> None:
    path = tmp_path / LEDGER_FILE
    with Ledger(path) as ledger:
        ledger.check_not_released("7", 3)
        _record(ledger, "7", 3)
        with pytest.raises(ReplayError, match="run 7 round 3 .train. was already released"):
            ledger.check_not_released("7", 3)
        with pytest.raises(ReplayError):
            _record(ledger, "7", 3, sha256=_sha("another update"))
        ledger.check_not_released("7", 3, kind="other")  # another kind of release of that round is not a replay
        ledger.check_not_released("8", 3)
    assert _rounds(path) == [3]  # the replay wrote nothing


def test_record_stores_unit_group_size_and_hash(tmp_path: Path) -> None:
    with Ledger(tmp_path / LEDGER_FILE) as ledger:
        written = _record(ledger, "1", 1, unit="member", group_size=8, sha256="cd" * 32)
        with pytest.raises(ValueError, match="group_size"):
            _record(ledger, "1", 2, unit="message", group_size=8)
        with pytest.raises(ValueError, match="sha256"):
            _record(ledger, "1", 2, sha256="not a hash")
        (stored,) = ledger.releases()
    assert stored == written
    assert (stored.privacy_unit, stored.group_size, stored.sha256, stored.kind) == ("member", 8, "cd" * 32, "train")


def test_the_workspace_lock_excludes_threads_of_one_process(node: WorkspaceNode) -> None:
    inside, most = [0], [0]
    guard = threading.Lock()

    def hold() -> None:
        with node.lock():
            with guard:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            time.sleep(0.02)
            with guard:
                inside[0] -= 1

    threads = [threading.Thread(target=hold) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most[0] == 1


def test_a_held_workspace_lock_times_out_with_lock_error(node: WorkspaceNode) -> None:
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with node.lock():
            held.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(10)
    try:
        with pytest.raises(LockError, match="held by another process or thread") as caught, node.lock(timeout=0.2):
            pass
        assert caught.value.code == "workspace-busy"
    finally:
        release.set()
        thread.join()
    with node.lock(timeout=1):  # free again once the holder is done
        pass


# --- 3. the privacy unit --------------------------------------------------------------------------------------

V1_SCHEMA = """
CREATE TABLE releases (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, round INTEGER NOT NULL, created_at TEXT NOT NULL,
    accountant TEXT NOT NULL, noise_multiplier REAL NOT NULL, sample_rate REAL NOT NULL, steps INTEGER NOT NULL,
    delta REAL NOT NULL, epsilon_total REAL NOT NULL, accountant_state TEXT NOT NULL
);
"""


def _v1_ledger(path: Path, rounds: int) -> list[float]:
    """A ledger as version 1 wrote it: ``rounds`` message-level releases of run "old"; their lifetime ε."""
    totals = []
    with closing(sqlite3.connect(path)) as db:
        db.executescript(V1_SCHEMA)
        history: list[tuple[float, float, int]] = []
        for r in range(1, rounds + 1):
            history.append(STEP)
            totals.append(epsilon(history, DELTA))
            db.execute("INSERT INTO releases (run_id, round, created_at, accountant, noise_multiplier, sample_rate, "
                       "steps, delta, epsilon_total, accountant_state) VALUES (?, ?, ?, 'rdp', ?, ?, ?, ?, ?, ?)",
                       ("old", r, "2024-01-01T00:00:00+00:00", *STEP, DELTA, totals[-1],
                        json.dumps({"history": history})))
        db.execute("PRAGMA user_version=1")
        db.commit()
    return totals


def test_a_version_1_ledger_is_migrated_as_message_level(tmp_path: Path) -> None:
    path = tmp_path / LEDGER_FILE
    totals = _v1_ledger(path, rounds=2)
    with Ledger(path) as ledger:
        releases = ledger.releases()
        migrated = [(r.privacy_unit, r.group_size, r.sha256, r.kind) for r in releases]
        assert migrated == [("message", 1, None, "train")] * 2
        assert [r.epsilon_total for r in releases] == totals
        _record(ledger, "new", 1)
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    assert _rounds(path) == [1, 2, 1]


def test_a_migration_that_fails_changes_nothing(tmp_path: Path) -> None:
    """All of the migration is one transaction: its last step fails, so the columns it added are gone again."""
    path = tmp_path / LEDGER_FILE
    _v1_ledger(path, rounds=1)
    with closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE releases_by_round (x)")  # the migration's index name is taken
        db.commit()
    with pytest.raises(LedgerError, match="not a readable ledger"):
        Ledger(path)
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 1
        columns = [row[1] for row in db.execute("PRAGMA table_info(releases)")]
    assert "privacy_unit" not in columns and "sha256" not in columns


def test_message_level_releases_do_not_allow_a_switch_to_member_level(tmp_path: Path) -> None:
    """The attack: account some rounds per message, then switch the policy to member and keep spending as if the
    message-level ε bounded member-level privacy."""
    path = tmp_path / LEDGER_FILE
    _v1_ledger(path, rounds=1)  # a migrated release counts as message-level
    with Ledger(path) as ledger:
        ledger.check_unit("message")
        with pytest.raises(UnitChangeError, match="1 earlier release.*per message") as caught:
            ledger.check_unit("member")
        assert caught.value.code == "privacy-unit-changed"
        with pytest.raises(UnitChangeError):
            _record(ledger, "new", 1, unit="member", group_size=8)
        assert len(ledger.releases()) == 1  # nothing written


def test_member_level_then_message_level_is_allowed(tmp_path: Path) -> None:
    with Ledger(tmp_path / LEDGER_FILE) as ledger:
        ledger.check_unit("member")
        _record(ledger, "1", 1, unit="member", group_size=8)
        ledger.check_unit("member")
        ledger.check_unit("message")  # a member-level guarantee implies the message-level one at the same ε
        _record(ledger, "1", 2, unit="message")
        with pytest.raises(UnitChangeError):  # but from now on, not back to member
            ledger.check_unit("member")


# --- 4. a rolled-back or replaced ledger ----------------------------------------------------------------------


def _two_releases(node: WorkspaceNode) -> None:
    node.audit().append("consent", run_id="1", round="1", consent=True)
    _release(node, "1", 1)
    _release(node, "1", 2)


def test_a_sound_workspace_opens(node: WorkspaceNode) -> None:
    with node.open_ledger() as ledger:  # fresh: no ledger, no log, no head
        assert ledger.releases() == []
    _two_releases(node)
    with node.open_ledger() as ledger:
        assert [r.round for r in ledger.releases()] == [1, 2]


def test_a_ledger_replaced_by_an_empty_one_is_refused(node: WorkspaceNode) -> None:
    _two_releases(node)
    for file in node.folder.glob(f"{LEDGER_FILE}*"):
        file.unlink()
    Ledger(node.folder / LEDGER_FILE).close()
    with pytest.raises(LedgerError, match="holds 0 release.*records 2") as caught:
        node.open_ledger()
    assert caught.value.code == "ledger-unsound"


def test_a_missing_ledger_is_refused_and_not_recreated(node: WorkspaceNode) -> None:
    _two_releases(node)
    for file in node.folder.glob(f"{LEDGER_FILE}*"):
        file.unlink()
    with pytest.raises(LedgerError, match="ledger missing.*2 release"):
        node.open_ledger()
    assert not (node.folder / LEDGER_FILE).exists()


def test_another_workspaces_ledger_is_refused(tmp_path: Path, node: WorkspaceNode) -> None:
    """Same runs, same rounds, same number of rows, even the same ε: but not the updates this workspace sent."""
    other = WorkspaceNode(tmp_path / "other")
    other.folder.mkdir()
    _two_releases(node)
    _two_releases(other)
    for file in node.folder.glob(f"{LEDGER_FILE}*"):
        file.unlink()
    shutil.copy(other.folder / LEDGER_FILE, node.folder / LEDGER_FILE)
    with pytest.raises(LedgerError, match=r"no ledger row matches.*audit.jsonl:2, run 1 round 1"):
        node.open_ledger()


def test_deleted_rows_are_refused(node: WorkspaceNode) -> None:
    _two_releases(node)
    _release(node, "1", 3)
    with closing(sqlite3.connect(node.folder / LEDGER_FILE)) as db:
        db.execute("DELETE FROM releases WHERE round = 3")  # the last row: the rows before it still chain
        db.commit()
    with pytest.raises(LedgerError, match="holds 2 release.*records 3"):
        node.open_ledger()


def test_ledger_and_log_deleted_with_the_head_kept_are_refused(node: WorkspaceNode) -> None:
    """The attack: delete ledger.sqlite and audit.jsonl; the node used to start a new chain at seq 0 and overwrite
    the head, after which `verify` said intact."""
    _two_releases(node)
    head = node.folder / f"{AUDIT_FILE}.head"
    kept = head.read_bytes()
    for file in [*node.folder.glob(f"{LEDGER_FILE}*"), node.folder / AUDIT_FILE]:
        file.unlink()
    with pytest.raises(LedgerError, match="audit log is missing but its head file audit.jsonl.head remains"):
        node.open_ledger()
    with pytest.raises(AuditError, match="head file names entry 2 but the log is missing"):
        node.audit().append("refusal", reason="ledger-unsound")
    assert head.read_bytes() == kept and not (node.folder / AUDIT_FILE).exists()
    assert not verify(node.folder / AUDIT_FILE).ok


def test_the_last_release_cut_from_both_files_with_the_head_deleted_is_refused(node: WorkspaceNode) -> None:
    _two_releases(node)
    log = node.folder / AUDIT_FILE
    log.write_bytes(b"".join(log.read_bytes().splitlines(keepends=True)[:-1]))
    (node.folder / f"{AUDIT_FILE}.head").unlink()
    with closing(sqlite3.connect(node.folder / LEDGER_FILE)) as db:
        db.execute("DELETE FROM releases WHERE round = 2")
        db.commit()
    with pytest.raises(LedgerError, match="does not verify.*missing head file"):
        node.open_ledger()
    with pytest.raises(AuditError, match="holds 2 entries but its head file"):  # and no new head is made for it
        node.audit().append("refusal", reason="ledger-unsound")


def test_a_log_replaced_by_a_shorter_or_another_chain_cannot_be_extended(tmp_path: Path) -> None:
    path = tmp_path / AUDIT_FILE
    log = AuditLog(path)
    for i in range(3):
        log.append("consent", round=str(i))
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:2]))
    with pytest.raises(AuditError, match="names entry 2 but the log ends at entry 1"):
        log.append("consent", round="x")
    other = tmp_path / "other.jsonl"
    for i in range(3):
        AuditLog(other).append("consent", round=f"other {i}")
    path.write_bytes(other.read_bytes())  # same length, another chain
    with pytest.raises(AuditError, match="not the one the head file names"):
        log.append("consent", round="x")


def test_extra_ledger_rows_and_a_head_behind_are_the_safe_side(node: WorkspaceNode) -> None:
    """A release recorded whose audit append failed, and a crash between an append and its head update."""
    _two_releases(node)
    with node.open_ledger() as ledger:
        _record(ledger, "1", 3)  # recorded, never audited (the append failed): it only costs budget
    head = node.folder / f"{AUDIT_FILE}.head"
    stale = head.read_bytes()
    node.audit().append("consent", run_id="1", round="4", consent=True)
    head.write_bytes(stale)
    assert verify(node.folder / AUDIT_FILE).head_behind
    with node.open_ledger() as ledger:
        assert [r.round for r in ledger.releases()] == [1, 2, 3]
    _release(node, "1", 4)  # and the node goes on: the append moves the head forward
    assert verify(node.folder / AUDIT_FILE).ok


def test_audit_releases_out_of_the_ledgers_order_are_refused(node: WorkspaceNode) -> None:
    _two_releases(node)
    with closing(sqlite3.connect(node.folder / LEDGER_FILE)) as db:  # swap which update each row says it sent
        first, second = db.execute("SELECT round, sha256 FROM releases ORDER BY id").fetchall()
        update = "UPDATE releases SET round = ?, sha256 = ? WHERE id = ?"
        db.execute(update, (*second, 1))
        db.execute(update, (*first, 2))
        db.commit()
    with pytest.raises(LedgerError, match=r"no ledger row matches.*audit.jsonl:2, run 1 round 1"):
        node.open_ledger()


def test_a_version_1_ledger_matches_its_audit_log_without_hashes(node: WorkspaceNode) -> None:
    totals = _v1_ledger(node.folder / LEDGER_FILE, rounds=2)
    for r, total in enumerate(totals, start=1):
        node.audit().append("release", run_id="old", round=r, sha256=_sha(f"old {r}"), epsilon_total=total)
    with node.open_ledger() as ledger:
        assert len(ledger.releases()) == 2
    _release(node, "new", 1)
    with node.open_ledger() as ledger:
        assert len(ledger.releases()) == 3


def test_an_edit_before_the_cached_prefix_is_still_caught(node: WorkspaceNode) -> None:
    """The verification is cached per process, but only for bytes that still hash the same."""
    _two_releases(node)
    node.open_ledger().close()  # caches the verified log
    _release(node, "1", 3)
    log = node.folder / AUDIT_FILE
    checked = verify_log(log)
    assert checked.verification.ok and checked.checkpoint is not None
    text = log.read_text()
    log.write_text(text.replace('"round": 1,', '"round": 9,', 1))  # an early release now claims another round
    with pytest.raises(LedgerError, match="entry 1 was edited"):
        node.open_ledger()


def test_the_cached_verification_agrees_with_a_full_one(node: WorkspaceNode) -> None:
    _two_releases(node)
    log = node.folder / AUDIT_FILE
    first = verify_log(log, frozenset({"release"}))
    node.audit().append("consent", run_id="1", round="3", consent=True)
    _release(node, "1", 3)
    incremental = verify_log(log, frozenset({"release"}), first.checkpoint)
    full = verify_log(log, frozenset({"release"}))
    assert incremental.verification == full.verification and incremental.verification.ok
    assert incremental.collected == full.collected and len(full.collected) == 3
    assert incremental.checkpoint == full.checkpoint
    assert [e["round"] for _, e in full.collected] == [1, 2, 3]
    assert [e["seq"] for e in read_entries(log)] == list(range(5))


def test_ledger_show_prints_the_unit_and_whether_the_ledger_agrees_with_the_log(node: WorkspaceNode) -> None:
    from typer.testing import CliRunner

    from experiments.cli.app import app

    _release(node, "0", 1, unit="member")
    _two_releases(node)
    shown = CliRunner().invoke(app, ["ledger", "show", "-w", str(node.folder)], terminal_width=200)
    assert shown.exit_code == 0, shown.output
    assert "message" in shown.output and "member (≤4 msgs)" in shown.output
    assert "agrees with audit.jsonl: its 3 release(s) match ledger rows in order" in shown.output
    with closing(sqlite3.connect(node.folder / LEDGER_FILE)) as db:
        db.execute("DELETE FROM releases WHERE run_id = '1' AND round = 2")
        db.commit()
    cut = CliRunner().invoke(app, ["ledger", "show", "-w", str(node.folder)], terminal_width=200)
    assert cut.exit_code == 1 and "the node will refuse to train" in cut.output and "holds 2 release" in cut.output
