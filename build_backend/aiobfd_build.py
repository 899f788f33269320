"""PEP 517 build backend: setuptools, plus mypy when the build compiles the
sans-IO core with mypyc (``AIOBFD_MYPYC=1``; the module list is in setup.py).

A plain build asks for nothing more than setuptools; only a compiled one needs
mypy (which brings mypyc) and a C compiler with the Python headers.
"""

from __future__ import annotations

import os

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F403 - every other hook as setuptools has it

MYPY = "mypy>=1.10"


def compiled() -> bool:
    """Whether this build compiles the core (AIOBFD_MYPYC=1)."""
    return os.environ.get("AIOBFD_MYPYC", "") == "1"


def get_requires_for_build_wheel(config_settings: dict[str, object] | None = None) -> list[str]:
    if not compiled():
        return list(_setuptools.get_requires_for_build_wheel(config_settings))
    # setuptools runs setup.py to collect its own requirements, before mypy is
    # installed: that pass must not compile.
    os.environ["AIOBFD_MYPYC"] = "0"
    try:
        base = list(_setuptools.get_requires_for_build_wheel(config_settings))
    finally:
        os.environ["AIOBFD_MYPYC"] = "1"
    return [*base, MYPY]
