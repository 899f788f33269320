"""The Prometheus text format (version 0.0.4), rendered from the family list a slice at a time.

:func:`render_steps` writes every family of :func:`~.families.families` and
yields after each slice of about :data:`SLICE` samples (or sessions), so the
daemon's endpoint can let the event loop run between slices:

* ``prometheus_client``'s generic encoder costs about 15-20 us a sample on a
  small VM, and 1,000 sessions make about 18,000 samples: 300 ms or more,
  against 20-45 ms rendered here (``bench/metrics_scrape.py``).  Tests hold
  both renderings to the same samples.
* No timer waits for more than a turn of the endpoint: it yields after a
  millisecond of slices, or before the sessions' next wake-up
  (``Daemon.turn``), a slice taking a few hundred microseconds at most with
  10,000 sessions.  Between two slices a session may change, so one scrape is
  not a snapshot of one instant (no scrape ever is).
* A scrape keeps no object per session alive (only strings), so it does not
  feed the cyclic garbage collector, whose full collections would pause the
  loop for tens of milliseconds in a process with thousands of sessions.

The spelling helpers (:func:`format_value`, :func:`histogram_buckets`) serve
:mod:`.collector` too, so both renderings write the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from ..engine import Daemon, Peer
from ..protocol.stats import LatencyHistogram
from .families import (
    SESSION_LABELS,
    DaemonFamily,
    Families,
    Histogram,
    LabelKey,
    Labelled,
    Scalar,
    label_values,
    session_label_values,
)

#: Samples (or sessions) rendered between two chances to yield to the event
#: loop (250 took up to 1.3 ms with 10,000 sessions, out of the caches).
SLICE = 64
#: Sessions a labelled family reads between two checks of that bound (so a
#: slice may pass it by one chunk: 128 samples at most for 4 states a session).
CHUNK = 16


def render_steps(
    families: Families, daemon: Daemon, peers: list[Peer], out: list[str]
) -> Iterator[None]:
    """Append the text format of ``daemon`` and its ``peers`` to ``out``,
    yielding after every slice of work."""
    add = out.append
    for family in families.daemon:
        add(_daemon_text(family, daemon))

    texts: list[str] = []  # each session's label text: strings only, no GC load
    for start in range(0, len(peers), SLICE):
        texts.extend(
            [
                label_text(SESSION_LABELS, session_label_values(p))
                for p in peers[start : start + SLICE]
            ]
        )
        yield

    for each in families.session:
        add(header(each.name, each.kind, each.help))
        if isinstance(each, Scalar):
            yield from _scalar_steps(each, peers, texts, out)
        else:
            yield from _labelled_steps(each, peers, texts, out)


def _daemon_text(family: DaemonFamily, daemon: Daemon) -> str:
    """A daemon-wide family, header and samples (a few lines: no slices)."""
    name = family.name
    if isinstance(family, Histogram):
        buckets, total_sum = histogram_buckets(family.get(daemon))
        lines = [f'{name}_bucket{{le="{le}"}} {total}\n' for le, total in buckets]
        lines.append(f"{name}_sum {format_value(total_sum)}\n{name}_count {buckets[-1][1]}\n")
        return header(name, "histogram", family.help) + "".join(lines)
    head = header(name, family.kind, family.help)
    if isinstance(family, Scalar):
        value = family.get(daemon)
        return head if value is None else f"{head}{name} {format_value(value)}\n"
    labels = family.labels
    return head + "".join(
        [
            f"{name}{{{label_text(labels, label_values(key))}}} {format_value(value)}\n"
            for key, value in family.get(daemon)
        ]
    )


def _scalar_steps(
    family: Scalar[Peer], peers: list[Peer], texts: list[str], out: list[str]
) -> Iterator[None]:
    name, get = family.name, family.get
    for start in range(0, len(peers), SLICE):
        stop = start + SLICE
        out.append(
            "".join(
                [
                    f"{name}{{{text}}} {format_value(v)}\n"
                    for p, text in zip(peers[start:stop], texts[start:stop], strict=True)
                    if (v := get(p)) is not None
                ]
            )
        )
        yield


def _labelled_steps(
    family: Labelled[Peer], peers: list[Peer], texts: list[str], out: list[str]
) -> Iterator[None]:
    name, get = family.name, family.get
    own = _LabelTexts(family.labels)
    lines: list[str] = []
    since = 0  # sessions read since the last yield
    for start in range(0, len(peers), CHUNK):
        stop = start + CHUNK
        lines.extend(
            [
                f"{name}{{{text},{own[key]}}} {format_value(value)}\n"
                for p, text in zip(peers[start:stop], texts[start:stop], strict=True)
                for key, value in get(p)
            ]
        )
        since += CHUNK
        if len(lines) >= SLICE or since >= SLICE:
            out.append("".join(lines))
            lines.clear()
            since = 0
            yield
    out.append("".join(lines))


class _LabelTexts(dict[LabelKey, str]):
    """A labelled family's own label text by label values, made on first use
    (a few distinct values a scrape)."""

    def __init__(self, names: tuple[str, ...]) -> None:
        super().__init__()
        self.names = names

    def __missing__(self, key: LabelKey) -> str:
        text = self[key] = label_text(self.names, label_values(key))
        return text


def header(name: str, kind: str, doc: str) -> str:
    """The HELP and TYPE lines (an ``info`` family is a gauge in this format)."""
    kind = "gauge" if kind == "info" else kind
    return f"# HELP {name} {doc.replace(chr(92), chr(92) * 2)}\n# TYPE {name} {kind}\n"


def label_text(names: tuple[str, ...], values: tuple[str, ...] | list[str]) -> str:
    """``name="value"`` pairs, escaped, joined by commas."""
    return ",".join(f'{n}="{escape(v)}"' for n, v in zip(names, values, strict=True))


def escape(value: str) -> str:
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return value


def format_value(value: float) -> str:
    """A sample value as the text format wants it (Go's spelling of specials)."""
    if type(value) is int:
        return str(value)
    if math.isfinite(value):
        return repr(float(value))
    if math.isnan(value):
        return "NaN"
    return "+Inf" if value > 0 else "-Inf"


def histogram_buckets(hist: LatencyHistogram) -> tuple[list[tuple[str, float]], float]:
    """Cumulative (le, count) pairs and the sum, in seconds.

    The counts are copied first and the total derived from the copy, so the
    buckets stay consistent whatever is recorded meanwhile.
    """
    counts = list(hist.counts)
    buckets: list[tuple[str, float]] = []
    running = 0
    for bound, n in zip(hist.bounds_us, counts, strict=False):
        running += n
        buckets.append((format_value(bound / 1e6), running))
    buckets.append(("+Inf", sum(counts)))
    return buckets, hist.sum_us / 1e6
