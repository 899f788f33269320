"""Prometheus metrics, read from the daemon at scrape time.

Nothing is updated on the packet path.  A scrape walks the sessions and reads
the plain counters they keep anyway (:class:`~aiobfd.protocol.session.SessionCounters`),
the drop counts of the session table and the timer-lateness histograms of
:class:`~aiobfd.protocol.stats.TimingStats`.  The one thing sessions do not count, state
transitions by from/to state, is counted here from ``StateChanged`` events.

One room per job:

* :mod:`.families` - the one list of metric families (name, type, help,
  labels, a getter per daemon or per session); adding a metric is one entry.
* :mod:`.collector` - :class:`BfdCollector`, a ``prometheus_client`` collector
  built from that list: register it in any registry and ``generate_latest``
  (text or OpenMetrics) exports it.
* :mod:`.exposition` - the daemon's own renderer of the same list, straight to
  the Prometheus text format, a slice of samples at a time.
* :mod:`.process` - the standard ``process_*`` metrics, the descriptors
  counted without listing them (20,000 of them took 9-23 ms to list).
* :mod:`.http` - the endpoint (:class:`MetricsServer`,
  :func:`start_metrics_server`), served by the daemon's event loop within
  :class:`HttpLimits` (connections, deadlines, sizes).

Names follow the Prometheus conventions (``aiobfd_`` prefix, base units,
``_total`` counters); every per-session series carries ``local``, ``remote``
and ``interface`` (the interface of an IPv6 link-local pair, else empty).
"""

from __future__ import annotations

from .collector import BfdCollector
from .http import (
    DEFAULT_METRICS_ADDRESS,
    DEFAULT_METRICS_PORT,
    HttpLimits,
    MetricsServer,
    start_metrics_server,
)

__all__ = [
    "DEFAULT_METRICS_ADDRESS",
    "DEFAULT_METRICS_PORT",
    "BfdCollector",
    "HttpLimits",
    "MetricsServer",
    "start_metrics_server",
]
