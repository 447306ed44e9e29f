"""
Tests for L{beryl.metrics}: counters and telemetry rendered at scrape time
in Prometheus's text format.
"""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from beryl import telemetry
from beryl.counters import Counters
from beryl.metrics import NodeMetrics, metrics_resource


def scrape(
    metrics: NodeMetrics,
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The samples of one scrape of C{/metrics}, by name and labels."""
    request = DummyRequest([b""])
    body = metrics_resource(metrics).render(request)
    assert isinstance(body, bytes)
    content_type = request.responseHeaders.getRawHeaders(b"content-type") or [b""]
    assert content_type[0].startswith(b"text/plain"), content_type
    samples = {}
    for family in text_string_to_metric_families(body.decode("utf-8")):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


class MetricsTests(SynchronousTestCase):
    """
    L{NodeMetrics} turns counters and events into metric families.
    """

    def setUp(self) -> None:
        self.events = telemetry.Telemetry()
        self.counters = Counters()
        self.presence = 0
        self.metrics = NodeMetrics(
            self.events,
            self.counters,
            presence_entries=lambda: self.presence,
            peers_up=lambda: 2,
        )

    def test_counters(self) -> None:
        """Plain counters appear as Prometheus counters with their values."""
        self.counters.messages_in += 3
        self.counters.messages_out += 5
        self.counters.bytes_out += 120
        self.counters.broadcasts_local += 1
        self.counters.broadcasts_remote += 2
        self.counters.cluster_bytes_in += 7
        self.counters.slow_clients_dropped += 1
        self.counters.limit_hit("message_rate")
        self.counters.limit_hit("message_rate")
        samples = scrape(self.metrics)
        self.assertEqual(samples["beryl_messages_in_total", ()], 3)
        self.assertEqual(samples["beryl_messages_out_total", ()], 5)
        self.assertEqual(samples["beryl_bytes_out_total", ()], 120)
        self.assertEqual(samples["beryl_broadcasts_total", (("origin", "local"),)], 1)
        self.assertEqual(samples["beryl_broadcasts_total", (("origin", "remote"),)], 2)
        self.assertEqual(
            samples["beryl_cluster_bytes_total", (("direction", "in"),)], 7
        )
        self.assertEqual(samples["beryl_slow_clients_dropped_total", ()], 1)
        self.assertEqual(
            samples["beryl_limit_hits_total", (("limit", "message_rate"),)], 2
        )
        self.assertEqual(samples["beryl_cluster_peers_up", ()], 2)

    def test_gauges_read_at_scrape(self) -> None:
        """Gauges read their source when scraped, not before."""
        self.presence = 4
        self.assertEqual(scrape(self.metrics)["beryl_presence_entries", ()], 4)
        self.presence = 1
        self.assertEqual(scrape(self.metrics)["beryl_presence_entries", ()], 1)

    def test_sockets_and_channels(self) -> None:
        """Open sockets by transport and channels by route follow the events."""
        self.events.emit(telemetry.SocketConnected("s1", "websocket"))
        self.events.emit(telemetry.SocketConnected("s2", "longpoll"))
        self.events.emit(telemetry.SocketConnected("s3", "websocket"))
        self.events.emit(telemetry.SocketClosed("s1", "websocket"))
        self.events.emit(telemetry.ChannelJoined("s2", "room:1", "room:*"))
        self.events.emit(telemetry.ChannelJoined("s3", "room:2", "room:*"))
        self.events.emit(telemetry.ChannelLeft("s3", "room:2", "room:*", "leave"))
        self.events.emit(telemetry.JoinFailed("s3", "room:3", "room:*", False))
        self.events.emit(telemetry.JoinFailed("s3", "room:4", "room:*", True))
        samples = scrape(self.metrics)
        self.assertEqual(samples["beryl_sockets", (("transport", "websocket"),)], 1)
        self.assertEqual(samples["beryl_sockets", (("transport", "longpoll"),)], 1)
        self.assertEqual(samples["beryl_channels", (("route", "room:*"),)], 1)
        for result, count in (("ok", 2), ("error", 1), ("crash", 1)):
            self.assertEqual(
                samples["beryl_joins_total", (("result", result), ("route", "room:*"))],
                count,
            )
        self.assertNotIn("room:1", repr(samples))

    def test_handler_histogram(self) -> None:
        """Handler durations fill the histogram's cumulative buckets."""
        for seconds in (0.00005, 0.0003, 0.0003, 3.0):
            self.events.emit(telemetry.HandlerFinished("room:*", "handle_in", seconds))
        samples = scrape(self.metrics)
        # bounds are powers of four nanoseconds: 2**16 ns, 2**20 ns, 2**30 ns
        self.assertEqual(
            samples["beryl_handler_seconds_bucket", (("le", "1.6384e-05"),)], 0
        )
        self.assertEqual(
            samples["beryl_handler_seconds_bucket", (("le", "6.5536e-05"),)], 1
        )
        self.assertEqual(
            samples["beryl_handler_seconds_bucket", (("le", "0.000262144"),)], 1
        )
        self.assertEqual(
            samples["beryl_handler_seconds_bucket", (("le", "0.001048576"),)], 3
        )
        self.assertEqual(
            samples["beryl_handler_seconds_bucket", (("le", "1.073741824"),)], 3
        )
        self.assertEqual(
            samples["beryl_handler_seconds_bucket", (("le", "4.294967296"),)], 4
        )
        self.assertEqual(samples["beryl_handler_seconds_bucket", (("le", "+Inf"),)], 4)
        self.assertEqual(samples["beryl_handler_seconds_count", ()], 4)
        self.assertAlmostEqual(samples["beryl_handler_seconds_sum", ()], 3.00065)
