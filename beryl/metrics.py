"""
Prometheus metrics for one node.

The hot paths (every inbound message, every delivery) only add to plain
integers in a L{Counters}; the rarer events (sockets, joins, handler
durations, presence diffs) arrive as L{beryl.telemetry} events.  Nothing is
formatted until Prometheus scrapes: L{NodeMetrics} is a custom collector
that turns the integers into metric families at that moment, and
C{prometheus_client} writes the exposition format.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from typing import Callable, Iterator

from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from twisted.web.resource import Resource
from twisted.web.server import Request

from beryl import telemetry
from beryl.counters import Counters

__all__ = ["HANDLER_BUCKETS", "NodeMetrics", "metrics_resource"]

HANDLER_BUCKETS: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
"""Upper bounds, in seconds, of the handler latency histogram's buckets."""


class NodeMetrics:
    """
    A Prometheus collector for one node: it observes the node's telemetry
    and reads its L{Counters} and gauges when scraped.

    @ivar counters: the integers the hot paths add to.
    """

    def __init__(
        self,
        events: telemetry.Telemetry,
        counters: Counters,
        *,
        presence_entries: Callable[[], int] = lambda: 0,
        peers_up: Callable[[], int] = lambda: 0,
    ) -> None:
        self.counters = counters
        self._presence_entries = presence_entries
        self._peers_up = peers_up
        self._sockets: Counter[str] = Counter()
        self._channels: Counter[str] = Counter()
        self._joins: Counter[tuple[str, str]] = Counter()
        self._crashes: Counter[str] = Counter()
        self._presence_diffs = 0
        self._buckets = [0] * (len(HANDLER_BUCKETS) + 1)
        self._handler_sum = 0.0
        events.on(telemetry.SocketConnected, self._connected)
        events.on(telemetry.SocketClosed, self._closed)
        events.on(telemetry.ChannelJoined, self._joined)
        events.on(telemetry.JoinFailed, self._join_failed)
        events.on(telemetry.ChannelLeft, self._left)
        events.on(telemetry.ChannelCrashed, self._crashed)
        events.on_handler_finished(self._handler_finished)
        events.on(telemetry.PresenceChanged, self._presence_changed)

    # Telemetry observers

    def _connected(self, event: telemetry.SocketConnected) -> None:
        self._sockets[event.transport] += 1

    def _closed(self, event: telemetry.SocketClosed) -> None:
        self._sockets[event.transport] -= 1

    def _joined(self, event: telemetry.ChannelJoined) -> None:
        self._channels[event.route] += 1
        self._joins[event.route, "ok"] += 1

    def _join_failed(self, event: telemetry.JoinFailed) -> None:
        self._joins[event.route, "crash" if event.crashed else "error"] += 1

    def _left(self, event: telemetry.ChannelLeft) -> None:
        self._channels[event.route] -= 1

    def _crashed(self, event: telemetry.ChannelCrashed) -> None:
        self._crashes[event.route] += 1

    def _handler_finished(self, route: str, callback: str, seconds: float) -> None:
        self._buckets[bisect_left(HANDLER_BUCKETS, seconds)] += 1
        self._handler_sum += seconds

    def _presence_changed(self, event: telemetry.PresenceChanged) -> None:
        self._presence_diffs += 1

    # The collector

    def collect(self) -> Iterator[Metric]:
        """
        The node's metric families, built from its numbers now.
        """
        c = self.counters
        sockets = GaugeMetricFamily(
            "beryl_sockets", "Open client sockets.", labels=["transport"]
        )
        for transport, count in sorted(self._sockets.items()):
            sockets.add_metric([transport], count)
        yield sockets
        channels = GaugeMetricFamily(
            "beryl_channels",
            "Joined channels, by route pattern.",
            labels=["route"],
        )
        for route, count in sorted(self._channels.items()):
            channels.add_metric([route], count)
        yield channels
        joins = CounterMetricFamily(
            "beryl_joins",
            "Channel joins, by route pattern and result (ok, error, crash).",
            labels=["route", "result"],
        )
        for (route, result), count in sorted(self._joins.items()):
            joins.add_metric([route, result], count)
        yield joins
        crashes = CounterMetricFamily(
            "beryl_channel_crashes",
            "Joined channels whose callback raised, by route pattern.",
            labels=["route"],
        )
        for route, count in sorted(self._crashes.items()):
            crashes.add_metric([route], count)
        yield crashes
        yield CounterMetricFamily(
            "beryl_messages_in", "Messages received from clients.", c.messages_in
        )
        yield CounterMetricFamily(
            "beryl_messages_out",
            "Messages sent to clients, each broadcast delivery counted.",
            c.messages_out,
        )
        yield CounterMetricFamily(
            "beryl_bytes_out", "Bytes of messages sent to clients.", c.bytes_out
        )
        broadcasts = CounterMetricFamily(
            "beryl_broadcasts",
            "Broadcasts published here (local) or received from other nodes (remote).",
            labels=["origin"],
        )
        broadcasts.add_metric(["local"], c.broadcasts_local)
        broadcasts.add_metric(["remote"], c.broadcasts_remote)
        yield broadcasts
        yield GaugeMetricFamily(
            "beryl_presence_entries",
            "Tracked presences this node knows, from every node.",
            self._presence_entries(),
        )
        yield CounterMetricFamily(
            "beryl_presence_diffs", "Presence diffs published.", self._presence_diffs
        )
        yield GaugeMetricFamily(
            "beryl_cluster_peers_up", "Cluster peers reachable now.", self._peers_up()
        )
        cluster_bytes = CounterMetricFamily(
            "beryl_cluster_bytes",
            "Bytes on cluster links, by direction.",
            labels=["direction"],
        )
        cluster_bytes.add_metric(["in"], c.cluster_bytes_in)
        cluster_bytes.add_metric(["out"], c.cluster_bytes_out)
        yield cluster_bytes
        yield CounterMetricFamily(
            "beryl_slow_clients_dropped",
            "Sockets closed because they read too slowly.",
            c.slow_clients_dropped,
        )
        limits = CounterMetricFamily(
            "beryl_limit_hits", "How often each limit acted.", labels=["limit"]
        )
        for limit, count in sorted(c.limit_hits.items()):
            limits.add_metric([limit], count)
        yield limits
        cumulative: list[tuple[str, float]] = []
        total = 0
        for bound, count in zip(HANDLER_BUCKETS, self._buckets, strict=False):
            total += count
            cumulative.append((repr(bound), total))
        total += self._buckets[-1]
        cumulative.append(("+Inf", total))
        yield HistogramMetricFamily(
            "beryl_handler_seconds",
            "Time application callbacks (join, handle_in, handle_info) took.",
            buckets=cumulative,
            sum_value=self._handler_sum,
        )

    def registry(self) -> CollectorRegistry:
        """
        A registry of its own holding this collector (and no process
        metrics), for L{metrics_resource}.
        """
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        return registry


class _MetricsPage(Resource):
    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        Resource.__init__(self)
        self._registry = registry

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))
        return generate_latest(self._registry)


def metrics_resource(metrics: NodeMetrics) -> Resource:
    """
    The C{/metrics} page: the node's metrics in Prometheus's text format.
    """
    return _MetricsPage(metrics.registry())
