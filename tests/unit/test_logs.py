"""Logging destinations: a log file survives logrotate's rename."""

from __future__ import annotations

import logging
from pathlib import Path

from aiobfd.logs import setup_logging, stop_logging


def test_log_file_is_reopened_after_rotation(tmp_path: Path) -> None:
    path = tmp_path / "aiobfd.log"
    root = logging.getLogger()
    saved = list(root.handlers), root.level
    try:
        writer = setup_logging(level="INFO", to_stdout=False, log_file=str(path))
        logging.getLogger("aiobfd").info("before rotation")
        assert writer.flush(5)
        path.rename(tmp_path / "aiobfd.log.1")  # what logrotate does (no copytruncate)
        logging.getLogger("aiobfd").info("after rotation")
        assert writer.flush(5)
        assert "before rotation" in (tmp_path / "aiobfd.log.1").read_text()
        assert "after rotation" in path.read_text()
    finally:
        stop_logging()
        for handler in list(root.handlers):
            root.removeHandler(handler)
            handler.close()
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
