"""
Tests for L{beryl.cluster}: AMP cluster links, membership and messaging.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, cast

import attrs
from twisted.application.internet import backoffPolicy
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import ILogObserver, globalLogPublisher
from twisted.protocols import amp
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from beryl.cluster import (
    ClusterService,
    LocalMessaging,
    default_node_name,
    gossip_safe,
    peer_endpoint_description,
)
from beryl.cluster.chunks import CHUNK_SIZE, ChunkError, Reassembler, split
from beryl.cluster.commands import PROTOCOL_VERSION
from beryl.cluster.ratelimit import LogLimiter
from beryl.cluster.service import _LinkFactory
from beryl.interfaces import IMembershipObserver, INodeMessaging, ISubscriber
from beryl.pubsub import PubSub
from beryl.testing import MemoryConnection, MemoryNetwork
from beryl.wire import Binary


@implementer(IMembershipObserver)
@attrs.define
class Observer:
    """Records membership events."""

    events: list[tuple[str, str, str]] = attrs.field(factory=list)

    def node_up(self, node_name: str, incarnation: str) -> None:
        self.events.append(("up", node_name, incarnation))

    def node_down(self, node_name: str, incarnation: str) -> None:
        self.events.append(("down", node_name, incarnation))


def address(name: str) -> str:
    """
    The endpoint description that stands for node C{name} on the memory
    network (gossip only passes TCP and TLS addresses).
    """
    return f"tcp:host={name}:port=4001"


def _memory_name(description: str) -> str:
    if description.startswith("tcp:host="):
        return description[len("tcp:host=") :].split(":", 1)[0]
    return description


class ClusterHarness:
    """Nodes on one L{MemoryNetwork}, with observers and received messages."""

    def __init__(self, case: SynchronousTestCase) -> None:
        self.network = MemoryNetwork()
        self.case = case
        self.observers: dict[str, Observer] = {}
        self.received: dict[str, list[tuple[str, bytes]]] = {}
        self.services: list[ClusterService] = []
        case.addCleanup(self.stop_all)

    def node(
        self,
        name: str,
        peers: Sequence[str] = (),
        secret: bytes | None = None,
        start: bool = True,
    ) -> ClusterService:
        service = ClusterService(
            name,
            self.network.clock,
            lambda description: self.network.client(_memory_name(description)),
            listen=self.network.server(name),
            peers=[address(peer) for peer in peers],
            secret=secret,
            advertise=address(name),
            heartbeat_interval=1.0,
            heartbeat_timeout=5.0,
            retry_policy=backoffPolicy(
                initialDelay=1.0, maxDelay=8.0, jitter=lambda: 0
            ),
        )
        observer = self.observers[name] = Observer()
        received = self.received[name] = []
        service.add_membership_observer(observer)
        service.add_handler("test", lambda node, data: received.append((node, data)))
        self.services.append(service)
        if start:
            service.startService()
        return service

    def stop_all(self) -> None:
        stopping = [s.stopService() for s in self.services if s.running]
        self.network.flush()
        for stopped in stopping:
            self.case.successResultOf(stopped)
        self.case.assertEqual(self.network.clock.getDelayedCalls(), [])


def capture_logs(case: SynchronousTestCase) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    observer = cast(ILogObserver, events.append)
    globalLogPublisher.addObserver(observer)
    case.addCleanup(globalLogPublisher.removeObserver, observer)
    return events


class ChunkTests(SynchronousTestCase):
    """
    Tests for L{split} and L{Reassembler}.
    """

    def test_round_trip(self) -> None:
        """Chunks of a message fed in order give the message back."""
        data = os.urandom(3 * CHUNK_SIZE + 17)
        chunks = split(data)
        self.assertEqual(len(chunks), 4)
        reassembler = Reassembler()
        results = [reassembler.feed(7, i, len(chunks), c) for i, c in enumerate(chunks)]
        self.assertEqual(results, [None, None, None, data])

    def test_empty(self) -> None:
        """An empty message is one empty chunk."""
        self.assertEqual(split(b""), [b""])
        self.assertEqual(Reassembler().feed(0, 0, 1, b""), b"")

    def test_bad_sequence(self) -> None:
        """A chunk out of sequence is refused and the partial message dropped."""
        reassembler = Reassembler()
        self.assertIsInstance(reassembler.feed(1, 1, 2, b"x"), ChunkError)
        self.assertIsNone(reassembler.feed(2, 0, 2, b"a"))
        self.assertIsInstance(reassembler.feed(3, 0, 1, b"b"), ChunkError)
        self.assertIsInstance(reassembler.feed(4, 0, 0, b""), ChunkError)
        self.assertEqual(reassembler.feed(5, 0, 1, b"ok"), b"ok")


class AddressTests(SynchronousTestCase):
    """
    Tests for L{peer_endpoint_description} and L{default_node_name}.
    """

    def test_host_port(self) -> None:
        """C{host:port} becomes a TCP client endpoint description."""
        self.assertEqual(
            peer_endpoint_description("10.0.0.2:4001"), "tcp:host=10.0.0.2:port=4001"
        )
        self.assertEqual(
            peer_endpoint_description("[::1]:4001"), "tcp:host=\\:\\:1:port=4001"
        )

    def test_bad(self) -> None:
        """Anything but C{host:port} with a valid port is a ValueError."""
        for text in ["host", "host:0", "host:70000", "host:x", ":1", "a b:1", "::1:2"]:
            self.assertRaises(ValueError, peer_endpoint_description, text)

    def test_endpoint_strings(self) -> None:
        """Client endpoint strings are checked and kept; unknown types are a ValueError."""
        for text in ("tcp:host=10.0.0.2:port=4001", "tcp:10.0.0.2:4001:timeout=5"):
            self.assertEqual(peer_endpoint_description(text), text)
        self.assertRaises(ValueError, peer_endpoint_description, "bogus:host=a:port=1")

    def test_gossip_safe(self) -> None:
        """Only TCP and TLS addresses learned from peers are dialled."""
        self.assertTrue(gossip_safe("tcp:host=10.0.0.2:port=4001"))
        self.assertTrue(gossip_safe("tls:10.0.0.2:4001"))
        for unsafe in ("unix:/run/docker.sock", "ssl:host=a:port=1", "other:1:2"):
            self.assertFalse(gossip_safe(unsafe), unsafe)

    def test_default_node_name(self) -> None:
        """The default node name is the host name and the cluster port."""
        self.assertEqual(default_node_name(4001, "web1"), "web1:4001")


class ClusterServiceTests(SynchronousTestCase):
    """
    Tests for L{ClusterService} over an in-memory network.
    """

    def setUp(self) -> None:
        self.cluster = ClusterHarness(self)
        self.network = self.cluster.network

    def test_interface(self) -> None:
        """ClusterService and LocalMessaging provide INodeMessaging."""
        self.assertTrue(
            verifyObject(INodeMessaging, self.cluster.node("a", start=False))
        )
        local = LocalMessaging("solo")
        self.assertTrue(verifyObject(INodeMessaging, local))
        self.assertEqual((local.node_name, dict(local.peers())), ("solo", {}))

    def test_handshake(self) -> None:
        """Two nodes exchange names and incarnations and report each other up."""
        a = self.cluster.node("a", peers=["b"])
        b = self.cluster.node("b")
        self.network.flush()
        self.assertEqual(dict(a.peers()), {"b": b.incarnation})
        self.assertEqual(dict(b.peers()), {"a": a.incarnation})
        self.assertEqual(
            self.cluster.observers["a"].events, [("up", "b", b.incarnation)]
        )
        self.assertEqual(
            self.cluster.observers["b"].events, [("up", "a", a.incarnation)]
        )

    def test_send(self) -> None:
        """send reaches one peer's channel handler, send_all every peer's."""
        a = self.cluster.node("a", peers=["b", "c"])
        self.cluster.node("b")
        self.cluster.node("c")
        self.network.flush()
        a.send("b", "test", b"one")
        a.send("nobody", "test", b"dropped")
        a.send_all("test", b"all")
        a.send_all("other channel", b"nobody listens")
        self.network.flush()
        self.assertEqual(self.cluster.received["b"], [("a", b"one"), ("a", b"all")])
        self.assertEqual(self.cluster.received["c"], [("a", b"all")])

    def test_unsafe_gossip_ignored(self) -> None:
        """A member address that is not TCP or TLS, gossiped by a peer, is never dialled."""
        a = self.cluster.node("a", peers=["b"])
        b = self.cluster.node("b")
        self.network.flush()
        a.members_received(None, [("evil", "unix:/run/docker.sock")])  # type: ignore[arg-type]
        self.network.run(5)
        self.assertEqual(sorted(a.peers()), ["b"])
        self.assertNotIn(
            "unix:/run/docker.sock", [p.description for p in a._peers.values()]
        )
        del b

    def test_membership_spreads(self) -> None:
        """Nodes that know only one peer learn of each other by gossip."""
        a = self.cluster.node("a", peers=["b"])
        b = self.cluster.node("b")
        c = self.cluster.node("c", peers=["b"])
        self.network.run(5)
        self.assertEqual(sorted(a.peers()), ["b", "c"])
        self.assertEqual(sorted(b.peers()), ["a", "c"])
        self.assertEqual(sorted(c.peers()), ["a", "b"])
        self.assertEqual(len(self.network.open_connections()), 3)
        for name, observer in self.cluster.observers.items():
            self.assertEqual(len(observer.events), 2, name)
        a.send_all("test", b"hello")
        self.network.flush()
        self.assertEqual(self.cluster.received["c"], [("a", b"hello")])

    def test_duplicate_links_collapse(self) -> None:
        """Two nodes that dial each other keep one link, and stay that way."""
        a = self.cluster.node("a", peers=["b"])
        b = self.cluster.node("b", peers=["a"])
        self.network.run(30)
        self.assertEqual(len(self.network.open_connections()), 1)
        self.assertEqual(
            self.cluster.observers["a"].events, [("up", "b", b.incarnation)]
        )
        self.assertEqual(
            self.cluster.observers["b"].events, [("up", "a", a.incarnation)]
        )
        a.send("b", "test", b"once")
        self.network.flush()
        self.assertEqual(self.cluster.received["b"], [("a", b"once")])

    def test_duplicate_dropped_before_twin_finished(self) -> None:
        """A node whose link is dropped for a twin still handshaking sees no blip."""
        a = self.cluster.node("a", peers=["b"])
        b = self.cluster.node("b", peers=["a"])
        self.network.connect_pending()
        to_a, to_b = sorted(self.network.connections, key=lambda c: c.server_address)
        self.assertEqual((to_a.server_address, to_b.server_address), ("a", "b"))
        # b's link to a finishes first.
        to_a.pump.flush()
        # a's link to b: Hello, then its answer; a is now up on both links
        # and drops b's (a link opened by "a" wins).  b has not yet had a's
        # proof on the twin when it learns its link was dropped.
        to_b.pump.pump()
        to_b.pump.pump()
        to_a.pump.flush()
        self.assertEqual(dict(b.peers()), {"a": a.incarnation})
        self.network.run(20)
        self.assertEqual(len(self.network.open_connections()), 1)
        self.assertEqual(
            self.cluster.observers["a"].events, [("up", "b", b.incarnation)]
        )
        self.assertEqual(
            self.cluster.observers["b"].events, [("up", "a", a.incarnation)]
        )
        b.send("a", "test", b"through the twin")
        self.network.flush()
        self.assertEqual(self.cluster.received["a"], [("b", b"through the twin")])

    def test_connected_to_self(self) -> None:
        """A peer address that is this node is dropped, not retried."""
        a = self.cluster.node("a", peers=["a"])
        self.network.run(10)
        self.assertEqual(dict(a.peers()), {})
        self.assertEqual(self.network.open_connections(), [])
        self.assertEqual(self.cluster.observers["a"].events, [])

    def test_large_message(self) -> None:
        """A 1 MiB message is chunked and arrives whole."""
        a = self.cluster.node("a", peers=["b"])
        self.cluster.node("b")
        self.network.flush()
        data = os.urandom(1024 * 1024)
        a.send("b", "test", data)
        self.network.flush()
        self.assertEqual(self.cluster.received["b"], [("a", data)])

    def test_ordering(self) -> None:
        """200 messages of mixed sizes to one peer arrive in order."""
        a = self.cluster.node("a", peers=["b"])
        self.cluster.node("b")
        self.network.flush()
        sent = [str(i).encode() * (1 + (i * 7919) % 30000) for i in range(200)]
        for data in sent:
            a.send("b", "test", data)
        self.network.flush()
        self.assertEqual([data for _, data in self.cluster.received["b"]], sent)

    def test_heartbeat_timeout(self) -> None:
        """A peer that stops answering is reported down, then found again."""
        a = self.cluster.node("a", peers=["b"])
        b = self.cluster.node("b")
        self.network.flush()
        [connection] = self.network.open_connections()
        connection.frozen = True
        self.network.run(7)
        self.assertIn(("down", "b", b.incarnation), self.cluster.observers["a"].events)
        self.assertIn(("down", "a", a.incarnation), self.cluster.observers["b"].events)
        self.network.run(10)
        self.assertEqual(dict(a.peers()), {"b": b.incarnation})
        self.assertEqual(
            self.cluster.observers["a"].events,
            [
                ("up", "b", b.incarnation),
                ("down", "b", b.incarnation),
                ("up", "b", b.incarnation),
            ],
        )

    def test_reconnect_after_restart(self) -> None:
        """A restarted peer is found again with backoff, with a new incarnation."""
        a = self.cluster.node("a", peers=["b"])
        b = self.cluster.node("b")
        self.network.flush()
        old = b.incarnation
        stopped = b.stopService()
        self.network.flush()
        self.successResultOf(stopped)
        self.network.run(20)
        self.assertEqual(dict(a.peers()), {})
        b.startService()
        self.assertNotEqual(b.incarnation, old)
        self.network.run(10)
        self.assertEqual(dict(a.peers()), {"b": b.incarnation})
        self.assertEqual(
            self.cluster.observers["a"].events,
            [("up", "b", old), ("down", "b", old), ("up", "b", b.incarnation)],
        )

    def test_restart_before_timeout(self) -> None:
        """A peer back with a new incarnation replaces the old one at once."""
        a = self.cluster.node("a")
        b = self.cluster.node("b", peers=["a"])
        self.network.flush()
        old = b.incarnation
        # b vanishes without a word, and comes back as a new process.
        [connection] = self.network.open_connections()
        connection.frozen = True
        b2 = self.cluster.node("b", peers=["a"])
        # a asks the old b whether it is still there, and replaces it when
        # no answer comes within two heartbeat intervals.
        self.network.run(3)
        self.assertEqual(dict(a.peers()), {"b": b2.incarnation})
        self.assertEqual(
            self.cluster.observers["a"].events[:3],
            [("up", "b", old), ("down", "b", old), ("up", "b", b2.incarnation)],
        )
        self.cluster.services.remove(b)
        b.stopService()
        self.network.flush()

    def test_secret(self) -> None:
        """Nodes sharing a secret link up."""
        a = self.cluster.node("a", peers=["b"], secret=b"s3cret")
        b = self.cluster.node("b", secret=b"s3cret")
        self.network.flush()
        self.assertEqual(dict(a.peers()), {"b": b.incarnation})

    def test_wrong_secret(self) -> None:
        """A peer with a wrong or missing secret is refused, with a log line."""
        logs = capture_logs(self)
        for name, secret in [("b", b"other"), ("c", None)]:
            self.cluster.node(f"a{name}", peers=[name], secret=b"s3cret")
            self.cluster.node(name, secret=secret)
        self.cluster.node("d", peers=["e"])
        self.cluster.node("e", secret=b"s3cret")
        self.network.run(3)
        for service in self.cluster.services:
            self.assertEqual(dict(service.peers()), {}, service.node_name)
            self.assertEqual(self.cluster.observers[service.node_name].events, [])
        refusals = [
            e for e in logs if "Refused cluster link" in e.get("log_format", "")
        ]
        self.assertTrue(refusals)
        for event in logs:
            self.assertNotIn("s3cret", repr(event))

    def test_malformed_commands(self) -> None:
        """Each malformed AMP box closes the link with one warning, no traceback; the nodes link up again."""
        a = self.cluster.node("a", peers=["b"])
        self.cluster.node("b")
        self.network.flush()
        bad_boxes = [
            {b"_command": b"Deliver", b"channel": b"test"},
            {
                b"_command": b"Deliver",
                b"channel": b"test",
                b"message_id": b"x",
                b"index": b"0",
                b"count": b"1",
                b"data": b"",
            },
            {
                b"_command": b"Deliver",
                b"channel": b"test",
                b"message_id": b"9",
                b"index": b"1",
                b"count": b"2",
                b"data": b"orphan",
            },
            {b"_command": b"NoSuchCommand"},
            {
                b"_command": b"Members",
                b"members": amp.AmpBox({b"node_name": b"x"}).serialize(),
            },
            {b"_answer": b"999"},
            {b"nothing": b"here"},
        ]
        logs = capture_logs(self)
        for box in bad_boxes:
            [connection] = self.network.open_connections()
            connection.pump.clientIO.write(amp.AmpBox(box).serialize())
            self.network.flush()
            self.assertEqual(self.network.open_connections(), [], box)
            self.network.run(5)
            self.assertEqual(sorted(a.peers()), ["b"], box)
        closes = [e for e in logs if "Closed the cluster link" in e["log_format"]]
        # One line each at most (warnings are rate-limited per address).
        self.assertTrue(1 <= len(closes) <= len(bad_boxes))
        self.assertEqual([e for e in logs if e.get("log_failure")], [])
        self.assertEqual(self.flushLoggedErrors(), [])
        a.send("b", "test", b"still here")
        self.network.flush()
        self.assertEqual(self.cluster.received["b"], [("a", b"still here")])

    def test_handler_failure(self) -> None:
        """A handler that raises is logged; other handlers still run."""
        a = self.cluster.node("a", peers=["b"])
        b = self.cluster.node("b")

        def broken(node: str, data: bytes) -> None:
            raise RuntimeError("broken handler")

        b.add_handler("test", broken)
        got: list[bytes] = []
        b.add_handler("test", lambda node, data: got.append(data))
        self.network.flush()
        a.send("b", "test", b"x")
        self.network.flush()
        self.assertEqual(got, [b"x"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_stop_reports_down(self) -> None:
        """Stopping a node reports its peers down and closes its links."""
        a = self.cluster.node("a", peers=["b"])
        b = self.cluster.node("b")
        self.network.flush()
        stopped = a.stopService()
        self.network.flush()
        self.successResultOf(stopped)
        self.assertEqual(
            self.cluster.observers["a"].events[-1], ("down", "b", b.incarnation)
        )
        self.assertEqual(
            self.cluster.observers["b"].events[-1], ("down", "a", a.incarnation)
        )
        self.assertEqual(self.network.open_connections(), [])

    def test_pubsub_over_cluster(self) -> None:
        """PubSub broadcasts and counts travel over real cluster links."""
        a = self.cluster.node("a", peers=["b"])
        b = self.cluster.node("b")
        pubsub_a = PubSub(a, clock=self.network.clock)
        pubsub_b = PubSub(b, clock=self.network.clock)
        self.network.flush()
        got: list[tuple[str, str, Any, str | None]] = []

        @implementer(ISubscriber)
        class Subscriber:
            subscriber_id = "s1"
            accepts_encoded_json = False

            def deliver(
                self, topic: str, event: str, payload: Any, from_id: str | None
            ) -> None:
                got.append((topic, event, payload, from_id))

        pubsub_b.subscribe("room", Subscriber())
        self.network.run(1)
        self.assertEqual(pubsub_a.subscriber_count("room"), 1)
        pubsub_a.broadcast_from("sock", "room", "shout", {"n": 1})
        pubsub_a.broadcast("room", "bin", Binary(b"\x00\xff" * 40000))
        self.network.flush()
        self.assertEqual(
            got,
            [
                ("room", "shout", {"n": 1}, "sock"),
                ("room", "bin", Binary(b"\x00\xff" * 40000), None),
            ],
        )


class _Stranger(amp.AMP):
    """A raw AMP peer that records what it receives."""

    def __init__(self) -> None:
        super().__init__()
        self.boxes: list[amp.AmpBox] = []
        self.lost = False

    def ampBoxReceived(self, box: amp.AmpBox) -> None:
        self.boxes.append(box)

    def connectionLost(self, reason: Any = None) -> None:
        self.lost = True


def stranger(
    network: MemoryNetwork, address: str
) -> tuple[_Stranger, MemoryConnection]:
    """Connect a raw AMP peer to the node listening at C{address}."""
    server = network.listeners[address].buildProtocol(iosim.FakeAddress())
    client = _Stranger()
    network.stranger_port += 1
    pump = iosim.connect(
        server,
        iosim.FakeTransport(
            server,
            isServer=True,
            peerAddress=IPv4Address("TCP", "192.0.2.7", network.stranger_port),
        ),
        client,
        iosim.FakeTransport(client, isServer=False),
        greet=False,
        clock=network.clock,
    )
    connection = MemoryConnection(address, pump)
    network.connections.append(connection)
    return client, connection


def hello_box(name: str, version: int = PROTOCOL_VERSION) -> bytes:
    return bytes(
        amp.AmpBox(
            {
                b"_command": b"Hello",
                b"_ask": b"1",
                b"version": str(version).encode(),
                b"node_name": name.encode(),
                b"nonce": b"n" * 16,
            }
        ).serialize()
    )


class HardeningTests(SynchronousTestCase):
    """
    Tests for what strangers and broken peers can do to a cluster port.
    """

    def setUp(self) -> None:
        self.cluster = ClusterHarness(self)
        self.network = self.cluster.network

    def test_hello_answer_discloses_no_incarnation(self) -> None:
        """The answer to an unauthenticated Hello tells no incarnation or address."""
        a = self.cluster.node("a", secret=b"s3cret")
        peer, connection = stranger(self.network, "a")
        connection.pump.clientIO.write(hello_box("b"))
        self.network.flush()
        [answer] = peer.boxes
        self.assertEqual(
            sorted(answer),
            [b"_answer", b"node_name", b"nonce", b"proof", b"secret_required"],
        )
        self.assertNotIn(a.incarnation.encode(), b"".join(answer.values()))
        self.assertNotIn(b"tcp:", b"".join(answer.values()))

    def test_stranger_cannot_delay_node_down(self) -> None:
        """A stranger giving a vanished node's name every second does not keep it up."""
        a = self.cluster.node("a", secret=b"s3cret")
        b = self.cluster.node("b", peers=["a"], secret=b"s3cret")
        self.network.flush()
        [connection] = self.network.open_connections()
        connection.frozen = True
        for _ in range(8):
            stranger(self.network, "a")[1].pump.clientIO.write(hello_box("b"))
            self.network.run(1)
        # b itself may link up again since; the stranger did not hold the
        # down back past the heartbeat timeout.
        self.assertEqual(
            self.cluster.observers["a"].events[:2],
            [("up", "b", b.incarnation), ("down", "b", b.incarnation)],
        )
        del a

    def test_unauthenticated_buffer_capped(self) -> None:
        """A box that never ends, sent before the proof, closes the connection after a few KB."""
        self.cluster.node("a", secret=b"s3cret")
        logs = capture_logs(self)
        peer, connection = stranger(self.network, "a")
        sent = 0
        while not peer.lost and sent < 10_000_000:
            key = os.urandom(8).hex().encode()
            connection.pump.clientIO.write(
                len(key).to_bytes(2, "big")
                + key
                + (1000).to_bytes(2, "big")
                + b"v" * 1000
            )
            sent += 1012
            self.network.flush()
        self.assertTrue(peer.lost)
        self.assertLessEqual(sent, 8 * 1024)
        closes = [e for e in logs if "Closed the cluster link" in e["log_format"]]
        self.assertEqual(len(closes), 1)

    def test_authenticated_box_capped(self) -> None:
        """After the proof a never-ending box is still refused, while a 1 MiB message passes."""
        a = self.cluster.node("a", peers=["b"], secret=b"s3cret")
        self.cluster.node("b", secret=b"s3cret")
        self.network.flush()
        a.send("b", "test", b"x" * (1024 * 1024))
        self.network.flush()
        self.assertEqual(self.cluster.received["b"], [("a", b"x" * (1024 * 1024))])
        logs = capture_logs(self)
        [connection] = self.network.open_connections()
        for index in range(40):
            key = b"k%d" % index
            connection.pump.clientIO.write(
                len(key).to_bytes(2, "big")
                + key
                + (60000).to_bytes(2, "big")
                + b"v" * 60000
            )
        self.network.flush()
        self.assertEqual(self.network.open_connections(), [])
        closes = [e for e in logs if "Closed the cluster link" in e["log_format"]]
        self.assertEqual(len(closes), 1)
        self.assertIn("more than", closes[0]["log_format"])

    def test_unauthenticated_commands_close_quietly(self) -> None:
        """Pings and bad Hellos before the proof close the connection with one rate-limited line."""
        self.cluster.node("a", secret=b"s3cret")
        logs = capture_logs(self)
        boxes = [
            amp.AmpBox({b"_command": b"Ping", b"_ask": b"1"}).serialize(),
            amp.AmpBox(
                {b"_command": b"Deliver", b"channel": b"presence", b"data": b"x"}
            ).serialize(),
            hello_box("b").replace(b"\x00\x01" + b"2", b"\x00\x01" + b"x"),
            amp.AmpBox({b"_command": b"Authenticate", b"proof": b"p"}).serialize(),
        ]
        strangers = []
        for _ in range(25):
            for box in boxes:
                peer, connection = stranger(self.network, "a")
                connection.pump.clientIO.write(box)
                strangers.append(peer)
        self.network.flush()
        self.assertTrue(all(peer.lost for peer in strangers))
        self.assertEqual([e for e in logs if e.get("log_failure")], [])
        self.assertEqual(self.flushLoggedErrors(), [])
        # One line for each kind of mistake, not one per connection.
        warnings = [
            e
            for e in logs
            if e.get("log_level") is not None
            and e["log_level"].name in ("warn", "error")
        ]
        self.assertLessEqual(len(warnings), len(boxes))
        self.assertGreaterEqual(len(warnings), 1)

    def test_wrong_secret_retries_summarised(self) -> None:
        """A wrong-secret node retrying for minutes leaves a few summarised lines, not one per try."""
        logs = capture_logs(self)
        self.cluster.node("a", secret=b"s3cret")
        self.cluster.node("b", peers=["a"], secret=b"wrong")
        self.network.run(150)
        # About 100 attempts in 150 s; one line a minute on each side.
        here = [e for e in logs if "Refused cluster link from" in e["log_format"]]
        there = [e for e in logs if "Refused cluster link to" in e["log_format"]]
        self.assertTrue(1 <= len(here) <= 3)
        self.assertTrue(1 <= len(there) <= 3)
        refusals = here + there
        self.assertTrue(any(e.get("held_back") for e in refusals))

    def test_duplicate_name_refused(self) -> None:
        """A second live node with a taken name is refused, named in errors on both sides; no flapping."""
        logs = capture_logs(self)
        a = self.cluster.node("a", secret=b"s3cret")
        b = self.cluster.node("b", peers=["a"], secret=b"s3cret")
        self.network.flush()
        impostor = self.cluster.node("b", peers=["a"], secret=b"s3cret")
        self.network.run(30)
        self.assertEqual(dict(a.peers()), {"b": b.incarnation})
        self.assertEqual(
            self.cluster.observers["a"].events, [("up", "b", b.incarnation)]
        )
        self.assertEqual(dict(impostor.peers()), {})
        errors = [
            e for e in logs if e["log_level"].name == "error" and e.get("node") != "a"
        ]
        here = [e for e in errors if "is already" not in e["log_format"]]
        there = [e for e in errors if "refused the link" in e["log_format"]]
        self.assertTrue(here and there)
        self.assertIn("linked from", here[0]["log_format"])
        self.assertIn("a node named b is already in the cluster", there[0]["reason"])

    def test_early_messages_handled_after_handshake(self) -> None:
        """What the accepting side sends as soon as it is up reaches the connecting side, after its own up."""
        a = self.cluster.node("a", peers=["b"])
        b = self.cluster.node("b")
        seen: list[str] = []

        @implementer(IMembershipObserver)
        class Greeter:
            def node_up(self, node_name: str, incarnation: str) -> None:
                b.send(node_name, "test", b"greeting")

            def node_down(self, node_name: str, incarnation: str) -> None:
                pass

        @implementer(IMembershipObserver)
        class Recorder:
            def node_up(self, node_name: str, incarnation: str) -> None:
                seen.append("up")

            def node_down(self, node_name: str, incarnation: str) -> None:
                pass

        b.add_membership_observer(Greeter())
        a.add_membership_observer(Recorder())
        a.add_handler("test", lambda node, data: seen.append(data.decode()))
        logs = capture_logs(self)
        self.network.flush()
        self.assertEqual(seen, ["up", "greeting"])
        self.assertEqual([e for e in logs if "Dropped" in e.get("log_format", "")], [])


class LogLimiterTests(SynchronousTestCase):
    """
    Tests for L{LogLimiter}.
    """

    def test_summarises(self) -> None:
        """One warning per key and interval; the next one counts those held back."""
        clock = Clock()
        limiter = LogLimiter(clock, interval=60)
        self.assertEqual(limiter.allow("secret", "10.0.0.1"), 0)
        self.assertEqual(
            [limiter.allow("secret", "10.0.0.1") for _ in range(5)], [None] * 5
        )
        self.assertEqual(limiter.allow("secret", "10.0.0.2"), 0)
        self.assertEqual(limiter.allow("other", "10.0.0.1"), 0)
        clock.advance(60)
        self.assertEqual(limiter.allow("secret", "10.0.0.1"), 5)

    def test_bounded(self) -> None:
        """A flood of addresses never holds more than max_keys keys."""
        clock = Clock()
        limiter = LogLimiter(clock, interval=60, max_keys=10)
        for index in range(1000):
            limiter.allow("secret", f"10.0.{index // 256}.{index % 256}")
            self.assertLessEqual(len(limiter._keys), 10)


class LinkCloseTests(SynchronousTestCase):
    """
    Tests for how a L{ClusterLink} closes.
    """

    def test_refused_peer_that_never_reads(self) -> None:
        """A refused connection whose peer does not read is aborted after close_timeout."""
        clock = Clock()
        service = ClusterService("a", clock, MemoryNetwork().client, secret=b"s")
        link = _LinkFactory(service, None).buildProtocol(None)
        transport = _AbortRecorder(peerAddress=IPv4Address("TCP", "192.0.2.1", 1))
        link.makeConnection(transport)
        link.dataReceived(hello_box("a"))
        self.assertTrue(transport.disconnecting)
        self.assertFalse(transport.aborted)
        clock.advance(service.close_timeout)
        self.assertTrue(transport.aborted)
        link.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_stop_flushes_then_aborts(self) -> None:
        """Closing an up link loses the connection gracefully and aborts only after close_timeout."""
        clock = Clock()
        service = ClusterService("a", clock, MemoryNetwork().client)
        service.startService()
        link = _LinkFactory(service, None).buildProtocol(None)
        transport = _AbortRecorder(peerAddress=IPv4Address("TCP", "192.0.2.1", 1))
        link.makeConnection(transport)
        link.dataReceived(hello_box("b"))
        link.dataReceived(
            amp.AmpBox(
                {
                    b"_command": b"Authenticate",
                    b"_ask": b"2",
                    b"proof": b"",
                    b"incarnation": b"i",
                    b"advertise": b"",
                }
            ).serialize()
        )
        self.assertEqual(dict(service.peers()), {"b": "i"})
        stopped = service.stopService()
        self.assertEqual(link.link_state, "Draining")
        self.assertTrue(transport.disconnecting)
        self.assertFalse(transport.aborted)
        clock.advance(service.close_timeout - 0.1)
        self.assertFalse(transport.aborted)
        clock.advance(0.1)
        self.assertTrue(transport.aborted)
        link.connectionLost(Failure(ConnectionDone()))
        clock.advance(0)
        self.successResultOf(stopped)
        self.assertEqual(clock.getDelayedCalls(), [])


class _AbortRecorder(StringTransport):
    aborted = False

    def abortConnection(self) -> None:
        self.aborted = True


class ReplacedLinkTests(SynchronousTestCase):
    """
    Tests for messages sent while a node's link is replaced by its twin.
    """

    def test_held_while_twin_finishes(self) -> None:
        """What a node sends while its link waits for the twin's last answer arrives on the twin."""
        cluster = ClusterHarness(self)
        network = cluster.network
        a = cluster.node("a", peers=["b"])
        b = cluster.node("b", peers=["a"])
        network.connect_pending()
        to_a, to_b = sorted(network.connections, key=lambda c: c.server_address)
        # b's link to a finishes first.
        to_a.pump.flush()
        # a's link to b up to a's Authenticate: b is up on it first, keeps
        # it (a link opened by "a" wins) and retires its own.
        for _ in range(3):
            to_b.pump.pump()
        to_a.pump.flush()
        to_a.half_close()
        to_a.pump.flush()
        # a's link from b is gone; a waits for the answer on the twin.
        self.assertIn("b", a._replacing)
        a.send("b", "test", b"while replacing")
        a.send_all("test", b"to all while replacing")
        network.run(5)
        self.assertEqual(
            cluster.received["b"],
            [("a", b"while replacing"), ("a", b"to all while replacing")],
        )
        self.assertEqual(cluster.observers["a"].events, [("up", "b", b.incarnation)])
        self.assertEqual(len(network.open_connections()), 1)
