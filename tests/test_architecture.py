"""The dependency rule, checked on the source: ``pipeline -> catalog, grid -> embeddings -> tiling -> hubcat``.

A package may import only packages below it (``grid`` and ``catalog`` sit side by side and never
import each other), and never another package's private names: an underscore module
(``from grid._engine import ...``) or an underscore name (``from tiling import _helper``). Every
import counts, including those inside functions. ``tests/`` and ``benchmarks/`` stand above the
packages and are not checked.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: Each package and the packages it may import.
ALLOWED = {
    "hubcat": set(),
    "tiling": {"hubcat"},
    "embeddings": {"hubcat", "tiling"},
    "grid": {"hubcat", "tiling", "embeddings"},
    "catalog": {"hubcat", "tiling", "embeddings"},
    "pipeline": {"hubcat", "tiling", "embeddings", "grid", "catalog"},
}


def _imports(tree: ast.AST):
    """Yield ``(line, module, names)`` for every absolute import in ``tree``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module, [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []


def violations(root: Path) -> list[str]:
    """Every import under ``root`` that breaks the dependency rule, as ``path:line: why``."""
    found = []
    for package, allowed in ALLOWED.items():
        for path in sorted((root / package).rglob("*.py")):
            where = path.relative_to(root)
            for line, module, names in _imports(ast.parse(path.read_text(), str(path))):
                top, *rest = module.split(".")
                if top not in ALLOWED or top == package:
                    continue
                if top not in allowed:
                    found.append(
                        f"{where}:{line}: {package} imports {module}, a package above or beside it"
                    )
                elif any(part.startswith("_") for part in rest):
                    found.append(f"{where}:{line}: {package} imports the private module {module}")
                elif private := [n for n in names if n.startswith("_")]:
                    found.append(
                        f"{where}:{line}: {package} imports private names {private} from {module}"
                    )
    return found


def test_the_packages_follow_the_dependency_rule() -> None:
    found = violations(REPO)
    assert not found, "imports that break the dependency rule:\n" + "\n".join(found)


def _write(root: Path, relative: str, source: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source)


@pytest.mark.parametrize(
    ("relative", "source", "why"),
    [
        ("tiling/_store.py", "from grid import run_units\n", "package above or beside it"),
        ("embeddings/_model.py", "def f():\n    import catalog\n", "package above or beside it"),
        ("hubcat/storage/_s3.py", "from tiling import TileStore\n", "package above or beside it"),
        (
            "grid/_engine.py",
            "from catalog.provenance import merkle_root\n",
            "package above or beside it",
        ),
        (
            "catalog/_build.py",
            "from grid._ledger import CreditLedger\n",
            "package above or beside it",
        ),
        ("pipeline/run.py", "from grid._engine import Engine\n", "private module grid._engine"),
        ("pipeline/run.py", "import tiling._store\n", "private module tiling._store"),
        ("catalog/_embed.py", "from tiling import _pixels\n", "private names ['_pixels']"),
    ],
)
def test_the_rule_refuses_upward_and_private_imports(
    tmp_path: Path, relative: str, source: str, why: str
) -> None:
    _write(tmp_path, "tiling/__init__.py", "from hubcat.errors import HubcatError\n")
    _write(
        tmp_path, "pipeline/cli.py", "from grid import run_units\nfrom catalog import Catalogue\n"
    )
    assert violations(tmp_path) == []
    _write(tmp_path, relative, source)
    found = violations(tmp_path)
    assert len(found) == 1 and why in found[0], found


def test_the_where_table_of_the_architecture_page_names_real_code() -> None:
    """Every module and function in docs/architecture.md's "Where does X happen" table exists."""
    text = (REPO / "docs" / "architecture.md").read_text()
    table = text.split("## Where does X happen", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "`" in line]
    assert len(rows) >= 10
    missing = []
    for row in rows:
        _, what, modules, names, _ = (cell.strip() for cell in row.split("|"))
        files = [REPO / m for m in re.findall(r"`([\w/]+\.py)`", modules)]
        defined: set[str] = set()
        for path in files:
            if not path.is_file():
                missing.append(f"{what}: no file {path.relative_to(REPO)}")
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                    defined.add(node.name)
        for name in re.findall(r"`([A-Za-z_][\w.]*)`", names):
            parts = [
                p for p in name.split(".") if p not in ("tiling", "embeddings", "grid", "catalog")
            ]
            if (
                parts
                and parts[-1] not in defined
                and not name.startswith(("embeddings.", "tiling."))
            ):
                missing.append(f"{what}: {name} is not defined in {modules}")
    assert not missing, "\n".join(missing)


def test_no_module_is_over_600_lines() -> None:
    """One job per module: a module that grows past 600 lines is split by job."""
    long = [
        f"{path.relative_to(REPO)}: {n} lines"
        for package in ALLOWED
        for path in sorted((REPO / package).rglob("*.py"))
        if (n := len(path.read_text().splitlines())) > 600
    ]
    assert not long, "modules over 600 lines:\n" + "\n".join(long)
