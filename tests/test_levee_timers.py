"""
Tests for the relay's timers (L{beryl.levee.channel.LeveeRelay}): the
consolidated server noop and the eviction of silent writers, on a fake
clock.
"""

from __future__ import annotations

import json

from twisted.trial.unittest import SynchronousTestCase

from tests.test_levee_channel import DocumentClient, Relay, op


class TimerTests(SynchronousTestCase):
    """Deli's noop consolidation and idle-client eviction through the channel."""

    def setUp(self) -> None:
        self.relay = Relay()
        self.alice = self.relay.client()
        self.alice.connect()
        self.bob = self.relay.client()
        self.bob.connect(user="bob")

    def noop(self, client: DocumentClient, csn: int, rsn: int) -> None:
        """Submit a null-contents noop op."""
        client.submit(op(csn, rsn, type="noop") | {"contents": None})

    def test_consolidated_noop(self) -> None:
        """Client noops that move the MSN yield one server noop after the delay."""
        self.noop(self.alice, 1, 2)
        self.noop(self.bob, 1, 2)
        self.assertEqual(self.bob.ops()[-1]["type"], "join")
        self.relay.clock.advance(0.25)
        noops = [o for o in self.bob.ops() if o["type"] == "noop"]
        self.assertEqual(len(noops), 1)
        self.assertEqual(
            (noops[0]["clientId"], noops[0]["minimumSequenceNumber"]), (None, 2)
        )
        self.relay.clock.advance(10)
        self.assertEqual(len([o for o in self.alice.ops() if o["type"] == "noop"]), 1)

    def test_silent_writer_evicted(self) -> None:
        """A writer silent past the timeout is evicted; one that keeps sending stays."""
        for _ in range(12):
            self.relay.clock.advance(30)
            self.bob.push(
                "noop", {"clientId": self.bob.client_id, "referenceSequenceNumber": 2}
            )
        leaves = [o for o in self.bob.ops() if o["type"] == "leave"]
        self.assertEqual(
            [json.loads(o["data"]) for o in leaves], [self.alice.client_id]
        )
        self.assertIn(leaves[0], self.alice.ops())
        self.assertEqual(
            list(self.relay.relay.connected_clients("acme", "doc")),
            [self.bob.client_id],
        )
        self.alice.submit(op(1, 2))
        self.assertEqual(
            self.alice.nacks()[-1]["content"]["message"], "Nonexistent client"
        )

    def test_timers_stop_with_session(self) -> None:
        """When every client has left, no timer is left pending."""
        self.noop(self.alice, 1, 2)
        self.alice.socket.disconnect()
        self.bob.socket.disconnect()
        self.assertEqual(self.relay.clock.getDelayedCalls(), [])
