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


@pytest.mark.parametrize(("value", "mypy"), [(None, False), ("0", False), ("1", True)])
def test_only_a_compiled_build_asks_for_mypy(value: str | None, mypy: bool) -> None:
    # In a process of its own, as pip runs a backend (setuptools sets up logging).
    env = {k: v for k, v in os.environ.items() if k != "AIOBFD_MYPYC"}
    if value is not None:
        env["AIOBFD_MYPYC"] = value
    probe = (
        "import json, os, aiobfd_build;"
        "print(json.dumps([aiobfd_build.get_requires_for_build_wheel(),"
        " os.environ.get('AIOBFD_MYPYC')]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,  # setuptools reads setup.py from here
        env={**env, "PYTHONPATH": str(ROOT / "build_backend")},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    requires, after = json.loads(out.splitlines()[-1])
    assert any(r.startswith("mypy") for r in requires) is mypy
    # The pass that collects setuptools' own requirements left the setting as it was.
    assert after == value
