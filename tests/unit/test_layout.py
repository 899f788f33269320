"""The import rules of docs/architecture.md, checked on the source tree."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import aiobfd

PACKAGE = Path(aiobfd.__file__).resolve().parent
#: Modules that wait, read the clock or touch the host: never in the core.
FORBIDDEN_IN_CORE = {"asyncio", "socket", "select", "os", "time", "subprocess", "io", "threading"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_core_imports_nothing_that_waits() -> None:
    core = sorted((PACKAGE / "protocol").glob("*.py"))
    assert core, "the protocol package is where the core lives"
    for path in core:
        assert not _imports(path) & FORBIDDEN_IN_CORE, path.name


def test_the_core_imports_nothing_of_the_rest_of_aiobfd() -> None:
    for path in (PACKAGE / "protocol").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert node.level <= 1, f"{path.name} imports from outside the core"
                assert not (node.module or "").startswith("aiobfd"), path.name


def test_importing_the_core_loads_no_event_loop_or_socket() -> None:
    code = (
        "import sys, aiobfd.protocol.session, aiobfd.protocol.registry, aiobfd.protocol.schedule;"
        "print(sorted({'asyncio', 'socket', 'select'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
