"""
Operating a real C{twistd beryl}: Prometheus metrics that move with real
traffic, the C{/health} and C{/ready} probes, and the graceful drain on
SIGTERM.
"""

from __future__ import annotations

import signal
import time
import urllib.error
import urllib.request
from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families
from twisted.trial.unittest import SynchronousTestCase

from tests.interop.harness import (
    BerylServer,
    HandshakeRefused,
    RawWebSocket,
    free_port,
    start_server,
    unique_topic,
)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def get(port: int, path: str) -> tuple[int, bytes, str]:
    """GET a path on loopback: status, body and content type."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read(), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as error:
        return error.code, error.read(), error.headers.get("Content-Type", "")


def scrape(port: int) -> Samples:
    """One scrape of C{/metrics}: every sample by name and labels."""
    status, body, content_type = get(port, "/metrics")
    assert status == 200, (status, body[:200])
    assert content_type.startswith("text/plain"), content_type
    samples: Samples = {}
    for family in text_string_to_metric_families(body.decode("utf-8")):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def answer(ws: RawWebSocket, message: list[Any]) -> Any:
    """Send a V2 message and return its reply, skipping pushes before it."""
    ws.send_json(message)
    while True:
        received = ws.recv_json()
        if received[1] == message[1] and received[3] == "phx_reply":
            return received


def joined(port: int, topic: str, user: str) -> RawWebSocket:
    """A raw V2 socket joined to a demo room as C{user}."""
    ws = RawWebSocket.connect(port)
    reply = ws.request(["1", "1", topic, "phx_join", {"user": user}])
    assert reply[3] == "phx_reply" and reply[4]["status"] == "ok", reply
    return ws


class MetricsTests(SynchronousTestCase):
    """
    C{/metrics} during real traffic.
    """

    def test_numbers_move(self) -> None:
        """
        Joining, pushing and broadcasting move the socket, channel, join,
        message, byte, broadcast, presence and handler metrics; topics never
        appear as labels.
        """
        server = start_server(self)
        before = scrape(server.port)
        topic = unique_topic("room")
        ws = joined(server.port, topic, "alice")
        self.addCleanup(ws.close)
        ws.recv_json()  # presence_state
        for ref in range(2, 12):
            ws.request(["1", str(ref), topic, "ping", {"n": ref}])
        ws.send_json(["1", "20", topic, "new_msg", {"body": "hi"}])
        ws.heartbeat("21")
        after = scrape(server.port)

        def moved(name: str, labels: tuple[tuple[str, str], ...] = ()) -> float:
            return after.get((name, labels), 0) - before.get((name, labels), 0)

        self.assertEqual(after["beryl_sockets", (("transport", "websocket"),)], 1)
        self.assertEqual(after["beryl_channels", (("route", "room:*"),)], 1)
        self.assertEqual(
            moved("beryl_joins_total", (("result", "ok"), ("route", "room:*"))), 1
        )
        self.assertGreaterEqual(moved("beryl_messages_in_total"), 13)
        self.assertGreaterEqual(moved("beryl_messages_out_total"), 13)
        self.assertGreater(moved("beryl_bytes_out_total"), 13 * 20)
        self.assertGreaterEqual(
            moved("beryl_broadcasts_total", (("origin", "local"),)), 1
        )
        self.assertEqual(after["beryl_presence_entries", ()], 1)
        self.assertGreaterEqual(moved("beryl_handler_seconds_count"), 12)
        self.assertNotIn(topic, repr(after))

    def test_separate_port(self) -> None:
        """
        With C{--metrics-port}, C{/metrics} is served there and not on the
        client port.
        """
        metrics_port = free_port()
        server = start_server(
            self, "--metrics-port", f"tcp:{metrics_port}:interface=127.0.0.1"
        )
        ws = RawWebSocket.connect(server.port)
        self.addCleanup(ws.close)
        ws.heartbeat("1")
        samples = scrape(metrics_port)
        self.assertEqual(samples["beryl_sockets", (("transport", "websocket"),)], 1)
        self.assertGreaterEqual(samples["beryl_messages_in_total", ()], 1)
        self.assertEqual(get(server.port, "/metrics")[0], 404)

    def test_no_metrics(self) -> None:
        """C{--no-metrics} serves no C{/metrics}."""
        server = start_server(self, "--no-metrics")
        self.assertEqual(get(server.port, "/metrics")[0], 404)


class ProbeTests(SynchronousTestCase):
    """
    C{/health} and C{/ready}.
    """

    def test_probes(self) -> None:
        """A listening single node is healthy and ready, in JSON."""
        server = start_server(self)
        status, body, content_type = get(server.port, "/health")
        self.assertEqual((status, orjson.loads(body)), (200, {"status": "ok"}))
        self.assertEqual(content_type, "application/json")
        status, body, _ = get(server.port, "/ready")
        self.assertEqual((status, orjson.loads(body)["status"]), (200, "ready"))

    def test_waits_for_peers(self) -> None:
        """
        A node told of a peer that is not there is not ready until the
        grace period passes.
        """
        server = start_server(
            self,
            "--cluster-port",
            f"tcp:{free_port()}:interface=127.0.0.1",
            "--peers",
            f"127.0.0.1:{free_port()}",
            "--ready-grace",
            "3",
        )
        status, body, _ = get(server.port, "/ready")
        details: dict[str, Any] = orjson.loads(body)
        self.assertEqual((status, details["status"]), (503, "waiting for peers"))
        self.assertEqual((details["peers_up"], details["peers_expected"]), (0, 1))
        deadline = time.monotonic() + 30
        while get(server.port, "/ready")[0] != 200:
            self.assertLess(time.monotonic(), deadline, "never became ready")
            time.sleep(0.2)


class DrainTests(SynchronousTestCase):
    """
    SIGTERM with C{--drain-seconds}.
    """

    def test_drain(self) -> None:
        """
        On SIGTERM the node is at once not ready and refuses new sockets
        (503) while open sockets keep working; after the drain they are
        closed with 1001 and the process exits.
        """
        server: BerylServer = start_server(self, "--drain-seconds", "4")
        topic = unique_topic("room")
        ws = joined(server.port, topic, "bob")
        self.addCleanup(ws.close)
        ws.recv_json()  # presence_state
        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while get(server.port, "/ready")[0] != 503:
            self.assertLess(time.monotonic(), deadline, "/ready never said 503")
            time.sleep(0.05)
        self.assertEqual(
            orjson.loads(get(server.port, "/ready")[1])["status"], "draining"
        )
        with self.assertRaises(HandshakeRefused) as refused:
            RawWebSocket.connect(server.port)
        self.assertEqual(refused.exception.status, 503)
        reply = answer(ws, ["1", "2", topic, "ping", {"still": "here"}])
        self.assertEqual(reply[4], {"status": "ok", "response": {"still": "here"}})
        code, reason, _ = ws.recv_close(timeout=20)
        self.assertEqual((code, reason), (1001, "server shutting down"))
        # twistd ends by the signal it was stopped with, as a process should.
        self.assertIn(server.process.wait(20), (0, -signal.SIGTERM))
        self.assertNotIn("Traceback", server.log())
