"""
Tests for L{beryl.pubsub.PubSub}.
"""

from __future__ import annotations

from typing import Any

import attrs
import orjson
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from beryl.interfaces import (
    IPubSub,
    ISubscriber,
)
from beryl.pubsub import PubSub
from beryl.testing import FakeNetwork
from beryl.wire import Binary, Payload


@implementer(ISubscriber)
@attrs.define(eq=False)
class Recorder:
    """A subscriber that records what it gets."""

    subscriber_id: str
    accepts_encoded_json: bool = False
    received: list[tuple[str, str, Payload, str | None]] = attrs.field(factory=list)

    def deliver(
        self, topic: str, event: str, payload: Payload, from_id: str | None
    ) -> None:
        self.received.append((topic, event, payload, from_id))


@implementer(ISubscriber)
@attrs.define(eq=False)
class Broken:
    """A subscriber whose deliver always raises."""

    subscriber_id: str = "broken"
    accepts_encoded_json: bool = False

    def deliver(
        self, topic: str, event: str, payload: Payload, from_id: str | None
    ) -> None:
        raise RuntimeError("subscriber failed")


class LocalTests(SynchronousTestCase):
    """
    PubSub on a node of its own.
    """

    def setUp(self) -> None:
        self.pubsub = PubSub(None)

    def test_interface(self) -> None:
        """PubSub provides IPubSub, and a lone node has a name."""
        self.assertTrue(verifyObject(IPubSub, self.pubsub))
        self.assertEqual(self.pubsub.node_name, "local")

    def test_broadcast(self) -> None:
        """A broadcast reaches every subscriber of its topic and no other."""
        one, two, other = Recorder("1"), Recorder("2"), Recorder("3")
        self.pubsub.subscribe("room:1", one)
        self.pubsub.subscribe("room:1", two)
        self.pubsub.subscribe("room:2", other)
        self.pubsub.broadcast("room:1", "msg", {"body": "hi"})
        self.assertEqual(one.received, [("room:1", "msg", {"body": "hi"}, None)])
        self.assertEqual(two.received, one.received)
        self.assertEqual(other.received, [])

    def test_duplicate_subscriptions(self) -> None:
        """Subscribing twice delivers twice; one unsubscribe removes both."""
        one = Recorder("1")
        self.pubsub.subscribe("t", one)
        self.pubsub.subscribe("t", one)
        self.pubsub.broadcast("t", "e", 1)
        self.assertEqual(len(one.received), 2)
        self.assertEqual(self.pubsub.local_subscriber_count("t"), 2)
        self.pubsub.unsubscribe("t", one)
        self.pubsub.unsubscribe("t", one)
        self.pubsub.unsubscribe("never", one)
        self.pubsub.broadcast("t", "e", 2)
        self.assertEqual(len(one.received), 2)
        self.assertEqual(self.pubsub.subscribers("t"), ())
        self.assertEqual(self.pubsub.subscriber_count("t"), 0)

    def test_unsubscribe_keeps_others(self) -> None:
        """Unsubscribing one subscriber leaves the others subscribed."""
        one, two = Recorder("1"), Recorder("2")
        self.pubsub.subscribe("t", one)
        self.pubsub.subscribe("t", two)
        self.pubsub.unsubscribe("t", one)
        self.assertEqual(list(self.pubsub.subscribers("t")), [two])

    def test_broadcast_from(self) -> None:
        """broadcast_from skips the sender and tells everyone the sender."""
        sender, other = Recorder("sock-1"), Recorder("sock-2")
        self.pubsub.subscribe("t", sender)
        self.pubsub.subscribe("t", other)
        self.pubsub.broadcast_from("sock-1", "t", "e", [1])
        self.assertEqual(sender.received, [])
        self.assertEqual(other.received, [("t", "e", [1], "sock-1")])

    def test_raising_subscriber(self) -> None:
        """A subscriber that raises is logged and the others still get it."""
        after = Recorder("after")
        self.pubsub.subscribe("t", Broken())
        self.pubsub.subscribe("t", after)
        self.pubsub.local_broadcast("t", "e", None)
        self.assertEqual(after.received, [("t", "e", None, None)])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_subscribe_during_delivery(self) -> None:
        """A subscriber that subscribes another during delivery is safe."""
        late = Recorder("late")

        @implementer(ISubscriber)
        class Subscribing:
            subscriber_id = "subscribing"
            accepts_encoded_json = False

            def deliver(
                self, topic: str, event: str, payload: Any, from_id: str | None
            ) -> None:
                pubsub.subscribe(topic, late)

        pubsub = self.pubsub
        pubsub.subscribe("t", Subscribing())
        pubsub.broadcast("t", "e", 1)
        self.assertEqual(late.received, [])
        pubsub.broadcast("t", "e", 2)
        self.assertEqual(late.received, [("t", "e", 2, None)])

    def test_direct_broadcast(self) -> None:
        """direct_broadcast to this node delivers; to an unknown node, drops."""
        one = Recorder("1")
        self.pubsub.subscribe("t", one)
        self.pubsub.direct_broadcast("local", "t", "e", 1)
        self.pubsub.direct_broadcast("elsewhere", "t", "e", 2)
        self.assertEqual(one.received, [("t", "e", 1, None)])


class ClusterTests(SynchronousTestCase):
    """
    PubSub over several nodes of a fake network.
    """

    def setUp(self) -> None:
        self.network = FakeNetwork()
        self.clock = Clock()
        self.messaging = {name: self.network.join(name) for name in "abc"}
        self.pubsub = {
            name: PubSub(messaging, clock=self.clock)
            for name, messaging in self.messaging.items()
        }
        # Everyone's (empty) counts from coming up.
        self.network.flush()
        for messaging in self.messaging.values():
            messaging.sent.clear()

    def tearDown(self) -> None:
        for pubsub in self.pubsub.values():
            pubsub.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_one_message_per_node(self) -> None:
        """A broadcast costs one message per remote node, whatever the subscribers."""
        subscribers = {
            name: [Recorder(f"{name}{i}") for i in range(3)] for name in "bc"
        }
        for name, recorders in subscribers.items():
            for recorder in recorders:
                self.pubsub[name].subscribe("t", recorder)
        self.clock.advance(1)
        self.network.flush()
        self.messaging["a"].sent.clear()
        self.pubsub["a"].broadcast("t", "e", {"x": [1, 2]})
        self.assertEqual([node for node, _, _ in self.messaging["a"].sent], ["b", "c"])
        self.network.flush()
        for recorders in subscribers.values():
            for recorder in recorders:
                self.assertEqual(recorder.received, [("t", "e", {"x": [1, 2]}, None)])

    def test_unserialisable_payload_stays_local(self) -> None:
        """A payload that is not JSON is logged as unable to cross, and still delivered on this node."""
        local, remote = Recorder("l"), Recorder("r")
        self.pubsub["a"].subscribe("t", local)
        self.pubsub["b"].subscribe("t", remote)
        self.clock.advance(1)
        self.network.flush()
        self.messaging["a"].sent.clear()
        odd = {"x": object()}
        self.pubsub["a"].broadcast("t", "e", odd)
        self.network.flush()
        self.assertEqual(local.received, [("t", "e", odd, None)])
        self.assertEqual(remote.received, [])
        self.assertEqual(self.messaging["a"].sent, [])

    def test_pre_encoded_payload(self) -> None:
        """Pre-encoded JSON reaches plain subscribers, here and remote, as the value it encodes."""
        local, remote = Recorder("l"), Recorder("r")
        self.pubsub["a"].subscribe("t", local)
        self.pubsub["b"].subscribe("t", remote)
        self.pubsub["a"].broadcast("t", "e", orjson.Fragment(b'{"n":[1,2]}'))
        self.network.flush()
        self.assertEqual(local.received, [("t", "e", {"n": [1, 2]}, None)])
        self.assertEqual(remote.received, [("t", "e", {"n": [1, 2]}, None)])

    def test_big_integers_cross(self) -> None:
        """Integers beyond 64 bits cross to other nodes exactly, as Phoenix's do."""
        remote = Recorder("r")
        self.pubsub["b"].subscribe("t", remote)
        self.pubsub["a"].broadcast("t", "e", {"n": 2**100, "m": -(10**30)})
        self.network.flush()
        self.assertEqual(
            remote.received, [("t", "e", {"n": 2**100, "m": -(10**30)}, None)]
        )

    def test_binary_payload(self) -> None:
        """A Binary payload arrives on other nodes as Binary."""
        remote = Recorder("r")
        self.pubsub["b"].subscribe("t", remote)
        self.pubsub["a"].broadcast("t", "e", Binary(b"\x00\x01\xff"))
        self.network.flush()
        self.assertEqual(remote.received, [("t", "e", Binary(b"\x00\x01\xff"), None)])

    def test_broadcast_from_remote(self) -> None:
        """Remote nodes get the sender id and skip the subscriber with it."""
        same_id, other = Recorder("sock-1"), Recorder("sock-2")
        self.pubsub["b"].subscribe("t", same_id)
        self.pubsub["b"].subscribe("t", other)
        self.pubsub["a"].broadcast_from("sock-1", "t", "e", "x")
        self.network.flush()
        self.assertEqual(same_id.received, [])
        self.assertEqual(other.received, [("t", "e", "x", "sock-1")])

    def test_local_broadcast(self) -> None:
        """local_broadcast sends nothing to other nodes."""
        here, there = Recorder("1"), Recorder("2")
        self.pubsub["a"].subscribe("t", here)
        self.pubsub["b"].subscribe("t", there)
        self.clock.advance(1)
        self.network.flush()
        self.messaging["a"].sent.clear()
        self.pubsub["a"].local_broadcast("t", "e", 1)
        self.network.flush()
        self.assertEqual(self.messaging["a"].sent, [])
        self.assertEqual((len(here.received), len(there.received)), (1, 0))

    def test_direct_broadcast(self) -> None:
        """direct_broadcast reaches the named node only."""
        recorders = {name: Recorder(name) for name in "abc"}
        for name, recorder in recorders.items():
            self.pubsub[name].subscribe("t", recorder)
        self.pubsub["a"].direct_broadcast("c", "t", "e", 1)
        self.pubsub["a"].direct_broadcast("z", "t", "e", 2)
        self.network.flush()
        self.assertEqual(
            {name: len(r.received) for name, r in recorders.items()},
            {"a": 0, "b": 0, "c": 1},
        )

    def test_scopes(self) -> None:
        """PubSubs with different names over the same messaging are isolated."""
        chat_a = PubSub(self.messaging["a"], name="chat", clock=self.clock)
        chat_b = PubSub(self.messaging["b"], name="chat", clock=self.clock)
        self.pubsub["chat-a"], self.pubsub["chat-b"] = chat_a, chat_b
        default_b, chat_recorder = Recorder("1"), Recorder("2")
        self.pubsub["b"].subscribe("t", default_b)
        chat_b.subscribe("t", chat_recorder)
        chat_a.broadcast("t", "e", 1)
        self.network.flush()
        self.assertEqual(default_b.received, [])
        self.assertEqual(chat_recorder.received, [("t", "e", 1, None)])
        self.assertEqual(chat_a.scope, "chat")

    def test_counts(self) -> None:
        """Subscriber counts are reported to peers in batches and add up."""
        self.pubsub["a"].subscribe("t", Recorder("1"))
        self.pubsub["b"].subscribe("t", Recorder("2"))
        self.pubsub["b"].subscribe("t", Recorder("3"))
        self.pubsub["b"].subscribe("u", Recorder("4"))
        self.clock.advance(1)
        # One batched report per peer from each node that changed.
        self.assertEqual(len(self.messaging["b"].sent), 2)
        self.network.flush()
        self.assertEqual(self.pubsub["c"].subscriber_count("t"), 3)
        self.assertEqual(self.pubsub["a"].subscriber_count("t"), 3)
        self.assertEqual(self.pubsub["a"].local_subscriber_count("t"), 1)
        self.assertEqual(self.pubsub["c"].subscriber_count("u"), 1)
        self.pubsub["b"].unsubscribe("u", self.pubsub["b"].subscribers("u")[0])
        self.clock.advance(1)
        self.network.flush()
        self.assertEqual(self.pubsub["c"].subscriber_count("u"), 0)

    def test_counts_node_down_and_up(self) -> None:
        """A node that goes down stops counting; one that comes up is told all counts."""
        self.pubsub["b"].subscribe("t", Recorder("1"))
        self.clock.advance(1)
        self.network.flush()
        self.assertEqual(self.pubsub["a"].subscriber_count("t"), 1)
        self.network.disconnect("b")
        self.assertEqual(self.pubsub["a"].subscriber_count("t"), 0)
        self.pubsub["a"].subscribe("t", Recorder("2"))
        self.clock.advance(1)
        self.network.flush()
        late = self.network.join("d")
        self.pubsub["d"] = PubSub(late, clock=self.clock)
        self.network.flush()
        # d joined after a's subscription: a's snapshot tells it.
        self.assertEqual(self.pubsub["d"].subscriber_count("t"), 1)

    def test_malformed_message(self) -> None:
        """A pubsub message that does not decode is logged and dropped."""
        recorder = Recorder("1")
        self.pubsub["b"].subscribe("t", recorder)
        for data in [b"", b"nonsense", b"[1]\0", b'{"k":"broadcast","t":1}\0x']:
            self.messaging["a"].send("b", "pubsub:beryl", data)
        self.network.flush()
        self.assertEqual(recorder.received, [])
        self.pubsub["a"].broadcast("t", "e", 1)
        self.network.flush()
        self.assertEqual(recorder.received, [("t", "e", 1, None)])

    def test_counts_eager_without_clock(self) -> None:
        """Without a clock, each count change is reported at once."""
        eager = PubSub(self.messaging["a"], name="eager")
        listener = PubSub(self.messaging["b"], name="eager")
        self.messaging["a"].sent.clear()
        eager.subscribe("t", Recorder("1"))
        self.assertEqual(len(self.messaging["a"].sent), 2)
        self.network.flush()
        self.assertEqual(listener.subscriber_count("t"), 1)
