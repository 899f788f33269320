"""Prometheus metrics, read from the daemon at scrape time.

Nothing is updated on the packet path.  A scrape walks the sessions and reads
the plain counters they keep anyway (:class:`~aiobfd.session.SessionCounters`),
the drop counts of the session table and the timer-lateness histograms of
:class:`~aiobfd.stats.TimingStats`.  The one thing sessions do not count, state
transitions by from/to state, is counted here from ``StateChanged`` events.

:class:`BfdCollector` is a ``prometheus_client`` custom collector: register it
in any registry and ``generate_latest`` (text or OpenMetrics) exports it.  The
daemon's own endpoint (:func:`start_metrics_server`) renders the same snapshot
straight to the Prometheus text format instead, because ``prometheus_client``'s
generic encoder costs about 12 us a sample and 1,000 sessions make about 19,000
samples (see ``bench/metrics_scrape.py``); the process metrics there still come
from ``prometheus_client``.  Tests hold both renderings to the same samples.

The endpoint serves each scrape from a thread of its own, so a scrape never
holds up the event loop for its whole duration: the scrape thread only reads
plain attributes and copies dicts (each copy is atomic under the GIL), and it
gives the GIL back between metric families so the loop's timers do not wait.

Names follow the Prometheus conventions (``aiobfd_`` prefix, base units,
``_total`` counters); every per-session series carries ``local``, ``remote``
and ``interface`` (the interface of an IPv6 link-local pair, else empty).
"""

from __future__ import annotations

import gzip
import logging
import math
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
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
from prometheus_client.utils import floatToGoString

from . import __version__
from .daemon import Daemon, Peer
from .events import Event, StateChanged
from .packet import State
from .registry import PeerKey
from .stats import LatencyHistogram

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
_ALWAYS = (State.UP.label, State.DOWN.label)


# ---------------------------------------------------------------- snapshot


class _Family:
    """One metric family of a snapshot, in a form both renderers use cheaply.

    ``rows`` are (session labels or None, extra label values, value); a session's
    labels are one :class:`_Labels`, shared by all its rows.
    """

    __slots__ = ("doc", "extra", "kind", "name", "rows")

    def __init__(self, name: str, kind: str, doc: str, extra: tuple[str, ...] = ()) -> None:
        self.name = name  # as exposed: counters end in _total
        self.kind = kind  # counter, gauge
        self.doc = doc
        self.extra = extra  # label names after the session's
        self.rows: list[tuple[_Labels | None, tuple[str, ...], float]] = []


class _Labels:
    __slots__ = ("text", "values")

    def __init__(self, values: tuple[str, ...]) -> None:
        self.values = values
        self.text = ",".join(
            f'{name}="{_escape(value)}"' for name, value in zip(SESSION_LABELS, values, strict=True)
        )


class _Histogram:
    __slots__ = ("buckets", "doc", "name", "sum")

    def __init__(self, name: str, doc: str, hist: LatencyHistogram) -> None:
        self.name = name
        self.doc = doc
        # Copy the counts first and derive the total from the copy, so the
        # buckets stay consistent if the event loop records a value meanwhile.
        counts = list(hist.counts)
        self.buckets: list[tuple[str, int]] = []
        running = 0
        for bound, n in zip(hist.bounds_us, counts, strict=False):
            running += n
            self.buckets.append((floatToGoString(bound / 1e6), running))
        self.buckets.append(("+Inf", sum(counts)))
        self.sum = hist.sum_us / 1e6


class BfdCollector(Collector):
    """Reads one daemon's sessions and counters when Prometheus scrapes."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        # time.time() - time.monotonic(), taken once: turns the monotonic
        # instants of the protocol into unix seconds, for display only.
        self._wall_offset = time.time() - time.monotonic()
        self._lock = threading.Lock()
        self._transitions: dict[PeerKey, dict[tuple[str, str], int]] = {}
        daemon.add_listener(self._on_event)

    # Event loop thread: called for every session event (never per packet).
    def _on_event(self, peer: Peer, event: Event) -> None:
        if not isinstance(event, StateChanged):
            return
        pair = (event.old_state.label, event.new_state.label)
        with self._lock:
            counts = self._transitions.setdefault(peer.spec.key, {})
            counts[pair] = counts.get(pair, 0) + 1

    def snapshot(self) -> tuple[list[_Family], list[_Histogram]]:
        """Read everything once (scrape thread)."""
        daemon = self.daemon
        peers = list(daemon.peers.values())
        with self._lock:
            for key in [k for k in self._transitions if k not in daemon.peers]:
                del self._transitions[key]  # the session is gone
            transitions = {k: dict(v) for k, v in self._transitions.items()}

        build = _Family("aiobfd_build_info", "gauge", "aiobfd version.", ("version",))
        build.rows.append((None, (__version__,), 1))
        drops = _Family(
            "aiobfd_packets_dropped_total",
            "counter",
            "Received packets discarded before they matched a session (malformed, "
            "unknown discriminator or peer), by reason; drops of packets that matched "
            "a session are in aiobfd_session_packets_dropped_total.",
            ("reason",),
        )
        for reason, n in list(daemon.table.drops.items()):
            drops.rows.append((None, (str(reason),), n))
        errors = _Family(
            "aiobfd_receive_errors_total", "counter", "Errors reading from the receive sockets."
        )
        errors.rows.append((None, (), daemon.receive_errors))

        up = _Family("aiobfd_session_up", "gauge", "1 if the session is Up, else 0.")
        state = _Family(
            "aiobfd_session_state",
            "gauge",
            "Local session state (RFC 5880 section 4.1): 1 for the current state, else 0.",
            ("state",),
        )
        trans = _Family(
            "aiobfd_session_state_transitions_total",
            "counter",
            "Local state changes by old and new state (from=up,to=down exists from the start).",
            ("from", "to"),
        )
        changed = _Family(
            "aiobfd_session_last_state_change_timestamp_seconds",
            "gauge",
            "Unix time of the last local state change (or of the session's creation).",
        )
        sent = _Family("aiobfd_session_packets_sent_total", "counter", "BFD Control packets sent.")
        received = _Family(
            "aiobfd_session_packets_received_total",
            "counter",
            "BFD Control packets received and accepted by the session.",
        )
        dropped = _Family(
            "aiobfd_session_packets_dropped_total",
            "counter",
            "Packets that matched the session but were discarded, by reason.",
            ("reason",),
        )
        send_errors = _Family(
            "aiobfd_session_send_errors_total",
            "counter",
            "Packets the kernel refused to send, by errno name.",
            ("errno",),
        )
        tx = _Family(
            "aiobfd_session_transmit_interval_seconds",
            "gauge",
            "Negotiated periodic transmit interval, before jitter.",
        )
        rx = _Family(
            "aiobfd_session_receive_interval_seconds",
            "gauge",
            "Negotiated receive interval: the larger of our Required Min RX and the "
            "remote's Desired Min TX.",
        )
        detect = _Family(
            "aiobfd_session_detection_time_seconds",
            "gauge",
            "Detection Time in force (0 until the remote has spoken).",
        )
        local_diag = _Family(
            "aiobfd_session_local_diag",
            "gauge",
            "Local diagnostic code (RFC 5880 section 4.1: 1 detection time expired, "
            "3 neighbor signaled session down, 7 administratively down, ...).",
        )
        remote_diag = _Family(
            "aiobfd_session_remote_diag",
            "gauge",
            "Diagnostic code in the last packet from the remote.",
        )
        polls = _Family(
            "aiobfd_session_poll_sequences_total",
            "counter",
            "Poll Sequences started (RFC 5880 section 6.5).",
        )
        expiries = _Family(
            "aiobfd_session_detection_expiries_total",
            "counter",
            "Times the Detection Time passed without a packet from the remote.",
        )
        gap = _Family(
            "aiobfd_session_max_rx_gap_seconds",
            "gauge",
            "Largest gap between two received packets since the session last came Up.",
        )
        gap_ratio = _Family(
            "aiobfd_session_max_rx_gap_ratio",
            "gauge",
            "Largest receive gap since the session last came Up divided by the Detection "
            "Time (1 would be a timeout); absent while there is no Detection Time.",
        )

        offset = self._wall_offset
        no: tuple[str, ...] = ()
        for peer in peers:
            spec = peer.spec
            s = peer.session
            c = s.counters
            lb = _Labels((spec.local, spec.remote, spec.interface))
            current = s.state.label
            up.rows.append((lb, no, 1 if current == "up" else 0))
            for label in STATES:
                state.rows.append((lb, (label,), 1 if label == current else 0))
            counts = transitions.get(spec.key, {})
            if _ALWAYS not in counts:
                trans.rows.append((lb, _ALWAYS, 0))
            for pair, n in counts.items():
                trans.rows.append((lb, pair, n))
            changed.rows.append((lb, no, offset + s.last_state_change_us / 1e6))
            sent.rows.append((lb, no, c.packets_out))
            received.rows.append((lb, no, c.packets_in))
            for reason, n in list(c.drops.items()):
                dropped.rows.append((lb, (str(reason),), n))
            for name, n in list(peer.send_errors.items()):
                send_errors.rows.append((lb, (name,), n))
            tx.rows.append((lb, no, s.transmit_interval_us / 1e6))
            rx.rows.append((lb, no, max(s.required_min_rx_us, s.remote_desired_min_tx_us) / 1e6))
            detection_us = s.detection_time_us
            detect.rows.append((lb, no, detection_us / 1e6))
            local_diag.rows.append((lb, no, int(s.local_diag)))
            remote_diag.rows.append((lb, no, int(s.remote_diag)))
            polls.rows.append((lb, no, c.poll_sequences))
            expiries.rows.append((lb, no, c.detection_expiries))
            max_gap = s.max_rx_gap_us
            gap.rows.append((lb, no, max_gap / 1e6))
            if detection_us:
                gap_ratio.rows.append((lb, no, max_gap / detection_us))

        families = [
            build, drops, errors, up, state, trans, changed, sent, received, dropped,
            send_errors, tx, rx, detect, local_diag, remote_diag, polls, expiries, gap,
            gap_ratio,
        ]  # fmt: skip
        histograms = [
            _Histogram(
                "aiobfd_transmit_lateness_seconds",
                "How late periodic transmissions went out against their schedule.",
                daemon.timing.tx_lateness,
            ),
            _Histogram(
                "aiobfd_detection_lateness_seconds",
                "How late detection timers fired against the Detection Time deadline.",
                daemon.timing.detect_lateness,
            ),
        ]
        return families, histograms

    # prometheus_client's interface -------------------------------------------

    def describe(self) -> list[Metric]:
        return []  # no collect() at registration

    def collect(self) -> Iterator[Metric]:
        families, histograms = self.snapshot()
        for fam in families:
            metric: Metric
            if fam.name == "aiobfd_build_info":
                metric = InfoMetricFamily("aiobfd_build", fam.doc, value={"version": __version__})
                yield metric
                continue
            names = [*SESSION_LABELS, *fam.extra] if _per_session(fam) else list(fam.extra)
            if fam.kind == "counter":
                metric = CounterMetricFamily(fam.name, fam.doc, labels=names)
            else:
                metric = GaugeMetricFamily(fam.name, fam.doc, labels=names)
            for lb, extra, value in fam.rows:
                metric.add_metric([*lb.values, *extra] if lb else list(extra), value)
            yield metric
        for h in histograms:
            yield HistogramMetricFamily(h.name, h.doc, buckets=h.buckets, sum_value=h.sum)

    # The daemon's fast path -----------------------------------------------------

    def render(self) -> str:
        """The snapshot in the Prometheus text format (version 0.0.4)."""
        families, histograms = self.snapshot()
        out: list[str] = []
        add = out.append
        for fam in families:
            name = fam.name
            add(f"# HELP {name} {_escape_help(fam.doc)}\n# TYPE {name} {fam.kind}\n")
            extra_names = fam.extra
            for lb, extra, value in fam.rows:
                text = lb.text if lb is not None else ""
                if extra:
                    more = ",".join(
                        f'{n}="{_escape(v)}"' for n, v in zip(extra_names, extra, strict=True)
                    )
                    text = f"{text},{more}" if text else more
                add(f"{name}{{{text}}} {_value(value)}\n" if text else f"{name} {_value(value)}\n")
            # Let the event loop's thread have the GIL now rather than after a
            # whole switch interval: a family of 1,000 sessions takes a while.
            time.sleep(0)
        for h in histograms:
            name = h.name
            add(f"# HELP {name} {_escape_help(h.doc)}\n# TYPE {name} histogram\n")
            for le, n in h.buckets:
                add(f'{name}_bucket{{le="{le}"}} {n}\n')
            add(f"{name}_sum {_value(h.sum)}\n{name}_count {h.buckets[-1][1]}\n")
        return "".join(out)


def _per_session(fam: _Family) -> bool:
    return fam.name.startswith("aiobfd_session_")


def _escape(value: str) -> str:
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return value


def _escape_help(doc: str) -> str:
    return doc.replace("\\", "\\\\").replace("\n", "\\n")


def _value(value: float) -> str:
    if type(value) is int:
        return str(value)
    if math.isfinite(value):
        return repr(float(value))
    return floatToGoString(value)


# ------------------------------------------------------------------ endpoint


def process_registry() -> CollectorRegistry:
    """The standard process, platform and GC metrics of ``prometheus_client``."""
    from prometheus_client import GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR

    registry = CollectorRegistry(auto_describe=False)
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)
    return registry


class Exposition:
    """What ``/metrics`` answers: the BFD metrics plus the process metrics."""

    def __init__(self, daemon: Daemon) -> None:
        self.collector = BfdCollector(daemon)
        self.process = process_registry()

    def render(self) -> bytes:
        return self.collector.render().encode() + generate_latest(self.process)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "aiobfd"
    sys_version = ""

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _answer(self, *, body: bool) -> None:
        path = urlsplit(self.path).path
        if path == "/":
            page = b'<html><body><a href="/metrics">aiobfd metrics</a></body></html>\n'
            self._send(200, "text/html; charset=utf-8", page, body=body)
            return
        if path != "/metrics":
            self._send(404, "text/plain; charset=utf-8", b"not found: try /metrics\n", body=body)
            return
        try:
            data = self.server.exposition.render()
        except Exception:
            log.exception("metrics scrape failed")
            self._send(500, "text/plain; charset=utf-8", b"scrape failed\n", body=body)
            return
        gzipped = "gzip" in self.headers.get("Accept-Encoding", "")
        if gzipped:
            data = gzip.compress(data, compresslevel=1)  # zlib drops the GIL
        self._send(200, CONTENT_TYPE, data, body=body, gzipped=gzipped)

    def _send(
        self, status: int, ctype: str, data: bytes, *, body: bool, gzipped: bool = False
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        if gzipped:
            self.send_header("Content-Encoding", "gzip")
        self.end_headers()
        if body:
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # no line per scrape


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    exposition: Exposition


class MetricsServer:
    """The running endpoint; :meth:`close` stops it."""

    def __init__(self, httpd: _Server, thread: threading.Thread) -> None:
        self._httpd = httpd
        self._thread = thread
        self.exposition = httpd.exposition
        sockname = httpd.socket.getsockname()
        self.address: str = sockname[0]
        self.port: int = int(sockname[1])

    def close(self, *, wait: bool = False) -> None:
        """Stop serving.  Without ``wait`` this returns at once (the server's
        thread notices within half a second), so it never delays an exit."""
        httpd = self._httpd

        def stop() -> None:
            httpd.shutdown()
            httpd.server_close()

        stopper = threading.Thread(target=stop, name="aiobfd-metrics-stop", daemon=True)
        stopper.start()
        if wait:
            stopper.join()
            self._thread.join()


def start_metrics_server(daemon: Daemon, address: str, port: int) -> MetricsServer:
    """Serve ``/metrics`` for ``daemon`` on ``address``:``port`` (0: a free port).

    The server runs in a daemon thread.  Raises OSError if the address cannot be
    resolved or bound.
    """
    infos = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, sockaddr = infos[0]

    class Server(_Server):
        address_family = family

    httpd = Server(sockaddr, _Handler)
    httpd.exposition = Exposition(daemon)
    thread = threading.Thread(target=httpd.serve_forever, name="aiobfd-metrics", daemon=True)
    thread.start()
    return MetricsServer(httpd, thread)
