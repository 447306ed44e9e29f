"""
Tests for L{beryl.backplane}: the Redis URL, and L{RedisMessaging}'s
membership and message handling driven by a fake Redis connection and a
L{Clock}.
"""

from __future__ import annotations

import builtins
from typing import Any

import orjson
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from beryl.backplane import BackplaneConfig, RedisMessaging, parse_backplane_url
from beryl.interfaces import IMembershipObserver, INodeMessaging
from beryl.tap import Options


class URLTests(SynchronousTestCase):
    def test_plain(self) -> None:
        """redis://host:port/db gives host, port and database; defaults are 6379 and 0."""
        self.assertEqual(
            parse_backplane_url("redis://10.0.0.5:6380/2"),
            BackplaneConfig("10.0.0.5", 6380, 2),
        )
        self.assertEqual(parse_backplane_url("redis://cache"), BackplaneConfig("cache"))

    def test_password_and_tls(self) -> None:
        """A password (URL-quoted) and rediss:// are read; neither repr nor describe shows the password."""
        config = parse_backplane_url("rediss://:p%40ss@cache:6390/1?ca=/etc/ca.pem")
        self.assertEqual(config.password, "p@ss")
        self.assertTrue(config.tls)
        self.assertEqual(config.ca, "/etc/ca.pem")
        self.assertEqual(config.describe(), "rediss://cache:6390/1")
        self.assertNotIn("p@ss", repr(config))
        user = parse_backplane_url("redis://beryl:secret@cache/0")
        self.assertEqual((user.username, user.password), ("beryl", "secret"))

    def test_bad_urls(self) -> None:
        """Other schemes, a missing host, a bad database or parameter are errors that do not show the password."""
        for url in (
            "http://cache:6379",
            "redis://:secret@/0",
            "redis://:secret@cache/zero",
            "redis://:secret@cache/0?colour=red",
            "redis://:secret@cache/0?ca=/x.pem",
            "redis://:secret@cache:99999/0",
        ):
            error = self.assertRaises(ValueError, parse_backplane_url, url)
            self.assertNotIn("secret", str(error))

    def test_option(self) -> None:
        """--backplane is parsed, refused with --cluster-port, and a bad URL is a usage error."""
        options = Options()
        options.parseOptions(["--backplane", "redis://127.0.0.1:7000/3"])
        self.assertEqual(
            options["backplane_config"], BackplaneConfig("127.0.0.1", 7000, 3)
        )
        for argv in (
            ["--backplane", "redis://a", "--cluster-port", "4001"],
            ["--backplane", "mysql://a"],
        ):
            error = self.assertRaises(UsageError, Options().parseOptions, argv)
            self.assertIn("--backplane", str(error))


class FakeRedis:
    """
    The commands of a txredisapi connection that RedisMessaging uses, on
    a dictionary; published messages are recorded.
    """

    def __init__(self) -> None:
        self.keys: dict[bytes, Any] = {}
        self.published: list[tuple[bytes, bytes]] = []
        self.connected = True

    def _check(self) -> None:
        if not self.connected:
            raise ConnectionError("Not connected")

    def publish(self, channel: bytes, message: bytes) -> Deferred[int]:
        self._check()
        self.published.append((channel, message))
        return succeed(1)

    def set(self, key: bytes, value: str, pexpire: int) -> Deferred[bool]:
        self._check()
        self.keys[key] = value.encode()
        return succeed(True)

    def sadd(self, key: bytes, member: str) -> Deferred[int]:
        self._check()
        self.keys.setdefault(key, set()).add(member.encode())
        return succeed(1)

    def srem(self, key: bytes, member: str) -> Deferred[int]:
        self._check()
        self.keys.get(key, set()).discard(member.encode())
        return succeed(1)

    def smembers(self, key: bytes) -> Deferred[builtins.set[bytes]]:
        self._check()
        return succeed(set(self.keys.get(key, set())))

    def mget(self, keys: list[bytes]) -> Deferred[list[Any]]:
        self._check()
        return succeed([self.keys.get(key) for key in keys])

    def delete(self, key: bytes) -> Deferred[int]:
        self._check()
        return succeed(int(self.keys.pop(key, None) is not None))

    def subscribe(self, channels: list[bytes]) -> Deferred[None]:
        self.channels = channels
        return succeed(None)


@implementer(IMembershipObserver)
class Observer:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    def node_up(self, node_name: str, incarnation: str) -> None:
        self.events.append(("up", node_name, incarnation))

    def node_down(self, node_name: str, incarnation: str) -> None:
        self.events.append(("down", node_name, incarnation))


def message(node: str, incarnation: str, channel: str, data: bytes) -> bytes:
    return orjson.dumps([node, incarnation, channel]) + b"\0" + data


class MessagingTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.redis = FakeRedis()
        self.messaging = RedisMessaging(
            "a",
            BackplaneConfig("127.0.0.1", prefix="t"),
            self.clock,
            heartbeat_interval=1.0,
            heartbeat_timeout=5.0,
        )
        self.observer = Observer()
        self.messaging.add_membership_observer(self.observer)
        self.received: list[tuple[str, bytes]] = []
        self.messaging.add_handler(
            "pubsub", lambda node, data: self.received.append((node, data))
        )
        # Started without connecting: the fake connections are handed in.
        self.patch(self.messaging, "_connect", lambda: None)
        self.messaging.startService()
        self.addCleanup(self._stop)
        self.messaging.connection_ready(self.redis, subscriber=True)
        self.messaging.connection_ready(self.redis, subscriber=False)

    def _stop(self) -> None:
        if self.messaging.running:
            self.successResultOf(self.messaging.stopService())

    def test_provides_interface(self) -> None:
        """RedisMessaging provides INodeMessaging."""
        self.assertTrue(verifyObject(INodeMessaging, self.messaging))

    def test_announces_itself(self) -> None:
        """Once subscribed and publishing, a node keeps a member key with its incarnation and lists itself."""
        self.assertEqual(self.redis.channels, [b"t:0:all", b"t:0:node:a"])
        self.assertEqual(
            self.redis.keys[b"t:member:a"], self.messaging.incarnation.encode()
        )
        self.assertEqual(self.redis.keys[b"t:members"], {b"a"})

    def test_member_keys_bring_peers_up_and_their_expiry_down(self) -> None:
        """A peer's member key makes it up; once the key is gone and it is silent for the timeout, it is down."""
        self.redis.keys[b"t:member:b"] = b"inc-b"
        self.redis.keys[b"t:members"].add(b"b")
        self.clock.advance(1.0)
        self.assertEqual(self.observer.events, [("up", "b", "inc-b")])
        self.assertEqual(dict(self.messaging.peers()), {"b": "inc-b"})
        del self.redis.keys[b"t:member:b"]
        self.clock.advance(5.0)
        self.assertEqual(self.observer.events[-1], ("up", "b", "inc-b"))
        self.clock.advance(1.0)
        self.assertEqual(self.observer.events[-1], ("down", "b", "inc-b"))
        self.assertNotIn(b"b", self.redis.keys[b"t:members"])

    def test_messages_dispatched_and_own_ignored(self) -> None:
        """A message goes to its channel's handlers with the sender's name; this node's own are ignored."""
        self.messaging.message_received(message("b", "inc-b", "pubsub", b"\x00data"))
        self.messaging.message_received(message("a", "x", "pubsub", b"mine"))
        self.assertEqual(self.received, [("b", b"\x00data")])
        self.assertEqual(self.observer.events, [("up", "b", "inc-b")])

    def test_new_incarnation_replaces_old(self) -> None:
        """A peer seen with a new incarnation goes down and comes up again."""
        self.messaging.message_received(message("b", "one", "pubsub", b""))
        self.messaging.message_received(message("b", "two", "pubsub", b""))
        self.assertEqual(
            self.observer.events,
            [("up", "b", "one"), ("down", "b", "one"), ("up", "b", "two")],
        )

    def test_bye(self) -> None:
        """A peer that says goodbye is down at once."""
        self.messaging.message_received(message("b", "one", "pubsub", b""))
        self.messaging.message_received(message("b", "one", "\0bye", b""))
        self.assertEqual(self.observer.events[-1], ("down", "b", "one"))

    def test_malformed_dropped(self) -> None:
        """A message without a valid header is dropped and logged."""
        self.messaging.message_received(b"no header")
        self.messaging.message_received(b"[1,2]\0x")
        self.assertEqual(self.received, [])
        self.assertEqual(len(self.flushLoggedErrors()), 0)

    def test_send_all_once_and_send_to_one(self) -> None:
        """send_all publishes once on the all channel; send goes to the node's channel; nothing goes without peers."""
        self.messaging.send_all("pubsub", b"x")
        self.assertEqual(self.redis.published, [])
        self.messaging.message_received(message("b", "one", "pubsub", b""))
        self.messaging.message_received(message("c", "one", "pubsub", b""))
        self.messaging.send_all("pubsub", b"x")
        self.messaging.send("c", "pubsub", b"y")
        self.messaging.send("zz", "pubsub", b"z")
        header = orjson.dumps(["a", self.messaging.incarnation, "pubsub"]) + b"\0"
        self.assertEqual(
            self.redis.published,
            [(b"t:0:all", header + b"x"), (b"t:0:node:c", header + b"y")],
        )

    def test_outage(self) -> None:
        """When the connections drop, sends are dropped, peers go down after the timeout and the outage is logged once."""
        self.messaging.message_received(message("b", "one", "pubsub", b""))
        self.redis.connected = False
        self.messaging.connection_lost(self.redis, subscriber=True)
        self.messaging.connection_lost(self.redis, subscriber=False)
        self.messaging.send_all("pubsub", b"lost")
        self.clock.advance(6.0)
        self.assertEqual(self.observer.events[-1], ("down", "b", "one"))
        self.assertEqual(self.redis.published, [])
        self.assertTrue(self.messaging._outage_logged)
        self.redis.connected = True
        self.messaging.connection_ready(self.redis, subscriber=True)
        self.messaging.connection_ready(self.redis, subscriber=False)
        self.assertFalse(self.messaging._outage_logged)

    def test_stop_says_goodbye(self) -> None:
        """Stopping publishes a goodbye, removes the member key and reports peers down."""
        self.messaging.message_received(message("b", "one", "pubsub", b""))
        self.successResultOf(self.messaging.stopService())
        channel, published = self.redis.published[-1]
        self.assertEqual(channel, b"t:0:all")
        self.assertEqual(orjson.loads(published[: published.index(b"\0")])[2], "\0bye")
        self.assertNotIn(b"t:member:a", self.redis.keys)
        self.assertEqual(self.observer.events[-1], ("down", "b", "one"))

    def test_stop_does_not_wait_for_a_silent_redis(self) -> None:
        """Stopping finishes two seconds later when Redis never answers the goodbye."""
        self.redis.delete = lambda key: Deferred()  # type: ignore[method-assign]
        stopping = self.messaging.stopService()
        self.assertNoResult(stopping)
        self.clock.advance(2.0)
        self.successResultOf(stopping)
