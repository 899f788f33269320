"""Logging set-up: stdout, file (logrotate-friendly) and syslog, text or JSON.

No log destination is written on the event loop.  A pipe nobody reads, a
stalled journald, syslog's full socket or a file on a hung disk blocks the
write; on the loop that would stop every session's timers.  The root logger's
one handler (:class:`_Handoff`) formats a record where it is logged and
hands the line to a writer thread (:class:`LogWriter`) through a bounded
queue; the thread only writes it to the destinations.  It holds the
interpreter as little as can be: while it does, the loop waits (the GIL),
and a thread that formatted lines there made a Down's route change up to
5.9 ms late in tests/integration/test_kernel_routes.py (0.6-0.9 ms without).  When the queue is
full the record is dropped and counted, and the next record that fits is
preceded by one line saying how many were lost.
"""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import queue
import sys
import threading
import time

LEVELS = ["CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"]
TEXT_FORMAT = "%(asctime)s %(name)-14s %(levelname)-8s %(message)s"

#: Records waiting for the writer thread at most (a few MB of formatted
#: lines: thousands of sessions changing state at once fit); beyond, dropped.
LOG_QUEUE_MAX = 20_000
#: How long the end of the process waits for the writer to catch up, in seconds.
EXIT_FLUSH_S = 2.0


class _Handoff(logging.handlers.QueueHandler):
    """Formats a record where it is logged (QueueHandler.prepare, with the
    destinations' formatter) and queues the line for the writer thread without
    ever waiting: a full queue drops it (counted)."""

    def __init__(self, records: queue.Queue[logging.LogRecord | None]) -> None:
        super().__init__(records)
        self.dropped = 0
        """Records dropped since start because the queue was full."""
        self._unreported = 0

    def enqueue(self, record: logging.LogRecord) -> None:
        records = self.queue
        if self._unreported:
            note = logging.LogRecord(
                "aiobfd",
                logging.WARNING,
                __file__,
                0,
                "%d log record(s) dropped: the log destination did not keep up",
                (self._unreported,),
                None,
            )
            try:
                records.put_nowait(self.prepare(note))
                self._unreported = 0
            except queue.Full:
                pass
        try:
            records.put_nowait(record)
        except queue.Full:
            self.dropped += 1
            self._unreported += 1


#: The destinations' formatter behind the writer thread: the line is made already.
_AS_FORMATTED = logging.Formatter("%(message)s")


class LogWriter:
    """The thread that writes queued records to the destinations."""

    def __init__(
        self,
        handlers: list[logging.Handler],
        formatter: logging.Formatter,
        maxsize: int = LOG_QUEUE_MAX,
    ) -> None:
        """``handlers`` write lines already formatted by ``formatter``."""
        self.records: queue.Queue[logging.LogRecord | None] = queue.Queue(maxsize)
        self.handoff = _Handoff(self.records)
        self.handoff.setFormatter(formatter)
        self.handlers = handlers
        for handler in handlers:
            handler.setFormatter(_AS_FORMATTED)
        self._thread = threading.Thread(target=self._run, name="aiobfd-log", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        records = self.records
        while True:
            record = records.get()
            try:
                if record is None:
                    return
                for handler in self.handlers:
                    if record.levelno >= handler.level:
                        handler.handle(record)
            finally:
                records.task_done()

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until every queued record is written;
        True if it was."""
        end = time.monotonic() + timeout
        while self.records.unfinished_tasks:
            if time.monotonic() >= end:
                return False
            time.sleep(0.005)
        return True

    def stop(self, timeout: float = EXIT_FLUSH_S) -> None:
        """Write what is queued (within ``timeout``), end the thread, close the
        destinations.  A destination still blocked is left to the process's end."""
        end = time.monotonic() + timeout
        try:
            self.records.put(None, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(max(0.0, end - time.monotonic()))
        if not self._thread.is_alive():
            for handler in self.handlers:
                handler.close()


_writer: LogWriter | None = None


def setup_logging(
    *,
    level: str = "INFO",
    to_stdout: bool = True,
    log_file: str | None = None,
    syslog_socket: str | None = None,
    log_format: str = "text",
) -> LogWriter:
    """Configure the root logger once, replacing any earlier handlers (and
    the writer thread of an earlier call); return the writer.

    As in the original aiobfd, ``to_stdout=False`` is ignored when no other
    destination is chosen, so messages are never silently lost.
    """
    global _writer
    handlers: list[logging.Handler] = []
    if to_stdout or not (log_file or syslog_socket):
        handlers.append(logging.StreamHandler(sys.stdout))
    if log_file:
        handlers.append(logging.handlers.WatchedFileHandler(log_file))
    if syslog_socket:
        handlers.append(logging.handlers.SysLogHandler(address=syslog_socket))
    formatter = make_formatter(log_format)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    if _writer is not None:
        _writer.stop()
    else:
        atexit.register(stop_logging)  # after logging's own: runs first
    _writer = LogWriter(handlers, formatter, LOG_QUEUE_MAX)
    root.addHandler(_writer.handoff)
    root.setLevel(level)
    return _writer


def stop_logging() -> None:
    """Write what is queued and stop the writer thread (at the process's end)."""
    global _writer
    if _writer is not None:
        root = logging.getLogger()
        root.removeHandler(_writer.handoff)
        _writer.stop()
        _writer = None


def write_logs_directly() -> None:
    """In a process forked from the daemon: log straight to the destinations
    (the writer thread did not come along; the child has no loop to keep)."""
    global _writer
    if _writer is not None:
        root = logging.getLogger()
        root.removeHandler(_writer.handoff)
        for handler in _writer.handlers:
            handler.setFormatter(_writer.handoff.formatter)
            root.addHandler(handler)
        _writer = None


def dropped_log_records() -> int:
    """Log records dropped because the destinations did not keep up."""
    return _writer.handoff.dropped if _writer is not None else 0


def make_formatter(log_format: str) -> logging.Formatter:
    if log_format == "json":
        from .jsonlog import JsonFormatter

        return JsonFormatter()
    return logging.Formatter(TEXT_FORMAT)
