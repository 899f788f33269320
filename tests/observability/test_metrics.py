"""The /metrics endpoint of a live daemon, promtool's verdict, contrib's rules and dashboard.

Two daemons run in this event loop over loopback (127.0.6.1 <-> 127.0.6.2);
the first serves /metrics on a free port of 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import random
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families

from aiobfd import __version__, core_build
from aiobfd.config import PeerSpec
from aiobfd.engine import Daemon, Peer
from aiobfd.engine.turns import Turn
from aiobfd.io.clock import monotonic_us
from aiobfd.metrics import BfdCollector, MetricsServer, start_metrics_server
from aiobfd.metrics.exposition import SLICE
from aiobfd.protocol.packet import ControlPacket, Diag, State, encode
from aiobfd.protocol.session import Session, SessionConfig
from aiobfd.protocol.stats import TimingStats

from .helpers import Changes, require_tool, spec, wait_until

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "contrib" / "prometheus" / "aiobfd-rules.yml"
DASHBOARD = ROOT / "contrib" / "grafana" / "aiobfd-dashboard.json"
A, B = "127.0.6.1", "127.0.6.2"
SESSION = (("interface", ""), ("local", A), ("remote", B))

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in out, f"duplicate series {key}"
            out[key] = s.value
    return out


def get(url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


@pytest.fixture
async def served() -> AsyncIterator[tuple[Daemon, Daemon, MetricsServer]]:
    a = Daemon([spec(A, B)])
    b = Daemon([spec(B, A)])
    changes = Changes(a)
    await a.start()
    server = await start_metrics_server(a, "127.0.0.1", 0)
    try:
        await b.start()
        await changes.wait_for(lambda e: e.new_state is State.UP)
        session = next(iter(a.peers.values())).session
        await wait_until(lambda: session.detection_time_us == 150_000 and not session.poll_active)
        await wait_until(lambda: a.timing.tx_lateness.total >= 3)  # periodic packets at 50 ms
        yield a, b, server
    finally:
        await server.close()
        a.close()
        b.close()


async def scrape(server: MetricsServer) -> str:
    status, headers, body = await asyncio.to_thread(get, server.url)
    assert status == 200
    assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    return body.decode()


async def test_exposition_of_an_up_session(served: tuple[Daemon, Daemon, MetricsServer]) -> None:
    a, _b, server = served
    got = samples(await scrape(server))
    s = dict(SESSION)

    def value(name: str, **labels: str) -> float:
        return got[(name, tuple(sorted({**s, **labels}.items())))]

    assert got[("aiobfd_build_info", (("core", core_build()), ("version", __version__)))] == 1
    assert value("aiobfd_session_up") == 1
    for state in ("admin_down", "down", "init", "up"):
        assert value("aiobfd_session_state", state=state) == (state == "up")
    transitions = {
        (dict(k[1])["from"], dict(k[1])["to"]): v
        for k, v in got.items()
        if k[0] == "aiobfd_session_state_transitions_total"
    }
    assert transitions[("up", "down")] == 0  # present from the start, for alerts
    assert transitions[("init", "up")] + transitions.get(("down", "up"), 0) == 1
    assert value("aiobfd_session_packets_sent_total") >= 3
    assert value("aiobfd_session_packets_received_total") >= 3
    assert value("aiobfd_session_transmit_interval_seconds") == 0.05
    assert value("aiobfd_session_receive_interval_seconds") == 0.05
    assert value("aiobfd_session_detection_time_seconds") == 0.15
    assert value("aiobfd_session_local_diag") == 0
    assert value("aiobfd_session_remote_diag") == 0
    assert value("aiobfd_session_poll_sequences_total") >= 1
    assert value("aiobfd_session_detection_expiries_total") == 0
    changed = value("aiobfd_session_last_state_change_timestamp_seconds")
    assert time.time() - 30 < changed <= time.time()
    gap = value("aiobfd_session_max_rx_gap_seconds")
    assert 0 < gap < 0.15
    assert value("aiobfd_session_max_rx_gap_ratio") == pytest.approx(gap / 0.15)
    assert got[("aiobfd_receive_errors_total", ())] == 0
    assert got[("aiobfd_log_records_dropped_total", ())] == 0
    assert got[("aiobfd_receive_sockets", ())] == 1  # the established session's own
    assert got[("aiobfd_wakeups_total", (("cause", "timer"),))] > 0
    assert ("aiobfd_wakeups_total", (("cause", "receive"),)) in got
    for hist in ("aiobfd_transmit_lateness_seconds", "aiobfd_detection_lateness_seconds"):
        buckets = sorted(
            (float(dict(k[1])["le"]), v) for k, v in got.items() if k[0] == f"{hist}_bucket"
        )
        assert len(buckets) == 12 and buckets[-1][0] == float("inf")
        counts = [v for _, v in buckets]
        assert counts == sorted(counts)
        assert counts[-1] == got[(f"{hist}_count", ())]
    assert got[("aiobfd_transmit_lateness_seconds_count", ())] > 0
    assert got[("process_open_fds", ())] > 0  # prometheus_client's process metrics too

    # The series of a removed session go, its transition counts too.
    a.remove_peer(next(iter(a.peers)))
    got = samples(await scrape(server))
    assert not [k for k in got if k[0].startswith("aiobfd_session_")]


async def test_drops_by_reason(served: tuple[Daemon, Daemon, MetricsServer]) -> None:
    a, _b, server = served
    session = next(iter(a.peers.values())).session
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((B, 0))  # from the peer's address, but with TTL 64: dropped by the session
        s.sendto(
            encode(ControlPacket(State.UP, Diag(0), 0, 3, 7, session.local_discr, 50_000, 50_000)),
            (A, 3784),
        )
        s.sendto(b"\x20\x00", (A, 3784))  # too short: dropped before any session
    await wait_until(lambda: bool(session.counters.drops and a.table.drops))
    got = samples(await scrape(server))
    per_session = {
        dict(k[1])["reason"]: v
        for k, v in got.items()
        if k[0] == "aiobfd_session_packets_dropped_total"
    }
    assert per_session == {"ttl": 1}
    daemon_wide = {
        dict(k[1])["reason"]: v for k, v in got.items() if k[0] == "aiobfd_packets_dropped_total"
    }
    assert sum(daemon_wide.values()) == 1


async def test_fast_renderer_matches_prometheus_client(
    served: tuple[Daemon, Daemon, MetricsServer],
) -> None:
    _a, _b, server = served
    registry = CollectorRegistry(auto_describe=False)
    registry.register(server.collector)
    # Both without yielding to the event loop: the same state is read twice.
    ours = server.collector.render()
    theirs = generate_latest(registry).decode()
    openmetrics = generate_openmetrics(registry).decode()  # type: ignore[no-untyped-call]
    assert samples(ours) == samples(theirs)
    helps = set(re.findall(r"^# (?:HELP|TYPE) .*$", ours, re.M))
    assert helps == set(re.findall(r"^# (?:HELP|TYPE) .*$", theirs, re.M))
    parsed = parse_openmetrics(openmetrics)  # type: ignore[no-untyped-call]
    assert sum(len(f.samples) for f in parsed) > 30


async def test_http_details(served: tuple[Daemon, Daemon, MetricsServer]) -> None:
    _a, _b, server = served
    status, headers, body = await asyncio.to_thread(get, server.url, **{"Accept-Encoding": "gzip"})
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    assert b"aiobfd_session_up{" in gzip.decompress(body)
    base = server.url.removesuffix("/metrics")
    status, _, body = await asyncio.to_thread(get, f"{base}/")
    assert status == 200 and b"/metrics" in body
    status, _, _ = await asyncio.to_thread(get, f"{base}/other")
    assert status == 404

    def post() -> int:
        request = urllib.request.Request(server.url, data=b"x", method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    assert await asyncio.to_thread(post) == 405

    def garbage() -> bytes:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as c:
            c.sendall(b"nonsense\r\n\r\n")
            return c.recv(100)

    assert (await asyncio.to_thread(garbage)).startswith(b"HTTP/1.1 400")


class _FakeDaemon:
    """Sessions without sockets, for what loopback cannot show (link-local)."""

    def __init__(self, specs: list[PeerSpec]) -> None:
        self.peers: dict[Any, Peer] = {}
        self.table = SimpleNamespace(drops={})
        self.receive_errors = self.session_sockets = 0
        self.unsolicited_refused: dict[str, int] = {}
        self.timing = TimingStats()
        for i, spec_ in enumerate(specs, 1):
            session = Session(SessionConfig(), i, now=0, rng=random.Random(i), key=spec_.key)
            self.peers[spec_.key] = Peer(spec_, session, None, None)  # type: ignore[arg-type]

    def add_listener(self, listener: Any) -> None:
        pass

    def turn(self) -> Turn:
        return Turn(monotonic_us, lambda: None)


def test_link_local_sessions_differ_by_interface() -> None:
    specs = [
        PeerSpec("fe80::1", "fe80::2", socket.AF_INET6, scope=2, interface="eth0"),
        PeerSpec("fe80::1", "fe80::2", socket.AF_INET6, scope=3, interface="eth1"),
    ]
    text = BfdCollector(_FakeDaemon(specs)).render()  # type: ignore[arg-type]
    got = samples(text)  # no duplicate series
    up = {dict(k[1])["interface"] for k in got if k[0] == "aiobfd_session_up"}
    assert up == {"eth0", "eth1"}
    assert 'remote="fe80::1",interface="eth0"' in text


def test_both_renderings_come_from_the_one_family_list() -> None:
    """Each family of the list, and nothing else, in both renderings, once."""
    fake = _FakeDaemon([PeerSpec("192.0.2.1", "192.0.2.100", socket.AF_INET)])
    collector = BfdCollector(fake)  # type: ignore[arg-type]
    listed = [f.name for f in (*collector.families.daemon, *collector.families.session)]
    assert len(set(listed)) == len(listed)
    ours = re.findall(r"^# TYPE (\S+) ", collector.render(), re.M)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    theirs = re.findall(r"^# TYPE (\S+) ", generate_latest(registry).decode(), re.M)
    assert sorted(ours) == sorted(theirs) == sorted(listed)


def test_renderer_yields_between_slices() -> None:
    """1,000 sessions: the step-wise renderer never writes much more than a
    slice of samples between two yields to the event loop."""
    specs = [
        PeerSpec(f"10.0.{i // 250}.{i % 250 + 1}", "10.1.0.1", socket.AF_INET) for i in range(1000)
    ]
    fake = _FakeDaemon(specs)
    for i, peer in enumerate(fake.peers.values()):
        if i % 3 == 0:
            peer.session.counters.drops["ttl"] = i
    collector = BfdCollector(fake)  # type: ignore[arg-type]
    out: list[str] = []
    slices = []
    for _ in collector.render_steps(out):
        slices.append(sum(1 for line in "".join(out).splitlines() if not line.startswith("#")))
        out.clear()
    text = collector.render()
    total = sum(1 for line in text.splitlines() if not line.startswith("#"))
    assert total > 15_000
    assert max(slices) <= 2 * SLICE
    assert len(slices) >= total // (2 * SLICE)


def test_promtool_accepts_the_exposition_and_the_rules(tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    specs = [PeerSpec(f"192.0.2.{i}", "192.0.2.100", socket.AF_INET) for i in range(1, 4)]
    specs.append(PeerSpec("fe80::1", "fe80::2", socket.AF_INET6, scope=2, interface="eth0"))
    fake = _FakeDaemon(specs)
    peers = list(fake.peers.values())
    peers[0].session.counters.drops["ttl"] = 2
    peers[1].send_errors["ENETUNREACH"] = 5
    fake.table.drops["short"] = 1
    fake.timing.tx_lateness.record(300)
    server = MetricsServer(fake)  # type: ignore[arg-type]
    text = server.collector.render() + generate_latest(server.process).decode()
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" or "SUCCESS" in result.stdout, result.stdout

    result = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def exposed_names() -> set[str]:
    """Every name the exposition can have (families are declared even when empty)."""
    fake = _FakeDaemon([PeerSpec("192.0.2.1", "192.0.2.100", socket.AF_INET)])
    names = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", BfdCollector(fake).render(), re.M):  # type: ignore[arg-type]
        names |= (
            {f"{name}{s}" for s in ("_bucket", "_sum", "_count")} if kind == "histogram" else {name}
        )
    return names


def test_contrib_uses_exactly_the_exposed_names() -> None:
    names = exposed_names()
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["panels"]
    for source in (DASHBOARD.read_text(), RULES.read_text()):
        used = set(re.findall(r"\baiobfd_[a-z_]+", source))
        assert used and used <= names, used - names


def test_cli_metrics_flags() -> None:
    aiobfd = [sys.executable, "-m", "aiobfd", "127.0.7.1", "127.0.7.2", "--control-socket", "none"]
    result = subprocess.run(
        [*aiobfd, "--metrics-port", "65536"], capture_output=True, text=True, timeout=20
    )
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "--metrics-port" in result.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [*aiobfd, "--metrics-port", str(port)], capture_output=True, text=True, timeout=20
        )
    assert result.returncode == 2, result
    assert f"metrics endpoint 127.0.0.1:{port}" in result.stderr
