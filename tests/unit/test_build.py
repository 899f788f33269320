"""The two builds of the core: plain Python, or compiled by mypyc (setup.py).

scripts/test.sh runs the suite on both and says which it expects in
AIOBFD_EXPECT_CORE, so that a compiled run cannot pass on the plain modules.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aiobfd import core_build

ROOT = Path(__file__).resolve().parents[2]


def test_the_core_under_test_is_the_one_expected() -> None:
    assert core_build() in ("python", "mypyc")
    expected = os.environ.get("AIOBFD_EXPECT_CORE")
    if expected is not None:
        assert core_build() == expected


def ask_backend(hook: str, value: str | None) -> tuple[list[str], str | None, str]:
    """Run a hook of the build backend in a process of its own, as pip does
    (setuptools sets up logging), with AIOBFD_MYPYC set to ``value``: what it
    asks for, AIOBFD_MYPYC after it, and what it printed to stderr."""
    env = {k: v for k, v in os.environ.items() if k != "AIOBFD_MYPYC"}
    if value is not None:
        env["AIOBFD_MYPYC"] = value
    probe = (
        "import json, os, aiobfd_build;"
        f"print(json.dumps([aiobfd_build.{hook}(), os.environ.get('AIOBFD_MYPYC')]))"
    )
    run = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,  # setuptools reads setup.py from here
        env={**env, "PYTHONPATH": str(ROOT / "build_backend")},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    requires, after = json.loads(run.stdout.splitlines()[-1])
    return requires, after, run.stderr


@pytest.mark.parametrize(("value", "mypy"), [(None, False), ("0", False), ("1", True)])
def test_only_a_compiled_build_asks_for_mypy(value: str | None, mypy: bool) -> None:
    requires, after, _ = ask_backend("get_requires_for_build_wheel", value)
    assert any(r.startswith("mypy") for r in requires) is mypy
    # The pass that collects setuptools' own requirements left the setting as it was.
    assert after == value


def test_an_editable_install_is_never_compiled() -> None:
    # Extension modules built in place would shadow the sources being edited.
    requires, after, stderr = ask_backend("get_requires_for_build_editable", "1")
    assert not any(r.startswith("mypy") for r in requires)
    assert after == "0"
    assert "ignored for an editable install" in stderr
