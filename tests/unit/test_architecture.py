"""docs/architecture.md shows the import graph the code has, and the library imports none of the apps."""

from __future__ import annotations

from pathlib import Path

from experiments.import_map import REPO, import_edges, mermaid


def test_the_documented_import_graph_is_the_codes() -> None:
    doc = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    assert f"```mermaid\n{mermaid(import_edges())}```" in doc, "run python -m experiments.import_map and update the doc"


def test_the_library_imports_nothing_from_the_apps() -> None:
    assert not {(a, b) for a, b in import_edges() if a.startswith("federated") and not b.startswith("federated")}


def test_a_lazy_import_counts(tmp_path: Path) -> None:
    (tmp_path / "federated").mkdir()
    (tmp_path / "clients").mkdir()
    (tmp_path / "federated" / "x.py").write_text("def f():\n    from clients.app import app\n", encoding="utf-8")
    assert import_edges(tmp_path) == {("federated", "clients")}
