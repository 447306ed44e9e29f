"""
Tests for L{beryl.health}: the C{/health} and C{/ready} probes.
"""

from __future__ import annotations

import orjson
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.test.requesthelper import DummyRequest

from beryl.health import Readiness, health_resource, ready_resource


def probe(resource: Resource) -> tuple[int, dict[str, object]]:
    """GET a probe: its status code and JSON body."""
    request = DummyRequest([b""])
    body = resource.render(request)
    assert isinstance(body, bytes)
    content_type = request.responseHeaders.getRawHeaders(b"content-type")
    assert content_type == [b"application/json"], content_type
    return request.responseCode or 200, orjson.loads(body)


class HealthTests(SynchronousTestCase):
    """
    The liveness and readiness probes.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.peers = 0
        self.readiness = Readiness(
            self.clock, expected_peers=2, peers_up=lambda: self.peers, grace_period=30
        )
        self.ready = ready_resource(self.readiness)

    def test_health(self) -> None:
        """/health answers 200 with a JSON status."""
        self.assertEqual(probe(health_resource()), (200, {"status": "ok"}))

    def test_not_listening(self) -> None:
        """/ready is 503 until the node listens."""
        code, body = probe(self.ready)
        self.assertEqual((code, body["status"]), (503, "starting"))

    def test_waits_for_peers(self) -> None:
        """/ready waits for the configured peers, then says ready."""
        self.readiness.mark_listening()
        code, body = probe(self.ready)
        self.assertEqual((code, body["status"]), (503, "waiting for peers"))
        self.peers = 2
        code, body = probe(self.ready)
        self.assertEqual((code, body["status"], body["peers_up"]), (200, "ready", 2))

    def test_grace_period(self) -> None:
        """Past the grace period the node is ready without its peers."""
        self.readiness.mark_listening()
        self.clock.advance(30)
        self.assertEqual(probe(self.ready)[0], 200)

    def test_draining(self) -> None:
        """/ready is 503 while draining, whatever else holds."""
        self.readiness.mark_listening()
        self.peers = 2
        self.readiness.draining = True
        code, body = probe(self.ready)
        self.assertEqual((code, body["status"]), (503, "draining"))
