"""The two layers stay apart: nothing in desafio_dagster.core imports Dagster."""

import ast
from pathlib import Path

import desafio_dagster.core

CORE = Path(desafio_dagster.core.__file__).parent


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    return names | {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}


def test_the_core_imports_neither_dagster_nor_the_dagster_layer():
    modules = sorted(CORE.rglob("*.py"))  # the subpackages too
    assert len(modules) > 10 and any(path.parent != CORE for path in modules)
    offending = {str(path.relative_to(CORE)): sorted(name for name in imported_modules(path)
                                                     if name.split(".")[0].startswith("dagster")
                                                     or name.startswith("desafio_dagster.defs"))
                 for path in modules}
    assert {name: found for name, found in offending.items() if found} == {}
