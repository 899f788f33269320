"""A real Prometheus server scrapes two aiobfd processes over loopback.

The daemons (127.0.5.1 <-> 127.0.5.2, 100 ms x 3) each serve /metrics on a
free port; Prometheus (Debian's ``prometheus``) runs on another free port of
127.0.0.1 with a temporary configuration (scrape and rule evaluation every
second, contrib's alerting rules loaded) and data directory.  The test asks its
HTTP API until both sessions are Up, evaluates every query of contrib's
dashboard, kills one daemon with SIGKILL, and sees the other's session Down
(detection time expired) and the BFDSessionDown alert pending.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .helpers import free_port, require_tool

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "contrib" / "prometheus" / "aiobfd-rules.yml"
DASHBOARD = ROOT / "contrib" / "grafana" / "aiobfd-dashboard.json"
A, B = "127.0.5.1", "127.0.5.2"

CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - {rules}
scrape_configs:
  - job_name: aiobfd
    static_configs:
      - targets: ["127.0.0.1:{port_a}", "127.0.0.1:{port_b}"]
"""


class Processes:
    """Started processes, all ended (by their Popen object) on exit."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        out = (self.tmp / f"{name}.out").open("wb")
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=self.tmp)
        out.close()
        self.procs[name] = proc
        return proc

    def output(self, name: str) -> str:
        return (self.tmp / f"{name}.out").read_text(errors="replace")

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 5
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    def describe(self) -> str:
        return "\n".join(
            f"--- {name} (exit {p.poll()}):\n{self.output(name)[-3000:]}"
            for name, p in self.procs.items()
        )


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    try:
        yield procs
    finally:
        procs.stop_all()


def http_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def wait_for(what: str, probe: Callable[[], Any], procs: Processes, timeout: float) -> Any:
    """Call ``probe`` until it answers something true; fail with the logs if not."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        for name, proc in procs.procs.items():
            if proc.poll() is not None and name != "b":
                pytest.fail(f"{name} exited while waiting for {what}\n{procs.describe()}")
        try:
            last = probe()
        except (OSError, ValueError) as exc:  # not listening yet, or not JSON yet
            last = exc
        else:
            if last:
                return last
        time.sleep(0.25)
    pytest.fail(f"timed out waiting for {what} (last: {last!r})\n{procs.describe()}")


class Prometheus:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def ready(self) -> bool:
        with urllib.request.urlopen(f"{self.base}/-/ready", timeout=5) as response:
            return bool(response.status == 200)

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            answer = http_json(url)
        except urllib.error.HTTPError as exc:  # a bad query answers 400 with the reason
            raise AssertionError(f"{expr}: {exc.read().decode()}") from None
        assert answer["status"] == "success", answer
        return list(answer["data"]["result"])

    def values(self, expr: str) -> dict[str, float]:
        """{remote: value} of an instant vector with a remote label."""
        return {r["metric"]["remote"]: float(r["value"][1]) for r in self.query(expr)}


def dashboard_queries() -> list[str]:
    """Every PromQL expression of the dashboard, with Grafana's variables filled in."""
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [a["expr"] for a in dashboard["annotations"]["list"] if "expr" in a]
    fill = {"$__rate_interval": "5s", "$__range": "1m", "$job": ".*", "$instance": ".*"}
    out = []
    for expr in exprs:
        for var, value in fill.items():
            expr = expr.replace(var, value)
        out.append(expr.replace("$remote", ".*"))
    assert all("$" not in e for e in out), [e for e in out if "$" in e]
    return out


def test_prometheus_sees_sessions_up_then_one_down(tmp_path: Path, processes: Processes) -> None:
    prometheus_bin = require_tool("prometheus")
    port_a, port_b, port_prom = free_port(), free_port(), free_port()
    assert len({port_a, port_b, port_prom}) == 3
    config = tmp_path / "prometheus.yml"
    config.write_text(CONFIG.format(rules=RULES, port_a=port_a, port_b=port_b))

    common = ["-r", "100", "-t", "100", "-m", "3", "--log-format", "json"]
    instance_a = f"127.0.0.1:{port_a}"
    processes.start(
        "a",
        [sys.executable, "-m", "aiobfd", A, B, *common, "--metrics-port", str(port_a),
         "--control-socket", str(tmp_path / "a.sock")],
    )  # fmt: skip
    b = processes.start(
        "b",
        [sys.executable, "-m", "aiobfd", B, A, *common, "--metrics-port", str(port_b),
         "--control-socket", str(tmp_path / "b.sock")],
    )  # fmt: skip
    processes.start(
        "prometheus",
        [prometheus_bin, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port_prom}", "--log.level=warn"],
    )  # fmt: skip
    prom = Prometheus(port_prom)
    wait_for("Prometheus to be ready", prom.ready, processes, timeout=30)

    # Both sessions Up, each seen from its own daemon.
    def both_up() -> bool:
        up = {(r["metric"]["instance"], r["metric"]["remote"]): r["value"][1]
              for r in prom.query('aiobfd_session_up{job="aiobfd"}')}  # fmt: skip
        return up == {(instance_a, B): "1", (f"127.0.0.1:{port_b}", A): "1"}

    wait_for("both sessions Up in Prometheus", both_up, processes, timeout=30)
    assert prom.values(f'aiobfd_session_detection_time_seconds{{instance="{instance_a}"}}') in (
        {B: 0.3},
        {B: 3.0},  # still the slow rate of the handshake in the first scrape
    )
    assert prom.query('aiobfd_build_info{job="aiobfd"}')

    # Every dashboard query evaluates, and the rules load and evaluate.
    for expr in dashboard_queries():
        prom.query(expr)

    def rules_evaluated() -> bool:
        groups = http_json(f"{prom.base}/api/v1/rules")["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return len(rules) >= 4 and all(r["health"] == "ok" for r in rules)

    wait_for("the alerting rules to evaluate", rules_evaluated, processes, timeout=15)

    # Kill one daemon: no AdminDown, so the other times out.
    b.send_signal(signal.SIGKILL)
    b.wait(timeout=5)
    wait_for(
        "the remaining session Down in Prometheus",
        lambda: prom.values(f'aiobfd_session_up{{instance="{instance_a}"}}') == {B: 0.0},
        processes,
        timeout=20,
    )
    assert prom.values(f'aiobfd_session_local_diag{{instance="{instance_a}"}}') == {B: 1.0}
    assert prom.values(f'aiobfd_session_state{{instance="{instance_a}",state="down"}}') == {B: 1.0}
    assert prom.values(f'aiobfd_session_detection_expiries_total{{instance="{instance_a}"}}') == {
        B: 1.0
    }
    wait_for(
        "the killed daemon's target down",
        lambda: (
            [r["value"][1] for r in prom.query(f'up{{instance="127.0.0.1:{port_b}"}}')] == ["0"]
        ),
        processes,
        timeout=15,
    )

    def alert_pending() -> bool:
        alerts = http_json(f"{prom.base}/api/v1/alerts")["data"]["alerts"]
        return any(
            a["labels"]["alertname"] == "BFDSessionDown"
            and a["labels"].get("instance") == instance_a
            and a["labels"]["remote"] == B
            for a in alerts
        )

    wait_for("BFDSessionDown pending", alert_pending, processes, timeout=15)

    # The surviving daemon's log: one JSON object per line, the expiry with its fields.
    a = processes.procs["a"]
    a.send_signal(signal.SIGTERM)
    assert a.wait(timeout=5) == 0
    records = [json.loads(line) for line in processes.output("a").splitlines() if line]
    expiry = [r for r in records if r.get("diag") == 1 and r.get("old_state") == "up"]
    assert len(expiry) == 1, records
    assert expiry[0]["detect_time_ms"] == 300.0
    assert expiry[0]["ms_since_last_packet"] >= 300.0
    assert any(
        re.search(r"metrics on http://127\.0\.0\.1:\d+/metrics", r["message"]) for r in records
    )
