"""``python -m aiobfd`` on uvloop's event loop, for bench/scale.py (``--dut ours-uvloop``).

    python bench/uvloop_main.py LOCAL REMOTE... [aiobfd options]

A bench-only wrapper: it installs uvloop's event loop policy, then runs the
ordinary command line, so ``asyncio.run`` inside it gets a uvloop loop.
"""

import sys

import uvloop

from aiobfd.cli import main

if __name__ == "__main__":
    uvloop.install()
    sys.argv[0] = "aiobfd"
    sys.exit(main())
