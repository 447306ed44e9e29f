"""
Tests for L{beryl.groups}: the table of groups, and group broadcasts
through a coordinator, a cluster, and (end to end) to real C{phoenix}
clients.
"""

from __future__ import annotations

from typing import Any, Callable

import orjson
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from beryl.app import App
from beryl.channel import Channel, JoinContext, JoinOk, JoinResult
from beryl.coordinator import Coordinator
from beryl.groups import GroupError, GroupExists, Groups, UnknownGroup
from beryl.pubsub import PubSub
from beryl.testing import FakeClient, FakeNetwork
from beryl.wire import V1_JSON, Binary, Payload


def join_anything(topic: str, payload: Payload, ctx: JoinContext) -> JoinResult[None]:
    """Every join is accepted."""
    return JoinOk(None)


def rooms_app() -> App:
    """An app whose C{room:*} channel accepts everyone."""
    return App().channel("room:*", Channel.create(join_anything))


class RecordingBroadcaster:
    """A broadcaster that keeps what it was asked to send."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, Any]] = []

    def broadcast(self, topic: str, event: str, payload: Payload) -> None:
        self.sent.append((topic, event, payload))


def joined(coordinator: Coordinator, topic: str, **kwargs: Any) -> FakeClient:
    """A client joined to C{topic}, its join reply already taken."""
    client = FakeClient(coordinator, **kwargs)
    client.send("1", "1", topic, "phx_join", {})
    client.take()
    return client


class TableTests(SynchronousTestCase):
    """Creating, filling and deleting groups."""

    def setUp(self) -> None:
        self.groups = Groups(RecordingBroadcaster())

    def test_create_and_add(self) -> None:
        """A group keeps its topics once each, in the order they were added."""
        self.groups.create("team")
        self.groups.add("team", "room:b")
        self.groups.add("team", "room:a")
        self.groups.add("team", "room:b")
        self.assertEqual(self.groups.topics("team"), ("room:b", "room:a"))
        self.assertIn("team", self.groups)
        self.assertEqual(self.groups.names(), ("team",))
        self.assertEqual(list(self.groups), ["team"])

    def test_create_twice(self) -> None:
        """Creating an existing group raises GroupExists and keeps its topics."""
        self.groups.create("team")
        self.groups.add("team", "room:a")
        error = self.assertRaises(GroupExists, self.groups.create, "team")
        self.assertEqual(error.group, "team")
        self.assertIsInstance(error, GroupError)
        self.assertIn("team", str(error))
        self.assertEqual(self.groups.topics("team"), ("room:a",))

    def test_unknown_group(self) -> None:
        """Every operation on a group that does not exist raises UnknownGroup."""
        operations: list[tuple[Callable[..., object], tuple[Any, ...]]] = [
            (self.groups.delete, ("nope",)),
            (self.groups.add, ("nope", "room:a")),
            (self.groups.remove, ("nope", "room:a")),
            (self.groups.topics, ("nope",)),
            (self.groups.broadcast, ("nope", "e", {})),
        ]
        for operation, args in operations:
            error = self.assertRaises(UnknownGroup, operation, *args)
            self.assertEqual(error.group, "nope")
            self.assertEqual(str(error), "no group named 'nope'")

    def test_remove(self) -> None:
        """Removing a topic takes it out; removing one that is absent does nothing."""
        self.groups.create("team")
        self.groups.add("team", "room:a")
        self.groups.add("team", "room:b")
        self.groups.remove("team", "room:a")
        self.groups.remove("team", "room:zzz")
        self.assertEqual(self.groups.topics("team"), ("room:b",))

    def test_delete(self) -> None:
        """A deleted group is gone, and its name can be created afresh, empty."""
        self.groups.create("team")
        self.groups.add("team", "room:a")
        self.groups.delete("team")
        self.assertNotIn("team", self.groups)
        self.assertRaises(UnknownGroup, self.groups.add, "team", "room:b")
        self.groups.create("team")
        self.assertEqual(self.groups.topics("team"), ())


class BroadcastTests(SynchronousTestCase):
    """Group broadcasts on one node."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.coordinator = Coordinator(rooms_app(), self.clock, idle_timeout=0)
        self.groups = Groups(self.coordinator)
        self.groups.create("team")
        self.groups.add("team", "room:a")
        self.groups.add("team", "room:b")

    def test_reaches_every_topic_of_the_group(self) -> None:
        """Subscribers of every topic in the group get the event; others do not."""
        a = joined(self.coordinator, "room:a")
        b = joined(self.coordinator, "room:b")
        b_v1 = joined(self.coordinator, "room:b", serializer=V1_JSON)
        outsider = joined(self.coordinator, "room:c")
        sent = self.groups.broadcast("team", "news", {"body": "hé", "n": [1, 2]})
        self.assertEqual(sent, 2)
        self.assertEqual(
            a.take(), [[None, None, "room:a", "news", {"body": "hé", "n": [1, 2]}]]
        )
        self.assertEqual(
            b.take(), [[None, None, "room:b", "news", {"body": "hé", "n": [1, 2]}]]
        )
        self.assertEqual(
            b_v1.take(),
            [
                {
                    "topic": "room:b",
                    "event": "news",
                    "payload": {"body": "hé", "n": [1, 2]},
                    "ref": None,
                }
            ],
        )
        self.assertEqual(outsider.take(), [])

    def test_same_bytes_as_a_plain_broadcast(self) -> None:
        """A group broadcast writes byte for byte the frame a plain broadcast writes."""
        client = joined(self.coordinator, "room:a")
        payload = {"b": None, "a": 1.5, "text": "\u2603"}
        self.coordinator.broadcast("room:a", "news", payload)
        self.groups.broadcast("team", "news", payload)
        plain, grouped = client.connection.frames
        self.assertEqual(plain.data, grouped.data)

    def test_payload_encoded_once(self) -> None:
        """The broadcaster gets one pre-encoded payload shared by every topic."""
        recorder = RecordingBroadcaster()
        groups = Groups(recorder)
        groups.create("many")
        for index in range(1000):
            groups.add("many", f"room:{index}")
        payload = {"body": "x" * 100}
        self.assertEqual(groups.broadcast("many", "news", payload), 1000)
        self.assertEqual(len(recorder.sent), 1000)
        shared = recorder.sent[0][2]
        self.assertIsInstance(shared, orjson.Fragment)
        self.assertTrue(all(sent[2] is shared for sent in recorder.sent))
        self.assertEqual(orjson.dumps(shared), orjson.dumps(payload))
        self.assertEqual(
            [topic for topic, _, _ in recorder.sent],
            [f"room:{index}" for index in range(1000)],
        )

    def test_binary_payload(self) -> None:
        """A Binary payload goes to V2 subscribers as a binary broadcast frame."""
        client = joined(self.coordinator, "room:a")
        self.groups.broadcast("team", "blob", Binary(b"\x00\x01"))
        [frame] = client.connection.frames
        self.assertTrue(frame.is_binary)
        self.assertEqual(frame.data, b"\x02\x06\x04room:ablob\x00\x01")

    def test_unserialisable_payload(self) -> None:
        """A payload that is not JSON raises TypeError before anything is sent."""
        client = joined(self.coordinator, "room:a")
        self.assertRaises(
            TypeError, self.groups.broadcast, "team", "e", {"x": object()}
        )
        self.assertEqual(client.take(), [])

    def test_empty_group(self) -> None:
        """Broadcasting to a group without topics sends nothing."""
        recorder = RecordingBroadcaster()
        groups = Groups(recorder)
        groups.create("empty")
        self.assertEqual(groups.broadcast("empty", "e", {}), 0)
        self.assertEqual(recorder.sent, [])


class ClusterTests(SynchronousTestCase):
    """Group broadcasts across the nodes of a cluster."""

    def test_reaches_other_nodes(self) -> None:
        """A group broadcast on one node reaches the group's subscribers on another."""
        network = FakeNetwork()
        clock = Clock()
        coordinators = {}
        for name in "ab":
            pubsub = PubSub(network.join(name))
            coordinators[name] = Coordinator(
                rooms_app(), clock, pubsub=pubsub, idle_timeout=0
            )
        network.flush()
        remote_a = joined(coordinators["b"], "room:a")
        remote_b = joined(coordinators["b"], "room:b")
        local_a = joined(coordinators["a"], "room:a")
        groups = Groups(coordinators["a"])
        groups.create("team")
        groups.add("team", "room:a")
        groups.add("team", "room:b")
        groups.broadcast("team", "news", {"n": 1})
        network.flush()
        self.assertEqual(local_a.take(), [[None, None, "room:a", "news", {"n": 1}]])
        self.assertEqual(remote_a.take(), [[None, None, "room:a", "news", {"n": 1}]])
        self.assertEqual(remote_b.take(), [[None, None, "room:b", "news", {"n": 1}]])
