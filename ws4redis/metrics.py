"""Prometheus metrics of this process's websocket side.

The counts are kept by the core and the hubs (:mod:`ws4redis.core.stats`); this module
turns them into metrics when Prometheus scrapes, so counting costs nothing more than an
addition. ``runwebsocket --metrics [addr:]port`` serves them (worker ``n`` of ``--workers``
on ``port + n``); under the other runtimes route :func:`view` in ``urls.py`` and let only
your Prometheus reach it. Names and meanings: ``docs/reference.md#metrics``.
"""

from __future__ import annotations

from collections.abc import Iterator

from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ws4redis.core.stats import STATS, Stats

SCALARS = [
    (GaugeMetricFamily, "ws4redis_connections", "Websockets open", "connections"),
    (GaugeMetricFamily, "ws4redis_channels", "Channels subscribed in Redis", "channels"),
    (GaugeMetricFamily, "ws4redis_subscriptions", "Channels of open websockets", "subscriptions"),
    (CounterMetricFamily, "ws4redis_redis_messages", "Messages from Redis", "messages"),
    (CounterMetricFamily, "ws4redis_deliveries", "Messages handed to websockets", "deliveries"),
    (CounterMetricFamily, "ws4redis_sent_bytes", "Bytes handed to websockets", "bytes_out"),
    (CounterMetricFamily, "ws4redis_redis_reconnects", "Redis connections back", "reconnects"),
    (CounterMetricFamily, "ws4redis_redis_outage_seconds", "Redis down (ended)", "outage_seconds"),
    (CounterMetricFamily, "ws4redis_redis_unreadable", "Unreadable messages skipped", "unreadable"),
    (CounterMetricFamily, "ws4redis_reader_errors", "Redis reader errors", "reader_errors"),
    (GaugeMetricFamily, "ws4redis_publish_queue", "Client messages to publish", "publish_waiting"),
    (GaugeMetricFamily, "ws4redis_publish_queue_bytes", "Their bytes", "publish_waiting_bytes"),
]
"""Metric class, name, help text and :class:`~ws4redis.core.stats.Stats` attribute."""

LABELLED = [
    ("ws4redis_handshakes", "Opening requests by answer status (101: opened)", "status"),
    ("ws4redis_disconnects", "Websockets the server closed, by close code", "code"),
]


class StatsCollector(Collector):
    """Reads its :class:`~ws4redis.core.stats.Stats` (the process's, by default) at each
    scrape: the same counts the admin's live page reports."""

    def __init__(self, stats: Stats = STATS) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self.stats
        for family, name, text, attribute in SCALARS:
            yield family(name, text, getattr(stats, attribute))
        for (name, text, label), counts in zip(
            LABELLED, (stats.handshakes, stats.closes), strict=True
        ):
            metric = CounterMetricFamily(name, text, labels=[label])
            for key, count in sorted(counts.items()):
                metric.add_metric([str(key)], count)
            yield metric


COLLECTOR = StatsCollector()
REGISTRY.register(COLLECTOR)  # with the process and garbage-collector metrics


def serve(host: str, port: int) -> None:
    """Serve the metrics over HTTP on ``host:port`` from a thread of this process."""
    start_http_server(port, host)


def view(request: HttpRequest) -> HttpResponse:
    """The metrics as a Django view, for runtimes without ``--metrics``."""
    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)
