"""Prometheus metrics, read from the daemon at scrape time.

Nothing is updated on the packet path.  A scrape walks the sessions and reads
the plain counters they keep anyway (:class:`~aiobfd.protocol.session.SessionCounters`),
the drop counts of the session table and the timer-lateness histograms of
:class:`~aiobfd.protocol.stats.TimingStats`.  The one thing sessions do not count, state
transitions by from/to state, is counted here from ``StateChanged`` events.

:class:`BfdCollector` is a ``prometheus_client`` custom collector: register it
in any registry and ``generate_latest`` (text or OpenMetrics) exports it.  The
daemon's own endpoint (:class:`MetricsServer`) renders the same readings (one
table of getters serves both) straight to the Prometheus text format, in the
event loop, a slice at a time:

* ``prometheus_client``'s generic encoder costs about 15-20 us a sample on a
  small VM, and 1,000 sessions make about 18,000 samples: 300 ms or more,
  against 20-45 ms rendered directly (``bench/metrics_scrape.py``).  Tests hold
  both renderings to the same samples.
* ``prometheus_client``'s HTTP server scrapes in a thread.  In CPython a thread
  that computes for tens of milliseconds makes the event loop's thread wait up
  to the GIL switch interval (5 ms) after every system call (each ``sendto``,
  ``recvmsg`` and ``epoll_wait``); with 1,000 sessions and one scrape a
  second, transmit timers ran up to 250 ms late (``--threaded`` in the bench).
  Here a scrape yields to the loop every 250 samples instead, so no timer waits
  for more than one slice (about a millisecond; 10 ms at worst measured), and
  no data is shared between threads.
* A scrape keeps no object per session alive (only strings), so it does not
  feed the cyclic garbage collector, whose full collections would pause the
  loop for tens of milliseconds in a process with thousands of sessions.

Names follow the Prometheus conventions (``aiobfd_`` prefix, base units,
``_total`` counters); every per-session series carries ``local``, ``remote``
and ``interface`` (the interface of an IPv6 link-local pair, else empty).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from . import __version__, core_build
from .engine import Daemon, Peer
from .protocol.events import Event, StateChanged
from .protocol.packet import State
from .protocol.registry import PeerKey
from .protocol.stats import LatencyHistogram

log = logging.getLogger("aiobfd.metrics")

#: Default TCP port of the metrics endpoint: "1" + 3784, the BFD control port.
#: Outside 9100-9999 (Prometheus' exporter range, fully allocated since 2023),
#: away from the 10000+ block newer exporters take, and below the Linux
#: ephemeral range (32768-60999) and BFD's source ports (49152-65535).
DEFAULT_METRICS_PORT = 13784
#: Loopback by default: the endpoint has no authentication and names every peer.
DEFAULT_METRICS_ADDRESS = "127.0.0.1"

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
SESSION_LABELS = ("local", "remote", "interface")
STATES = tuple(s.label for s in State)
#: The one transition a flap alert counts: its series exists from the start (at
#: 0), so ``increase()`` sees the first flap too.  Others appear when they happen.
UP_TO_DOWN = (State.UP.label, State.DOWN.label)

#: Samples rendered between two yields to the event loop.
SLICE = 250

#: time.time() - time.monotonic(), taken once: turns the monotonic instants of
#: the protocol into unix seconds, for display only.
WALL_OFFSET = time.time() - time.monotonic()


# ---------------------------------------------------------------- what is read


def _up(p: Peer) -> int:
    return 1 if p.session.state is State.UP else 0


def _last_change(p: Peer) -> float:
    return WALL_OFFSET + p.session.last_state_change_us / 1e6


def _sent(p: Peer) -> int:
    return p.session.counters.packets_out


def _received(p: Peer) -> int:
    return p.session.counters.packets_in


def _tx(p: Peer) -> float:
    return p.session.transmit_interval_us / 1e6


def _rx(p: Peer) -> float:
    s = p.session
    return max(s.required_min_rx_us, s.remote_desired_min_tx_us) / 1e6


def _detect(p: Peer) -> float:
    return p.session.detection_time_us / 1e6


def _local_diag(p: Peer) -> int:
    return int(p.session.local_diag)


def _remote_diag(p: Peer) -> int:
    return int(p.session.remote_diag)


def _polls(p: Peer) -> int:
    return p.session.counters.poll_sequences


def _expiries(p: Peer) -> int:
    return p.session.counters.detection_expiries


def _gap(p: Peer) -> float:
    return p.session.max_rx_gap_us / 1e6


def _gap_ratio(p: Peer) -> float | None:
    s = p.session
    detect_us = s.detection_time_us
    return s.max_rx_gap_us / detect_us if detect_us else None


#: Per-session families with one sample per session: name, type, help, getter
#: (a getter answering None leaves the session's sample out).
_SIMPLE: list[tuple[str, str, str, Callable[[Peer], float | None]]] = [
    ("aiobfd_session_up", "gauge", "1 if the session is Up, else 0.", _up),
    (
        "aiobfd_session_last_state_change_timestamp_seconds",
        "gauge",
        "Unix time of the last local state change (or of the session's creation).",
        _last_change,
    ),
    ("aiobfd_session_packets_sent_total", "counter", "BFD Control packets sent.", _sent),
    (
        "aiobfd_session_packets_received_total",
        "counter",
        "BFD Control packets received and accepted by the session.",
        _received,
    ),
    (
        "aiobfd_session_transmit_interval_seconds",
        "gauge",
        "Negotiated periodic transmit interval, before jitter.",
        _tx,
    ),
    (
        "aiobfd_session_receive_interval_seconds",
        "gauge",
        "Negotiated receive interval: the larger of our Required Min RX and the "
        "remote's Desired Min TX.",
        _rx,
    ),
    (
        "aiobfd_session_detection_time_seconds",
        "gauge",
        "Detection Time in force (0 until the remote has spoken).",
        _detect,
    ),
    (
        "aiobfd_session_local_diag",
        "gauge",
        "Local diagnostic code (RFC 5880 section 4.1: 1 detection time expired, "
        "3 neighbor signaled session down, 7 administratively down, ...).",
        _local_diag,
    ),
    (
        "aiobfd_session_remote_diag",
        "gauge",
        "Diagnostic code in the last packet from the remote.",
        _remote_diag,
    ),
    (
        "aiobfd_session_poll_sequences_total",
        "counter",
        "Poll Sequences started (RFC 5880 section 6.5).",
        _polls,
    ),
    (
        "aiobfd_session_detection_expiries_total",
        "counter",
        "Times the Detection Time passed without a packet from the remote.",
        _expiries,
    ),
    (
        "aiobfd_session_max_rx_gap_seconds",
        "gauge",
        "Largest gap between two received packets since the session last came Up.",
        _gap,
    ),
    (
        "aiobfd_session_max_rx_gap_ratio",
        "gauge",
        "Largest receive gap since the session last came Up divided by the Detection "
        "Time (1 would be a timeout); absent while there is no Detection Time.",
        _gap_ratio,
    ),
]


def _drops(p: Peer) -> list[tuple[str, int]]:
    return list(p.drops().items())


def _send_errors(p: Peer) -> list[tuple[str, int]]:
    return list(p.send_errors.items())


#: Per-session families with one extra label, a sample per key: name, type,
#: help, label name, getter of (key, value) pairs.
_KEYED: list[tuple[str, str, str, str, Callable[[Peer], list[tuple[str, int]]]]] = [
    (
        "aiobfd_session_packets_dropped_total",
        "counter",
        "Packets that matched the session but were discarded, by reason.",
        "reason",
        _drops,
    ),
    (
        "aiobfd_session_send_errors_total",
        "counter",
        "Packets the kernel refused to send, by errno name.",
        "errno",
        _send_errors,
    ),
]

_STATE = (
    "aiobfd_session_state",
    "gauge",
    "Local session state (RFC 5880 section 4.1): 1 for the current state, else 0.",
)
_TRANSITIONS = (
    "aiobfd_session_state_transitions_total",
    "counter",
    "Local state changes by old and new state (from=up,to=down exists from the start).",
)
_DAEMON_DROPS = (
    "aiobfd_packets_dropped_total",
    "counter",
    "Received packets discarded before they matched a session (malformed, unknown "
    "discriminator or peer), by reason; drops of packets that matched a session are "
    "in aiobfd_session_packets_dropped_total.",
)
_RECEIVE_ERRORS = (
    "aiobfd_receive_errors_total",
    "counter",
    "Errors reading from the receive sockets.",
)
_WAKEUPS = (
    "aiobfd_wakeups_total",
    "counter",
    "Times the event loop woke the daemon, by cause: timer (session deadlines, each "
    "serving every session then due) or receive (packets on established sessions' "
    "sockets while no timer was near).",
)
_UNSOLICITED_REFUSED = (
    "aiobfd_unsolicited_refused_total",
    "counter",
    "Unsolicited sessions (RFC 9468) not created, by reason (prefix, ttl, interface, "
    "limit, rate, multihop, error).",
)
_DYNAMIC = (
    "aiobfd_unsolicited_sessions",
    "gauge",
    "Sessions that remotes created (RFC 9468 unsolicited).",
)
_BUILD = ("aiobfd_build_info", "gauge", "aiobfd version, and whether its core is compiled.")
_TX_LATENESS = (
    "aiobfd_transmit_lateness_seconds",
    "How late periodic transmissions went out against their schedule.",
)
_DETECT_LATENESS = (
    "aiobfd_detection_lateness_seconds",
    "How late detection timers fired against the Detection Time deadline.",
)


class BfdCollector(Collector):
    """Reads one daemon's sessions and counters when Prometheus scrapes.

    :meth:`collect` serves ``prometheus_client`` and may run in any thread: it
    only reads plain attributes and copies dicts.  :meth:`render_steps` is the
    daemon's own renderer and runs in the event loop's thread.
    """

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self._lock = threading.Lock()
        self._transitions: dict[PeerKey, dict[tuple[str, str], int]] = {}
        daemon.add_listener(self._on_event)

    def _on_event(self, peer: Peer, event: Event) -> None:
        """Count a state change (called for every session event, never per packet)."""
        if not isinstance(event, StateChanged):
            return
        pair = (event.old_state.label, event.new_state.label)
        with self._lock:
            counts = self._transitions.setdefault(peer.spec.key, {})
            counts[pair] = counts.get(pair, 0) + 1

    def _peers(self) -> list[Peer]:
        """The sessions now, forgetting the transitions of those that are gone."""
        daemon = self.daemon
        peers = list(daemon.peers.values())
        with self._lock:
            for key in [k for k in self._transitions if k not in daemon.peers]:
                del self._transitions[key]
        return peers

    def _transition_counts(self, p: Peer) -> list[tuple[tuple[str, str], int]]:
        with self._lock:
            items = list(self._transitions.get(p.spec.key, {}).items())
        if all(pair != UP_TO_DOWN for pair, _ in items):
            items.insert(0, (UP_TO_DOWN, 0))
        return items

    def _wakeups(self) -> list[tuple[str, int]]:
        timing = self.daemon.timing
        return [("timer", timing.timer_wakeups), ("receive", timing.receive_wakeups)]

    def _histograms(self) -> list[tuple[tuple[str, str], LatencyHistogram]]:
        timing = self.daemon.timing
        return [(_TX_LATENESS, timing.tx_lateness), (_DETECT_LATENESS, timing.detect_lateness)]

    # ------------------------------------------------ prometheus_client API

    def describe(self) -> list[Metric]:
        return []  # no collect() at registration

    def collect(self) -> Iterator[Metric]:
        daemon = self.daemon
        yield InfoMetricFamily(
            "aiobfd_build", _BUILD[2], value={"version": __version__, "core": core_build()}
        )
        drops = CounterMetricFamily(_DAEMON_DROPS[0], _DAEMON_DROPS[2], labels=["reason"])
        for reason, n in list(daemon.table.drops.items()):
            drops.add_metric([str(reason)], n)
        yield drops
        yield CounterMetricFamily(
            _RECEIVE_ERRORS[0], _RECEIVE_ERRORS[2], value=daemon.receive_errors
        )
        wakeups = CounterMetricFamily(_WAKEUPS[0], _WAKEUPS[2], labels=["cause"])
        for cause, n in self._wakeups():
            wakeups.add_metric([cause], n)
        yield wakeups
        refused = CounterMetricFamily(
            _UNSOLICITED_REFUSED[0], _UNSOLICITED_REFUSED[2], labels=["reason"]
        )
        for why, n in list(daemon.unsolicited_refused.items()):
            refused.add_metric([why], n)
        yield refused
        yield GaugeMetricFamily(
            _DYNAMIC[0], _DYNAMIC[2], value=sum(1 for p in daemon.peers.values() if p.dynamic)
        )
        peers = self._peers()
        labels = [_label_values(p) for p in peers]
        names = list(SESSION_LABELS)
        for name, kind, doc, get in _SIMPLE:
            family = _family(name, kind, doc, names)
            for p, values in zip(peers, labels, strict=True):
                value = get(p)
                if value is not None:
                    family.add_metric(values, value)
            yield family
        family = _family(*_STATE, [*names, "state"])
        for p, values in zip(peers, labels, strict=True):
            current = p.session.state.label
            for state in STATES:
                family.add_metric([*values, state], 1 if state == current else 0)
        yield family
        family = _family(*_TRANSITIONS, [*names, "from", "to"])
        for p, values in zip(peers, labels, strict=True):
            for (old, new), n in self._transition_counts(p):
                family.add_metric([*values, old, new], n)
        yield family
        for name, kind, doc, label, pairs in _KEYED:
            family = _family(name, kind, doc, [*names, label])
            for p, values in zip(peers, labels, strict=True):
                for key, n in pairs(p):
                    family.add_metric([*values, key], n)
            yield family
        for (name, doc), hist in self._histograms():
            buckets, total_sum = _buckets(hist)
            yield HistogramMetricFamily(name, doc, buckets=buckets, sum_value=total_sum)

    # ------------------------------------------------ the daemon's renderer

    def render(self) -> str:
        """Everything in the Prometheus text format (version 0.0.4), at once."""
        out: list[str] = []
        for _ in self.render_steps(out):
            pass
        return "".join(out)

    def render_steps(self, out: list[str]) -> Iterator[None]:
        """Append the text format to ``out``, yielding after every slice of work.

        Between two slices the event loop runs; a session may change meanwhile,
        so one scrape is not a snapshot of one instant (no scrape ever is).
        """
        daemon = self.daemon
        add = out.append
        name, kind, doc = _BUILD
        add(_header(name, kind, doc))
        add(f'{name}{{version="{_escape(__version__)}",core="{core_build()}"}} 1\n')
        name, kind, doc = _DAEMON_DROPS
        add(_header(name, kind, doc))
        for reason, n in list(daemon.table.drops.items()):
            add(f'{name}{{reason="{_escape(str(reason))}"}} {n}\n')
        name, kind, doc = _RECEIVE_ERRORS
        add(f"{_header(name, kind, doc)}{name} {daemon.receive_errors}\n")
        name, kind, doc = _WAKEUPS
        add(_header(name, kind, doc))
        for cause, n in self._wakeups():
            add(f'{name}{{cause="{cause}"}} {n}\n')
        name, kind, doc = _UNSOLICITED_REFUSED
        add(_header(name, kind, doc))
        for why, n in list(daemon.unsolicited_refused.items()):
            add(f'{name}{{reason="{_escape(why)}"}} {n}\n')
        name, kind, doc = _DYNAMIC
        dynamic = sum(1 for p in daemon.peers.values() if p.dynamic)
        add(f"{_header(name, kind, doc)}{name} {dynamic}\n")

        peers = self._peers()
        texts: list[str] = []  # each session's label text: strings only, no GC load
        for start in range(0, len(peers), SLICE):
            texts.extend(
                [
                    _label_text(SESSION_LABELS, _label_values(p))
                    for p in peers[start : start + SLICE]
                ]
            )
            yield
        count = len(peers)

        for name, kind, doc, get in _SIMPLE:
            add(_header(name, kind, doc))
            for start in range(0, count, SLICE):
                stop = start + SLICE
                add(
                    "".join(
                        [
                            f"{name}{{{text}}} {_value(v)}\n"
                            for p, text in zip(peers[start:stop], texts[start:stop], strict=True)
                            if (v := get(p)) is not None
                        ]
                    )
                )
                yield

        name, kind, doc = _STATE
        add(_header(name, kind, doc))
        step = SLICE // len(STATES)
        for start in range(0, count, step):
            stop = start + step
            add(
                "".join(
                    [
                        f'{name}{{{text},state="{state}"}} {int(state == current)}\n'
                        for p, text in zip(peers[start:stop], texts[start:stop], strict=True)
                        for current in (p.session.state.label,)
                        for state in STATES
                    ]
                )
            )
            yield

        name, kind, doc = _TRANSITIONS
        add(_header(name, kind, doc))
        transitions = self._transitions
        step = SLICE // 4
        for start in range(0, count, step):
            stop = start + step
            lines = []
            for p, text in zip(peers[start:stop], texts[start:stop], strict=True):
                counts = transitions.get(p.spec.key)
                if not counts or UP_TO_DOWN not in counts:
                    lines.append(f'{name}{{{text},from="up",to="down"}} 0\n')
                if counts:
                    for (old, new), n in list(counts.items()):
                        lines.append(f'{name}{{{text},from="{old}",to="{new}"}} {n}\n')
            add("".join(lines))
            yield

        for name, kind, doc, label, pairs in _KEYED:
            add(_header(name, kind, doc))
            for start in range(0, count, SLICE):
                stop = start + SLICE
                add(
                    "".join(
                        [
                            f'{name}{{{text},{label}="{_escape(key)}"}} {n}\n'
                            for p, text in zip(peers[start:stop], texts[start:stop], strict=True)
                            for key, n in pairs(p)
                        ]
                    )
                )
                yield

        for (name, doc), hist in self._histograms():
            buckets, total_sum = _buckets(hist)
            add(_header(name, "histogram", doc))
            for le, total in buckets:
                add(f'{name}_bucket{{le="{le}"}} {total}\n')
            add(f"{name}_sum {_value(total_sum)}\n{name}_count {buckets[-1][1]}\n")


def _family(
    name: str, kind: str, doc: str, labels: list[str]
) -> CounterMetricFamily | GaugeMetricFamily:
    if kind == "counter":
        return CounterMetricFamily(name, doc, labels=labels)
    return GaugeMetricFamily(name, doc, labels=labels)


def _buckets(hist: LatencyHistogram) -> tuple[list[tuple[str, float]], float]:
    """Cumulative (le, count) pairs and the sum, in seconds.

    The counts are copied first and the total derived from the copy, so the
    buckets stay consistent whatever is recorded meanwhile.
    """
    counts = list(hist.counts)
    buckets: list[tuple[str, float]] = []
    running = 0
    for bound, n in zip(hist.bounds_us, counts, strict=False):
        running += n
        buckets.append((_value(bound / 1e6), running))
    buckets.append(("+Inf", sum(counts)))
    return buckets, hist.sum_us / 1e6


def _label_values(p: Peer) -> list[str]:
    spec = p.spec
    return [spec.local, spec.remote, spec.interface]


def _header(name: str, kind: str, doc: str) -> str:
    return f"# HELP {name} {doc.replace(chr(92), chr(92) * 2)}\n# TYPE {name} {kind}\n"


def _label_text(names: tuple[str, ...], values: list[str]) -> str:
    return ",".join(f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True))


def _escape(value: str) -> str:
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return value


def _value(value: float) -> str:
    """A sample value as the text format wants it (Go's spelling of specials)."""
    if type(value) is int:
        return str(value)
    if math.isfinite(value):
        return repr(float(value))
    if math.isnan(value):
        return "NaN"
    return "+Inf" if value > 0 else "-Inf"


# ------------------------------------------------------------------ endpoint


def process_registry() -> CollectorRegistry:
    """The standard process, platform and GC metrics of ``prometheus_client``."""
    from prometheus_client import GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR

    registry = CollectorRegistry(auto_describe=False)
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)
    return registry


#: Bounds on what a client may send and how long it may take.
MAX_LINE = 8192
MAX_HEADERS = 64
REQUEST_TIMEOUT_S = 10.0
#: Scrapes rendered at the same time; more wait their turn.
MAX_CONCURRENT_SCRAPES = 2


class MetricsServer:
    """``/metrics`` over HTTP/1.1, served by the daemon's event loop."""

    def __init__(self, daemon: Daemon) -> None:
        self.collector = BfdCollector(daemon)
        self.process = process_registry()
        self._server: asyncio.AbstractServer | None = None
        self._busy = asyncio.Semaphore(MAX_CONCURRENT_SCRAPES)
        self.address = ""
        self.port = 0

    @property
    def url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}/metrics"

    async def start(self, address: str, port: int) -> None:
        self._server = await asyncio.start_server(
            self._client, host=address, port=port, limit=MAX_LINE
        )
        sockname = self._server.sockets[0].getsockname()
        self.address, self.port = sockname[0], int(sockname[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1)
            self._server = None

    async def scrape(self, *, gzipped: bool = False) -> list[bytes]:
        """The whole exposition, in pieces, rendered (and compressed) a slice at a
        time between the event loop's other work."""
        async with self._busy:
            # Level 1: fast, and still ~20 times smaller on this repetitive text.
            packer = zlib.compressobj(1, zlib.DEFLATED, 31) if gzipped else None
            parts: list[bytes] = []

            def emit(data: bytes) -> None:
                parts.append(packer.compress(data) if packer is not None else data)

            out: list[str] = []
            for _ in self.collector.render_steps(out):
                emit("".join(out).encode())
                out.clear()
                await asyncio.sleep(0)
            emit("".join(out).encode())
            emit(generate_latest(self.process))
            if packer is not None:
                parts.append(packer.flush())
            return parts

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                request = await _read_request(reader)
                if request is None:
                    await _respond(writer, 400, b"bad request\n")
                    return
                method, target, headers = request
                if method not in ("GET", "HEAD"):
                    await _respond(
                        writer, 405, b"only GET and HEAD\n", extra={"Allow": "GET, HEAD"}
                    )
                    return
                path = urlsplit(target).path
                if path == "/":
                    page = b'<html><body><a href="/metrics">aiobfd metrics</a></body></html>\n'
                    await _respond(
                        writer, 200, page, "text/html; charset=utf-8", head=method == "HEAD"
                    )
                    return
                if path != "/metrics":
                    await _respond(writer, 404, b"not found: try /metrics\n")
                    return
                gzipped = "gzip" in headers.get("accept-encoding", "")
                try:
                    data = await self.scrape(gzipped=gzipped)
                except Exception:
                    log.exception("metrics scrape failed")
                    await _respond(writer, 500, b"scrape failed\n")
                    return
                await _respond(
                    writer,
                    200,
                    data,
                    CONTENT_TYPE,
                    head=method == "HEAD",
                    extra={"Content-Encoding": "gzip"} if gzipped else None,
                )
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def _read_request(
    reader: asyncio.StreamReader,
) -> tuple[str, str, dict[str, str]] | None:
    try:
        line = await reader.readline()
        parts = line.decode("latin-1").split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return None
        headers: dict[str, str] = {}
        for _ in range(MAX_HEADERS + 1):
            raw = await reader.readline()
            if raw in (b"\r\n", b"\n", b""):
                return parts[0], parts[1], headers
            name, sep, value = raw.decode("latin-1").partition(":")
            if not sep:
                return None
            headers[name.strip().lower()] = value.strip()
    except (ValueError, asyncio.LimitOverrunError):
        return None
    return None  # too many headers


_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
}


async def _respond(
    writer: asyncio.StreamWriter,
    status: int,
    body: bytes | list[bytes],
    ctype: str = "text/plain; charset=utf-8",
    *,
    head: bool = False,
    extra: dict[str, str] | None = None,
) -> None:
    parts = [body] if isinstance(body, bytes) else body
    lines = [
        f"HTTP/1.1 {status} {_REASONS[status]}",
        f"Content-Type: {ctype}",
        f"Content-Length: {sum(map(len, parts))}",
        "Connection: close",
        *(f"{k}: {v}" for k, v in (extra or {}).items()),
    ]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    if not head:
        writer.writelines(parts)
    await writer.drain()


async def start_metrics_server(daemon: Daemon, address: str, port: int) -> MetricsServer:
    """Serve ``/metrics`` for ``daemon`` on ``address``:``port`` (0: a free port).

    Raises OSError if the address cannot be resolved or bound.
    """
    server = MetricsServer(daemon)
    await server.start(address, port)
    return server


__all__ = [
    "DEFAULT_METRICS_ADDRESS",
    "DEFAULT_METRICS_PORT",
    "BfdCollector",
    "MetricsServer",
    "start_metrics_server",
]
