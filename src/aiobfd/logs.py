"""Logging set-up: stdout, file (logrotate-friendly) and syslog, text or JSON."""

from __future__ import annotations

import logging
import logging.handlers
import sys

LEVELS = ["CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"]
TEXT_FORMAT = "%(asctime)s %(name)-14s %(levelname)-8s %(message)s"


def setup_logging(
    *,
    level: str = "INFO",
    to_stdout: bool = True,
    log_file: str | None = None,
    syslog_socket: str | None = None,
    log_format: str = "text",
) -> None:
    """Configure the root logger once, replacing any earlier handlers.

    As in the original aiobfd, ``to_stdout=False`` is ignored when no other
    destination is chosen, so messages are never silently lost.
    """
    handlers: list[logging.Handler] = []
    if to_stdout or not (log_file or syslog_socket):
        handlers.append(logging.StreamHandler(sys.stdout))
    if log_file:
        handlers.append(logging.handlers.WatchedFileHandler(log_file))
    if syslog_socket:
        handlers.append(logging.handlers.SysLogHandler(address=syslog_socket))
    formatter = make_formatter(log_format)
    for handler in handlers:
        handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def make_formatter(log_format: str) -> logging.Formatter:
    if log_format == "json":
        from .jsonlog import JsonFormatter

        return JsonFormatter()
    return logging.Formatter(TEXT_FORMAT)
