"""BfdCollector: one daemon's families for ``prometheus_client``, and for the daemon's renderer.

:meth:`BfdCollector.collect` turns every family of :func:`~.families.families`
into a ``prometheus_client`` metric family: register the collector in any
registry and ``generate_latest`` (text or OpenMetrics) exports it.
:meth:`BfdCollector.render_steps` hands the same families to the step-wise
renderer of :mod:`.exposition`, which the daemon's endpoint serves.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TypeVar

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ..engine import Daemon, Peer
from .exposition import histogram_buckets, render_steps
from .families import (
    SESSION_LABELS,
    Histogram,
    Labelled,
    Scalar,
    StateChanges,
    families,
    label_values,
    session_label_values,
)

Source = TypeVar("Source")


class BfdCollector(Collector):
    """Reads one daemon's sessions and counters when Prometheus scrapes.

    :meth:`collect` serves ``prometheus_client`` and may run in any thread: it
    only reads plain attributes and copies dicts.  :meth:`render_steps` is the
    daemon's own renderer and runs in the event loop's thread.
    """

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.changes = StateChanges(daemon)
        self.families = families(self.changes)

    def _peers(self) -> list[Peer]:
        """The sessions now, forgetting the transitions of those that are gone."""
        daemon = self.daemon
        peers = list(daemon.peers.values())
        self.changes.keep_only(daemon.peers)
        return peers

    # ------------------------------------------------ prometheus_client API

    def describe(self) -> list[Metric]:
        return []  # no collect() at registration

    def collect(self) -> Iterator[Metric]:
        daemon = self.daemon
        for family in self.families.daemon:
            if isinstance(family, Histogram):
                buckets, total_sum = histogram_buckets(family.get(daemon))
                yield HistogramMetricFamily(
                    family.name, family.help, buckets=buckets, sum_value=total_sum
                )
            else:
                yield _metric(family, [daemon], [[]], [])
        peers = self._peers()
        labels = [session_label_values(p) for p in peers]
        for session_family in self.families.session:
            yield _metric(session_family, peers, labels, list(SESSION_LABELS))

    # ------------------------------------------------ the daemon's renderer

    def render(self) -> str:
        """Everything in the Prometheus text format (version 0.0.4), at once."""
        out: list[str] = []
        for _ in self.render_steps(out):
            pass
        return "".join(out)

    def render_steps(self, out: list[str]) -> Iterator[None]:
        """Append the text format to ``out``, yielding after every slice of work
        (see :func:`.exposition.render_steps`)."""
        yield from render_steps(self.families, self.daemon, self._peers(), out)


def _metric(
    family: Scalar[Source] | Labelled[Source],
    sources: list[Source],
    source_labels: list[list[str]],
    source_label_names: list[str],
) -> Metric:
    """``family`` read from each source; the series of a source carry its
    ``source_labels`` (values of ``source_label_names``) before the family's own."""
    names = source_label_names
    if isinstance(family, Scalar):
        metric = _empty(family.kind, family.name, family.help, names)
        for source, values in zip(sources, source_labels, strict=True):
            value = family.get(source)
            if value is not None:
                metric.add_metric(values, value)
        return metric
    if family.kind == "info":  # its value is its labels
        info = InfoMetricFamily(family.name.removesuffix("_info"), family.help, labels=names)
        for source, values in zip(sources, source_labels, strict=True):
            for key, _ in family.get(source):
                info.add_metric(values, dict(zip(family.labels, label_values(key), strict=True)))
        return info
    metric = _empty(family.kind, family.name, family.help, [*names, *family.labels])
    for source, values in zip(sources, source_labels, strict=True):
        for key, value in family.get(source):
            metric.add_metric([*values, *label_values(key)], value)
    return metric


def _empty(
    kind: str, name: str, doc: str, labels: list[str]
) -> CounterMetricFamily | GaugeMetricFamily:
    if kind == "counter":
        return CounterMetricFamily(name, doc, labels=labels)
    return GaugeMetricFamily(name, doc, labels=labels)
