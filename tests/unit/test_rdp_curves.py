"""Stored RDP curves are the curves: bit for bit what Opacus computes, and a damaged file is never believed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pytest

from federated.privacy import accounting
from federated.privacy.rdp_curves import ORDERS, CurveFolder, compute_curve


@pytest.fixture
def folder(tmp_path: Path) -> CurveFolder:
    return CurveFolder(tmp_path / "curves")


def test_a_stored_curve_is_read_back_bit_for_bit(folder: CurveFolder) -> None:
    first = folder.curve(1.1, 0.01)
    assert folder.path(1.1, 0.01).is_file()
    again = CurveFolder(folder.folder).curve(1.1, 0.01)
    assert np.array_equal(first, compute_curve(1.1, 0.01)) and np.array_equal(again, first)
    assert not again.flags.writeable


def test_curves_are_named_by_their_exact_parameters(folder: CurveFolder) -> None:
    paths = {folder.path(1.1, 0.01), folder.path(1.1, np.nextafter(0.01, 1)), folder.path(np.nextafter(1.1, 2), 0.01)}
    assert len(paths) == 3
    folder.curve(1.1, 0.01)
    assert not np.array_equal(folder.curve(1.1, 0.02), folder.curve(1.1, 0.01))


DAMAGE: dict[str, Callable[[BinaryIO], None]] = {
    "garbage": lambda out: out.write(b"not a curve"),
    "truncated": lambda out: out.write(b"\x93NUMPY\x01\x00"),
    "negative": lambda out: np.save(out, -np.ones(len(ORDERS))),
    "nan": lambda out: np.save(out, np.full(len(ORDERS), np.nan)),
    "short": lambda out: np.save(out, np.ones(len(ORDERS) - 1)),
    "float32": lambda out: np.save(out, np.ones(len(ORDERS), dtype=np.float32)),
    "pickle": lambda out: np.save(out, np.array([{"a": 1}], dtype=object), allow_pickle=True),
}


@pytest.mark.parametrize("damage", DAMAGE.values(), ids=DAMAGE.keys())
def test_a_damaged_file_is_recomputed_and_rewritten(folder: CurveFolder, damage: Callable[[BinaryIO], None]) -> None:
    folder.curve(0.8, 0.05)
    path = folder.path(0.8, 0.05)
    with path.open("wb") as out:
        damage(out)
    assert np.array_equal(CurveFolder(folder.folder).curve(0.8, 0.05), compute_curve(0.8, 0.05))
    assert np.array_equal(np.load(path, allow_pickle=False), compute_curve(0.8, 0.05))


def test_epsilon_with_a_curve_folder_is_the_accountants(tmp_path: Path) -> None:
    history = [(1.1, 0.01, 100), (0.7, 0.2, 3)]
    memory_only = accounting.epsilon(history, 1e-5)
    accounting._rdp_per_step.cache_clear()
    accounting.keep_curves_in(tmp_path)
    try:
        assert accounting.epsilon(history, 1e-5) == memory_only
        assert len(list(tmp_path.glob("rdp-*.npy"))) == 2
        accounting._rdp_per_step.cache_clear()  # as a fresh process: read from the folder
        assert accounting.epsilon(history, 1e-5) == memory_only
    finally:
        accounting.keep_curves_in(None)
        accounting._rdp_per_step.cache_clear()


def test_an_unwritable_folder_only_costs_time(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert np.array_equal(CurveFolder(blocker / "curves").curve(1.0, 0.1), compute_curve(1.0, 0.1))
