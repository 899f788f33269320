"""setuptools hook: ``AIOBFD_MYPYC=1 pip install .`` compiles the sans-IO core.

The modules of CORE (the package aiobfd.protocol) are pure, typed Python
(mypy --strict); mypyc turns them
into C extension modules, as black and mypy ship themselves.  They are what
every packet sent and received runs through: a fifth less of the
interpreter's time at a thousand sessions (docs/performance.md).  The event
loop side (daemon, sockets, control, metrics) stays interpreted.  A build
without the variable is plain Python; scripts/test.sh runs the suite on both.
"""

from __future__ import annotations

import os

from setuptools import setup

#: The sans-IO core, compiled as a folder: whatever module it gains is compiled too.
CORE = "src/aiobfd/protocol"


def ext_modules() -> list[object]:
    if os.environ.get("AIOBFD_MYPYC", "") != "1":
        return []
    from mypyc.build import mypycify

    return list(mypycify([CORE], opt_level="3"))


setup(ext_modules=ext_modules())
