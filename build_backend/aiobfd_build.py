"""PEP 517 build backend: setuptools, plus mypy when the build compiles the
sans-IO core with mypyc (``AIOBFD_MYPYC=1``; the module list is in setup.py).

A plain build asks for nothing more than setuptools; only a compiled one needs
mypy (which brings mypyc) and a C compiler with the Python headers.
"""

from __future__ import annotations

import os
import sys
from typing import Any

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


def prepare_metadata_for_build_wheel(
    metadata_directory: str, config_settings: dict[str, object] | None = None
) -> Any:
    # The metadata are the same either way: no need to run mypyc for them too.
    saved = os.environ.get("AIOBFD_MYPYC")
    os.environ["AIOBFD_MYPYC"] = "0"
    try:
        return _setuptools.prepare_metadata_for_build_wheel(metadata_directory, config_settings)
    finally:
        if saved is None:
            del os.environ["AIOBFD_MYPYC"]
        else:
            os.environ["AIOBFD_MYPYC"] = saved


def _plain_editable() -> None:
    # Compiled modules built in place would shadow the sources an editable
    # install is for (and go stale as they are edited).  pip runs each hook in
    # a process of its own: every editable hook says it.
    if compiled():
        print("aiobfd: AIOBFD_MYPYC ignored for an editable install", file=sys.stderr)
        os.environ["AIOBFD_MYPYC"] = "0"


def get_requires_for_build_editable(config_settings: dict[str, object] | None = None) -> list[str]:
    _plain_editable()
    return list(_setuptools.get_requires_for_build_editable(config_settings))


def prepare_metadata_for_build_editable(
    metadata_directory: str, config_settings: dict[str, object] | None = None
) -> Any:
    _plain_editable()
    return _setuptools.prepare_metadata_for_build_editable(metadata_directory, config_settings)


def build_editable(
    wheel_directory: str,
    config_settings: dict[str, object] | None = None,
    metadata_directory: str | None = None,
) -> Any:
    _plain_editable()
    return _setuptools.build_editable(wheel_directory, config_settings, metadata_directory)
