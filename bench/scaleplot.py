"""Pictures from bench/scale.py results (matplotlib, PNG): ``python bench/scale.py plot``.

* scale-cpu-sessions.png: CPU of each daemon against the number of sessions, one
  panel per interval of the ``sweep`` runs (solid: user + system, dashed: system).
* scale-side-by-side.png: CPU of ours, FRR's bfdd and aiobfd 0.2 at the issue's
  four points (``side-by-side`` runs).
* scale-detection.png: distribution of detection lateness (our Down event minus
  last packet received minus Detection Time) per run with detection trials.
* scale-curve.png: the ``curve`` runs: CPU of our daemon (both sides ours)
  against sessions, one panel per interval, with the floor (bench/floor.py, one
  system call a packet and batched) measured beside it at each point.

For each (suite, daemon, peer, sessions, interval) the last result in the file counts.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

NAMES = {
    "ours": "aiobfd (this)",
    "ours-uvloop": "aiobfd (this) on uvloop",
    "aiobfd02": "aiobfd 0.2",
    "frr": "FRR bfdd 8.4",
}
COLORS = {"ours": "tab:blue", "ours-uvloop": "tab:cyan", "aiobfd02": "tab:red", "frr": "tab:green"}


def load(path: Path) -> list[dict[str, Any]]:
    latest: dict[tuple[Any, ...], dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        if "error" in r or "dut_cpu" not in r:
            continue
        key = (r.get("suite"), r["dut"], r["peer"], r["sessions"], r["interval_ms"], r["mult"])
        latest[key] = r
    return list(latest.values())


def load_curve(path: Path, suite: str = "curve") -> list[dict[str, Any]]:
    """Every run of a curve suite, daemon and floor (bench/floor.py); all count."""
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            if r.get("suite") == suite and "error" not in r:
                out.append(r)
    return out


def plot_all(
    results_path: Path, out: Path, only: str | None = None, curve_suite: str = "curve"
) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    results = load(results_path)
    out.mkdir(parents=True, exist_ok=True)
    made = []
    for fn in (cpu_sessions, side_by_side, detection, curve):
        if only not in (None, fn.__name__):
            continue
        path = fn(load_curve(results_path, curve_suite) if fn is curve else results, out)
        if path is not None:
            made.append(path)
    return made


def curve(results: list[dict[str, Any]], out: Path) -> Path | None:
    import matplotlib.pyplot as plt

    ours = [r for r in results if r.get("bench") != "floor" and r["peer"] == "ours"]
    floors = [r for r in results if r.get("bench") == "floor"]

    def variant(r: dict[str, Any]) -> str:
        # The call variant on one receive socket (floor.py --rx one, where two
        # sockets a session exceed the descriptor limit) is not the daemon's
        # path: a series of its own.
        return "call-one" if (r["variant"], r.get("rx")) == ("call", "one") else r["variant"]

    # One panel per interval with more than one size (a lone point goes in the table only).
    sizes: dict[int, set[int]] = defaultdict(set)
    for r in ours:
        sizes[r["interval_ms"]].add(r["sessions"])
    intervals = sorted((i for i, ns in sizes.items() if len(ns) > 1), reverse=True)
    if not intervals:
        return None
    fig, axes = plt.subplots(1, len(intervals), figsize=(6 * len(intervals), 4.4), squeeze=False)
    for ax, interval in zip(axes[0], intervals, strict=True):
        series = [
            ("ours (dut)", [r for r in ours if r["interval_ms"] == interval], "dut_cpu", "tab:blue", "o-"),
            ("ours (peer side)", [r for r in ours if r["interval_ms"] == interval], "peer_cpu", "tab:blue", "o:"),
            ("floor, 1 system call a packet", [r for r in floors if r["interval_ms"] == interval and variant(r) == "call"], "host_cpu", "tab:orange", "s-"),
            ("floor, 1 call a packet, one receive socket", [r for r in floors if r["interval_ms"] == interval and variant(r) == "call-one"], "host_cpu", "tab:orange", "D:"),
            ("floor, sendmmsg/recvmmsg", [r for r in floors if r["interval_ms"] == interval and variant(r) == "batch"], "host_cpu", "tab:green", "^-"),
        ]  # fmt: skip
        for label, rows, key, color, style in series:
            if not rows:
                continue
            # A line through the mean at each size, a dot for every run.
            by_n: dict[int, list[float]] = defaultdict(list)
            for r in rows:
                by_n[r["sessions"]].append(100 * r[key])
            xs = sorted(by_n)
            means = [sum(by_n[n]) / len(by_n[n]) for n in xs]
            ax.plot(xs, means, style[1:], color=color, label=label)
            for r in rows:
                ax.plot([r["sessions"]], [100 * r[key]], style[0], color=color, ms=4)
                if r.get("dut_flaps") or r.get("peer_flaps"):
                    ax.plot([r["sessions"]], [100 * r[key]], "x", color="black", ms=11, mew=2)
        ax.set_xlabel("sessions")
        ax.set_ylabel("% of one core (user + system)")
        ax.set_title(f"{interval} ms x3, both sides ours (line: mean of the runs; x: flaps)")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "scale-curve.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _points(results: list[dict[str, Any]]) -> dict[int, dict[str, dict[int, list[Any]]]]:
    """{interval: {daemon: {sessions: [(total, system, flaps), ...]}}} from sweep runs."""
    data: dict[int, dict[str, dict[int, list[Any]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list))
    )
    for r in results:
        if r.get("suite") != "sweep":
            continue
        i, n = r["interval_ms"], r["sessions"]
        data[i][r["dut"]][n].append((r["dut_cpu"], r["dut_cpu_sys"], r.get("dut_flaps", 0)))
        if r["peer"] == "frr" and r["dut"] == "ours":
            # FRR as the peer of our daemon (against aiobfd 0.2 its load follows 0.2's flaps).
            flaps = r.get("peer_flaps", 0)
            data[i]["frr"][n].append((r["peer_cpu"], r["peer_cpu_sys"], flaps))
    return data


def cpu_sessions(results: list[dict[str, Any]], out: Path) -> Path | None:
    import matplotlib.pyplot as plt

    data = _points(results)
    if not data:
        return None
    intervals = sorted(data)
    fig, axes = plt.subplots(1, len(intervals), figsize=(6.5 * len(intervals), 4.6), squeeze=False)
    for ax, interval in zip(axes[0], intervals, strict=True):
        for daemon, by_n in sorted(data[interval].items()):
            ns = sorted(by_n)
            total = [100 * sum(p[0] for p in by_n[n]) / len(by_n[n]) for n in ns]
            system = [100 * sum(p[1] for p in by_n[n]) / len(by_n[n]) for n in ns]
            color = COLORS.get(daemon, "black")
            ax.plot(ns, total, "o-", color=color, label=NAMES.get(daemon, daemon))
            ax.plot(ns, system, "--", color=color, alpha=0.6)
            for n, t in zip(ns, total, strict=True):
                if any(p[2] for p in by_n[n]):
                    ax.plot([n], [t], "x", color="black", markersize=11, mew=2)
        ax.axhline(100, color="grey", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("sessions")
        ax.set_ylabel("% of one core (dashed: system part)")
        ax.set_title(f"CPU against sessions, {interval} ms x3 (x: sessions flapped)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "scale-cpu-sessions.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def side_by_side(results: list[dict[str, Any]], out: Path) -> Path | None:
    import matplotlib.pyplot as plt

    points = [(10, 300), (50, 100), (100, 50), (10, 20)]
    rows = [r for r in results if r.get("suite") == "side-by-side" and r["peer"] == "frr"]
    if not rows:
        return None

    def find(dut: str, n: int, i: int) -> dict[str, Any] | None:
        for r in rows:
            if (r["dut"], r["sessions"], r["interval_ms"]) == (dut, n, i):
                return r
        return None

    series: dict[str, list[float]] = defaultdict(list)
    flaps: dict[str, list[int]] = defaultdict(list)
    duts = [d for d in ("ours", "ours-uvloop", "aiobfd02") if any(r["dut"] == d for r in rows)]
    for n, i in points:
        for d in duts:
            r = find(d, n, i)
            series[d].append(100 * r["dut_cpu"] if r else float("nan"))
            flaps[d].append(r.get("dut_flaps", 0) if r else 0)
        ours = find("ours", n, i)
        series["frr"].append(100 * ours["peer_cpu"] if ours else float("nan"))
        flaps["frr"].append(0)
    names = [*duts[:-1], "frr", duts[-1]] if "aiobfd02" in duts else [*duts, "frr"]
    fig, ax = plt.subplots(figsize=(8.5, 4.6))
    width = 0.8 / len(names)
    for k, d in enumerate(names):
        xs = [j + (k - (len(names) - 1) / 2) * width for j in range(len(points))]
        label = NAMES.get(d, d)
        if any((r := find(d, n, i)) and r.get("dut_core") == "mypyc" for n, i in points):
            label += ", compiled core"  # bench/scale.py --core mypyc
        bars = ax.bar(xs, series[d], width, color=COLORS.get(d), label=label)
        for bar, value, f in zip(bars, series[d], flaps[d], strict=True):
            if value != value:  # no run: nothing to label
                continue
            note = f"{value:.1f}" + (f"\n{f} flaps" if f else "")
            ax.annotate(note, (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=7)  # fmt: skip
    ax.set_xticks(range(len(points)), [f"{n} @ {i} ms x3" for n, i in points])
    top = max((v for values in series.values() for v in values if v == v), default=1.0)
    ax.set_ylim(0, top * 1.18)
    ax.set_ylabel("% of one core (user + system)")
    ax.set_title("Side by side, FRR bfdd as the peer (FRR: as the peer of ours)")
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    path = out / "scale-side-by-side.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def detection(results: list[dict[str, Any]], out: Path) -> Path | None:
    import matplotlib.pyplot as plt

    runs = [r for r in results if (r.get("detection") or {}).get("late_ms")]
    if not runs:
        return None
    runs.sort(key=lambda r: (r["sessions"], -r["interval_ms"], r["dut"]))
    big = max(runs, key=lambda r: (len(r["detection"]["late_ms"]), r["sessions"]))
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 0.9 + 0.42 * max(len(runs), 8)))
    late = big["detection"]["late_ms"]
    ax.hist(late, bins=30, color="tab:blue")
    ax.axvline(2.0, color="red", lw=1, ls="--", label="target: 2 ms")
    det = big["detection"]
    ax.set_title(
        f"{big['sessions']} sessions @ {big['interval_ms']} ms x{big['mult']} "
        f"({big['dut']} vs {big['peer']}),\n{len(late)} trials: "
        f"p50 {det['late_p50_ms']:.2f}, p99 {det['late_p99_ms']:.2f} ms",
        fontsize=9,
    )
    ax.set_xlabel("Down declared after the Detection Time ran out (ms)")
    ax.set_ylabel("trials")
    ax.legend()
    for k, r in enumerate(runs):
        values = r["detection"]["late_ms"]
        bx.plot(values, [k] * len(values), "|", color=COLORS.get(r["dut"], "black"), ms=12)
        bx.plot([r["detection"]["late_p99_ms"]], [k], "o", color="black", ms=4)
    bx.set_yticks(
        range(len(runs)),
        [f"{r['dut']} vs {r['peer']}, {r['sessions']} @ {r['interval_ms']} ms" for r in runs],
        fontsize=8,
    )
    bx.axvline(2.0, color="red", lw=1, ls="--")
    bx.set_xlabel("lateness (ms); dot: p99")
    bx.set_title("Every trial of every run")
    bx.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    path = out / "scale-detection.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
