"""A reload that adds a session whose local address is not on the host.

As at start (docs/configuration.md), the session waits for its address: the
reload succeeds, ``show sessions`` lists it waiting, nothing else changes.  The
reload of the running daemon (SIGHUP, ``aiobfdctl reload``) used to fail half
applied instead ("reload incomplete: Cannot assign requested address").
"""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path

from aiobfd.app import Application
from aiobfd.cli import from_file
from aiobfd.config import Overrides

HEAD = """[daemon]
control_socket = "none"
metrics_port = 0
[[peers]]
remote = "127.0.0.2"
local = "127.0.0.1"
"""
ABSENT = """[[peers]]
remote = "198.51.100.9"
local = "198.51.100.77"
"""


async def test_a_reload_adds_a_session_that_waits_for_its_address(tmp_path: Path) -> None:
    path = tmp_path / "aiobfd.toml"
    path.write_text(HEAD)
    reload_from = functools.partial(from_file, str(path), Overrides())
    app = Application(reload_from(), reload_from)
    await app.start()
    try:
        path.write_text(HEAD + ABSENT)
        summary = await app.reload_async()
        assert summary["added"] == ["198.51.100.9"]  # once, though the final pass tried again
        assert summary["unchanged"] == ["127.0.0.2"] and not summary["removed"]
        assert [key.remote for key in app.daemon.waiting] == ["198.51.100.9"]
        assert [key.remote for key in app.daemon.peers] == ["127.0.0.2"]
        assert app.settings.peers[-1].remote == "198.51.100.9"  # the new file is in force
        # And a reload that drops it again forgets it.
        path.write_text(HEAD)
        summary = await app.reload_async()
        assert not app.daemon.waiting and summary["unchanged"] == ["127.0.0.2"]
    finally:
        app.stop()
        await asyncio.wait_for(app.daemon.serve_forever(), 2)
        await app.close()
