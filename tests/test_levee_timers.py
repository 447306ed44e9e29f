"""
Tests for the relay's timing (L{beryl.levee.channel.LeveeRelay}): the
consolidated server noop and the eviction of silent writers on a fake
clock, and deliveries held until the store's writes are durable.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from beryl.levee.store import InMemoryDocumentStore
from tests.test_levee_channel import DocumentClient, Relay, connect_payload, op


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


class SlowStore(InMemoryDocumentStore):
    """A store whose writes become durable only when the test says so."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: Deferred[None] | None = None

    def append(self, *args: Any) -> None:
        """Append, and hold the write until L{commit}."""
        super().append(*args)
        if self.pending is None:
            self.pending = Deferred()

    def written(self) -> Deferred[None] | None:  # type: ignore[override]
        """The write being held, if any."""
        return self.pending

    def commit(self) -> None:
        """Make every held write durable."""
        pending, self.pending = self.pending, None
        assert pending is not None
        pending.callback(None)


class DurableDeliveryTests(SynchronousTestCase):
    """Ops reach clients only once the store has them on disk."""

    def test_ops_wait_for_the_write(self) -> None:
        """Nothing is pushed before the write commits; then everything, in order."""
        store = SlowStore()
        relay = Relay(store=store)
        alice = relay.client()
        alice.push("connect_document", connect_payload())
        self.assertEqual(alice.collect(), [])
        store.commit()
        self.assertEqual(
            [event for event, _ in alice.collect()],
            ["signal", "op", "connect_document_success"],
        )
        alice.client_id = alice.events("connect_document_success")[0]["clientId"]
        alice.submit(op(1, 1, contents="one"))
        alice.submit(op(2, 1, contents="two"))
        alice.push(
            "submitSignal", {"clientId": alice.client_id, "contentBatches": ["s"]}
        )
        self.assertEqual(alice.collect(), [])
        store.commit()
        self.assertEqual(
            [
                (e, p["op"][0]["contents"] if e == "op" else p["content"])
                for e, p in alice.collect()
            ],
            [("op", "one"), ("op", "two"), ("signal", "s")],
        )
