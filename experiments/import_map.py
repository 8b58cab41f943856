"""Who imports whom among Optin's packages, read from the code, as a Mermaid diagram for docs/architecture.md.

Every ``import`` and ``from ... import`` in the project's Python files is read with ``ast`` (imports inside
functions included: a command that imports lazily still depends on what it imports). Modules are grouped by
package (``federated.privacy``, ``clients``, ``experiments.bench`` ...); an edge A --> B means some module of A
imports some module of B. ``python -m experiments.import_map`` prints the diagram;
``tests/unit/test_architecture.py`` checks that docs/architecture.md shows the current one.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGES = ("federated", "clients", "server", "experiments")
REPO = Path(__file__).resolve().parents[1]


def group(module: str, repo: Path = REPO) -> str | None:
    """The group a dotted module name belongs to: a package's second level where it has one (a folder), else the
    package; ``None`` outside Optin."""
    parts = module.split(".")
    if parts[0] not in PACKAGES:
        return None
    if len(parts) > 1 and (repo / parts[0] / parts[1]).is_dir():
        return f"{parts[0]}.{parts[1]}"
    return parts[0]


def import_edges(repo: Path = REPO) -> set[tuple[str, str]]:
    """(importer group, imported group) for every import between two different groups."""
    edges = set()
    for package in PACKAGES:
        for path in sorted((repo / package).rglob("*.py")):
            module = ".".join(path.relative_to(repo).with_suffix("").parts)
            source = group(module, repo)
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
                names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else (
                    [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else [])
                for name in names:
                    target = group(name, repo)
                    if source and target and target != source:
                        edges.add((source, target))
    return edges


def mermaid(edges: set[tuple[str, str]]) -> str:
    """A Mermaid ``graph LR`` with one line per edge, sorted."""
    lines = ["graph LR"] + [f"    {a.replace('.', '_')}[{a}] --> {b.replace('.', '_')}[{b}]" for a, b in sorted(edges)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(mermaid(import_edges()), end="")
