"""Several processes writing one workspace at once: the audit log stays one sound chain, and the ledger never
lets the lifetime ε pass the budget or a round be released twice, however the writers interleave.

The writers are real processes (``multiprocessing``, spawned), started together behind a barrier."""

from __future__ import annotations

import multiprocessing
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from federated.audit import AUDIT_FILE, AuditError, AuditLog, read_entries, verify

APPENDS = 150
SPAWN = multiprocessing.get_context("spawn")  # a fresh interpreter per writer: no state shared by fork


def _append_many_times(path: str, writer: int, barrier: Any, fail_every: int) -> int:
    """Append ``APPENDS`` entries; with ``fail_every`` > 0, every such append fails after its line was written
    (the head cannot be replaced), so the append must cut its own line back off. Returns the appends that failed."""
    import federated.audit as audit

    if fail_every:
        real, calls = audit._write_head, Counter()

        def flaky(*args: Any) -> None:
            calls["n"] += 1
            if calls["n"] % fail_every == 0:
                raise OSError(28, "No space left on device")
            real(*args)

        audit._write_head = flaky
    log, failed = audit.AuditLog(Path(path)), 0
    barrier.wait()
    for i in range(APPENDS):
        try:
            log.append("consent", writer=writer, i=i, pid=os.getpid())
        except audit.AuditError:
            failed += 1
    return failed


def _run(target: Any, args_per_process: list[tuple]) -> list[Any]:
    with SPAWN.Manager() as manager:
        barrier = manager.Barrier(len(args_per_process))
        with SPAWN.Pool(len(args_per_process)) as pool:
            pending = [pool.apply_async(target, (*args, barrier)) for args in args_per_process]
            return [p.get(timeout=600) for p in pending]


def _appender(path: str, writer: int, fail_every: int, barrier: Any) -> int:
    return _append_many_times(path, writer, barrier, fail_every)


def test_two_processes_appending_at_once_keep_one_sound_chain(tmp_path: Path) -> None:
    """The attack: 2 x 150 appends at once used to leave a duplicate seq, a garbled line and a head past the end."""
    path = tmp_path / AUDIT_FILE
    AuditLog(path).append("run-start")
    failed = _run(_appender, [(str(path), 0, 0), (str(path), 1, 0)])
    assert failed == [0, 0]
    result = verify(path)
    assert result.ok, result.problems
    entries = list(read_entries(path))
    assert [e["seq"] for e in entries] == list(range(1 + 2 * APPENDS))
    for writer in (0, 1):
        assert [e["i"] for e in entries if e.get("writer") == writer] == list(range(APPENDS))
    assert not list(tmp_path.glob("*.tmp"))  # every head temporary file was renamed or removed


def test_a_failed_append_cuts_off_only_its_own_line(tmp_path: Path) -> None:
    """One writer's appends fail after writing their line (every third); the other's entries all survive."""
    path = tmp_path / AUDIT_FILE
    AuditLog(path).append("run-start")
    failed = _run(_appender, [(str(path), 0, 0), (str(path), 1, 3)])
    assert failed == [0, APPENDS // 3]
    result = verify(path)
    assert result.ok, result.problems
    entries = list(read_entries(path))
    assert [e["seq"] for e in entries] == list(range(len(entries)))
    assert [e["i"] for e in entries if e.get("writer") == 0] == list(range(APPENDS))
    assert len([e for e in entries if e.get("writer") == 1]) == APPENDS - APPENDS // 3


# --- the ledger ---------------------------------------------------------------------------------------------

STEP = (1.0, 0.1, 10)
DELTA = 1e-5


def _recorder(folder: str, writer: int, budget: float, barrier: Any) -> list[tuple[int, str]]:
    """Try rounds 1..8 of one shared run, each the way the node does (lock, checked ledger, replay and budget
    checks, record, audit entry); returns what happened to each round."""
    import hashlib

    from clients.workspace_node import WorkspaceNode
    from federated.errors import BudgetError, ReplayError

    node, outcomes = WorkspaceNode(Path(folder)), []
    barrier.wait()
    for server_round in range(1, 9):
        digest = hashlib.sha256(f"{writer}/{server_round}".encode()).hexdigest()
        try:
            with node.lock(), node.open_ledger() as ledger:
                ledger.check_not_released("run", server_round)
                release = ledger.record("run", server_round, *STEP, DELTA, max_epsilon=budget,
                                        privacy_unit="message", group_size=1, sha256=digest)
                node.audit().append("release", run_id="run", round=server_round, sha256=digest,
                                    epsilon_total=release.epsilon_total)
            outcomes.append((server_round, "released"))
        except ReplayError:
            outcomes.append((server_round, "replay"))
        except BudgetError:
            outcomes.append((server_round, "budget"))
    return outcomes


def _bare_recorder(folder: str, writer: int, budget: float, barrier: Any) -> list[str]:
    """No workspace lock at all: only ``Ledger.record``'s own re-check stands between the writers and the budget."""
    import hashlib

    from federated.errors import BudgetError
    from federated.privacy.ledger import LEDGER_FILE, Ledger

    outcomes = []
    with Ledger(Path(folder) / LEDGER_FILE) as ledger:
        barrier.wait()
        for i in range(6):
            digest = hashlib.sha256(f"{writer}/{i}".encode()).hexdigest()
            try:
                ledger.record(f"run-{writer}", i, *STEP, DELTA, max_epsilon=budget, privacy_unit="message",
                              group_size=1, sha256=digest)
                outcomes.append("released")
            except BudgetError:
                outcomes.append("budget")
    return outcomes


@pytest.mark.slow
def test_processes_sharing_a_workspace_release_each_round_once_within_budget(tmp_path: Path) -> None:
    from clients.workspace_node import WorkspaceNode
    from federated.privacy.accounting import epsilon

    budget = epsilon([STEP] * 5, DELTA) + 1e-6  # five releases fit, a sixth does not
    folder = tmp_path / "acme"
    folder.mkdir()
    results = _run(_recorder, [(str(folder), w, budget) for w in range(3)])
    released = sorted(r for outcomes in results for r, what in outcomes if what == "released")
    assert released == [1, 2, 3, 4, 5]  # each round once, and no more than the budget allows
    with WorkspaceNode(folder).open_ledger() as ledger:  # the ledger agrees with the audit log
        assert [r.round for r in ledger.releases()] == [1, 2, 3, 4, 5]
        assert ledger.spent(DELTA) <= budget
    assert verify(folder / AUDIT_FILE).ok


@pytest.mark.slow
def test_the_ledger_alone_holds_the_budget_against_unlocked_writers(tmp_path: Path) -> None:
    from federated.privacy.accounting import epsilon
    from federated.privacy.ledger import LEDGER_FILE, Ledger

    budget = epsilon([STEP] * 4, DELTA) + 1e-6
    Ledger(tmp_path / LEDGER_FILE).close()
    results = _run(_bare_recorder, [(str(tmp_path), w, budget) for w in range(3)])
    assert sum(outcomes.count("released") for outcomes in results) == 4
    with Ledger(tmp_path / LEDGER_FILE) as ledger:
        assert len(ledger.releases()) == 4 and ledger.spent(DELTA) <= budget


# --- the node, end to end --------------------------------------------------------------------------------------


def _train_once(folder: str, run_id: int, barrier: Any) -> str | None:
    """One ``train`` message to the real ClientApp, as a second SuperNode (or a second federation) would send it;
    returns the refusal, or None if the model was released."""
    from tests.conftest import SMALL_CONFIG
    from tests.node_calls import send_train

    barrier.wait()
    reply = send_train(Path(folder), SMALL_CONFIG, run_id=run_id, server_round=1, **{"local-steps": 4})
    return reply.error.reason if reply.has_error() else None


@pytest.mark.slow
def test_two_train_calls_at_once_cannot_both_spend_the_last_of_the_budget(tmp_path: Path) -> None:
    """The attack: two train calls on one workspace at once both released (lifetime ε 11.29 against 9.77)."""
    from experiments.runners.in_process import make_synthetic_federation
    from federated.data import SyntheticSpec
    from federated.privacy.ledger import LEDGER_FILE, Ledger
    from federated.privacy.policy import Policy, write_policy
    from tests.conftest import SMALL_CONFIG
    from tests.node_calls import send_train

    spec = SyntheticSpec(num_workspaces=1, seed=11, min_messages=120, max_messages=120)
    (folder,) = make_synthetic_federation(tmp_path / "ws", spec, opted_out=[]).folders
    probe = tmp_path / "probe"
    shutil.copytree(folder, probe)
    write_policy(probe, Policy(consent=True, max_epsilon=1000.0))
    assert not send_train(probe, SMALL_CONFIG, run_id=9, server_round=1, **{"local-steps": 4}).has_error()
    with Ledger(probe / LEDGER_FILE) as ledger:
        one_round = ledger.releases()[0].epsilon_total
    write_policy(folder, Policy(consent=True, max_epsilon=one_round * 1.05))  # one round fits, two do not

    refusals = _run(_train_once, [(str(folder), 1), (str(folder), 2)])

    assert sorted(refusals, key=str) == [None, "refused: budget-exhausted"]
    with Ledger(folder / LEDGER_FILE) as ledger:
        (release,) = ledger.releases()
        assert release.epsilon_total <= one_round * 1.05
    assert verify(folder / AUDIT_FILE).ok
    assert [e["kind"] for e in read_entries(folder / AUDIT_FILE)].count("release") == 1


def test_audit_error_is_raised_not_a_lock_error_when_the_log_folder_is_gone(tmp_path: Path) -> None:
    """An append that cannot even take the log's lock reports an ``AuditError`` (the node's refusal code)."""
    path = tmp_path / "gone" / AUDIT_FILE
    (tmp_path / "gone").write_text("a file where the folder should be")
    with pytest.raises(AuditError):
        AuditLog(path).append("consent")
