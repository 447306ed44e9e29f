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

_HANDLER_BITS = tuple(range(12, 33, 2))

HANDLER_BUCKETS: tuple[float, ...] = tuple(2**bits / 1e9 for bits in _HANDLER_BITS)
"""Upper bounds, in seconds, of the handler latency histogram's buckets:
powers of four nanoseconds from 4.096 us to 4.29 s, so that a duration
finds its bucket with one integer operation
(L{Durations<beryl.telemetry.Durations>}), cheap enough for every
message."""


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
        self._durations = events.measure_durations()
        events.on(telemetry.SocketConnected, self._connected)
        events.on(telemetry.SocketClosed, self._closed)
        events.on(telemetry.ChannelJoined, self._joined)
        events.on(telemetry.JoinFailed, self._join_failed)
        events.on(telemetry.ChannelLeft, self._left)
        events.on(telemetry.ChannelCrashed, self._crashed)
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
        durations = self._durations
        cumulative: list[tuple[str, float]] = [
            (repr(bound), durations.at_most(bits))
            for bound, bits in zip(HANDLER_BUCKETS, _HANDLER_BITS, strict=True)
        ]
        cumulative.append(("+Inf", sum(durations.counts)))
        yield HistogramMetricFamily(
            "beryl_handler_seconds",
            "Time application callbacks (join, handle_in, handle_info) took.",
            buckets=cumulative,
            sum_value=durations.total_ns / 1e9,
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
