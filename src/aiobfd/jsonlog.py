"""JSON log lines: one object per line, RFC 3339 UTC timestamps in milliseconds.

Uses ``python-json-logger``; the structured fields a record carries in
``extra`` (local, remote, discriminators, states, diag...) become keys.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from pythonjsonlogger.json import JsonFormatter as _Base


class JsonFormatter(_Base):
    def __init__(self) -> None:
        super().__init__(
            "%(timestamp)s %(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger"},
        )

    def add_fields(
        self, log_record: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        super().add_fields(log_record, record, message_dict)
        stamp = datetime.fromtimestamp(record.created, UTC)
        log_record["timestamp"] = stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")
