"""A ledger whose file goes bad while it is open fails with a LedgerError naming it, never a raw sqlite3 error."""

from pathlib import Path

import pytest

from federated.errors import LedgerError
from federated.privacy.ledger import LEDGER_FILE, Ledger


def test_a_ledger_corrupted_while_open_fails_closed_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / LEDGER_FILE
    with Ledger(path) as ledger:
        ledger.record("1", 1, 1.0, 0.1, 10, 1e-5, max_epsilon=100.0, privacy_unit="message", group_size=1,
                      sha256="ab" * 32)
        assert len(ledger.releases()) == 1
        for file in tmp_path.glob(f"{LEDGER_FILE}*"):  # the database, its write-ahead log and its index
            file.write_bytes(b"\xff" * file.stat().st_size)
        with pytest.raises(LedgerError, match=str(path)):
            ledger.releases()
        with pytest.raises(LedgerError, match="could not be read"):
            ledger.spent(1e-5)
