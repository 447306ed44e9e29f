"""
Tests for L{beryl.embed}: the bridge that puts Beryl's channels behind
connections a host application owns, with fake host connections and, end
to end, with the line-over-TCP host of C{docs/examples/bridge.py}.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyClass, verifyObject

from beryl.app import App, ConnectError, ConnectInfo, ConnectOk, ConnectResult
from beryl.channel import (
    Channel,
    HandleResult,
    JoinContext,
    JoinOk,
    JoinResult,
    Reply,
    SocketContext,
)
from beryl.embed import HostConnectionAdapter, IHostConnection, start
from beryl.interfaces import IConnection
from beryl.wire import Payload
from docs.examples import bridge as bridge_example


@implementer(IHostConnection)
@attrs.define(eq=False)
class FakeHostConnection:
    """A host connection that records what the bridge writes to it."""

    sent: list[str | bytes] = attrs.field(factory=list)
    closed: tuple[int, str] | None = None

    def send_text(self, text: str) -> None:
        self.sent.append(text)

    def send_bytes(self, data: bytes) -> None:
        self.sent.append(data)

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def take(self) -> list[Any]:
        """Everything sent so far (text decoded from JSON), then forget it."""
        result = [json.loads(m) if isinstance(m, str) else m for m in self.sent]
        self.sent.clear()
        return result


def echo_room(terminated: list[str]) -> App:
    """An app with C{room:*}: C{ping} echoes, C{shout} broadcasts; terminations recorded."""

    def join(topic: str, payload: Payload, ctx: JoinContext) -> JoinResult[None]:
        return JoinOk(None, {"socket": ctx.socket_assigns})

    def handle_in(
        event: str, payload: Payload, ctx: SocketContext[None]
    ) -> HandleResult[None]:
        if event == "shout":
            ctx.broadcast("shout", payload)
        return Reply("ok", payload, ctx.assigns)

    def terminate(reason: str, ctx: SocketContext[None]) -> None:
        terminated.append(reason)

    room = Channel.create(join).with_handle_in(handle_in).with_terminate(terminate)
    return App().channel("room:*", room)


class BridgeTests(SynchronousTestCase):
    """The bridge with fake host connections and a fake clock."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.terminated: list[str] = []
        self.app = echo_room(self.terminated)
        self.bridge = start(self.app, self.clock, idle_timeout=0)
        self.addCleanup(self.bridge.stop)

    def connected(self, **kwargs: Any) -> FakeHostConnection:
        """A host connection the bridge accepted."""
        conn = FakeHostConnection()
        accepted = self.successResultOf(self.bridge.notify_connected(conn, **kwargs))
        self.assertTrue(accepted)
        return conn

    def test_interfaces(self) -> None:
        """The adapter provides IConnection; the example's protocol provides IHostConnection."""
        verifyObject(
            IConnection, HostConnectionAdapter(FakeHostConnection(), lambda: None)
        )
        verifyObject(IHostConnection, FakeHostConnection())
        verifyClass(IHostConnection, bridge_example.PhoenixLineProtocol)

    def test_join_and_reply(self) -> None:
        """A joined host connection gets its join reply and push replies as text frames."""
        conn = self.connected()
        self.bridge.handle_raw_message(conn, '["1","1","room:a","phx_join",{}]')
        self.bridge.handle_raw_message(conn, '["1","2","room:a","ping",{"x":"é"}]')
        self.bridge.handle_raw_message(conn, '[null,"3","phoenix","heartbeat",{}]')
        self.assertEqual(
            conn.take(),
            [
                [
                    "1",
                    "1",
                    "room:a",
                    "phx_reply",
                    {"status": "ok", "response": {"socket": None}},
                ],
                [
                    "1",
                    "2",
                    "room:a",
                    "phx_reply",
                    {"status": "ok", "response": {"x": "é"}},
                ],
                [None, "3", "phoenix", "phx_reply", {"status": "ok", "response": {}}],
            ],
        )

    def test_broadcast(self) -> None:
        """Broadcasts reach every host connection on the topic, from channels and from the coordinator."""
        first, second = self.connected(), self.connected()
        for conn in (first, second):
            self.bridge.handle_raw_message(conn, '["1","1","room:a","phx_join",{}]')
            conn.take()
        self.bridge.handle_raw_message(first, '["1","2","room:a","shout",{"n":1}]')
        self.bridge.get_coordinator().broadcast("room:a", "news", [1])
        self.assertEqual(
            second.take(),
            [
                [None, None, "room:a", "shout", {"n": 1}],
                [None, None, "room:a", "news", [1]],
            ],
        )
        self.assertEqual(len(first.take()), 3)

    def test_binary(self) -> None:
        """A bytes message is a binary frame, and binary replies come back as bytes."""
        conn = self.connected()
        self.bridge.handle_raw_message(conn, '["1","1","room:a","phx_join",{}]')
        conn.take()
        push = bytes([0, 1, 1, 6, 4]) + b"1" + b"2" + b"room:a" + b"ping" + b"\x00\xff"
        self.bridge.handle_raw_message(conn, push)
        [reply] = conn.take()
        self.assertEqual(reply, bytes([1, 1, 1, 6, 2]) + b"12room:aok\x00\xff")

    def test_v1(self) -> None:
        """A connection opened with vsn 1.0.0 speaks V1 objects."""
        conn = self.connected(vsn="1.0.0")
        self.bridge.handle_raw_message(
            conn, '{"topic":"room:a","event":"phx_join","payload":{},"ref":"1"}'
        )
        self.assertEqual(
            conn.take(),
            [
                {
                    "topic": "room:a",
                    "event": "phx_reply",
                    "ref": "1",
                    "payload": {"status": "ok", "response": {"socket": None}},
                }
            ],
        )

    def test_unsupported_vsn(self) -> None:
        """An unknown vsn closes the connection with 1008."""
        conn = FakeHostConnection()
        self.assertFalse(
            self.successResultOf(self.bridge.notify_connected(conn, vsn="9.0.0"))
        )
        self.assertEqual(conn.closed, (1008, "unsupported protocol version 9.0.0"))

    def test_undecodable_frame(self) -> None:
        """A malformed frame closes only that connection, with 1007; its channels end."""
        bad, good = self.connected(), self.connected()
        for conn in (bad, good):
            self.bridge.handle_raw_message(conn, '["1","1","room:a","phx_join",{}]')
            conn.take()
        self.bridge.handle_raw_message(bad, "[not json")
        assert bad.closed is not None
        self.assertEqual(bad.closed[0], 1007)
        self.assertEqual(self.terminated, ["closed"])
        self.bridge.handle_raw_message(bad, '["1","2","room:a","ping",{}]')
        self.assertEqual(bad.take(), [])
        self.bridge.notify_disconnected(bad)
        self.bridge.handle_raw_message(good, '["1","2","room:a","ping",{}]')
        self.assertEqual(len(good.take()), 1)
        self.assertEqual(self.bridge.get_coordinator().socket_count(), 1)

    def test_invalid_utf8_text(self) -> None:
        """Text carrying lone surrogates is refused as invalid UTF-8."""
        conn = self.connected()
        self.bridge.handle_raw_message(conn, '["1","1","room:\udc80","phx_join",{}]')
        self.assertEqual(conn.closed, (1007, "frame is not valid UTF-8"))

    def test_disconnect(self) -> None:
        """notify_disconnected terminates the connection's channels and forgets it."""
        conn = self.connected()
        self.bridge.handle_raw_message(conn, '["1","1","room:a","phx_join",{}]')
        self.bridge.notify_disconnected(conn)
        self.bridge.notify_disconnected(conn)
        self.assertEqual(self.terminated, ["closed"])
        self.assertEqual(self.bridge.get_coordinator().socket_count(), 0)
        self.assertTrue(self.successResultOf(self.bridge.notify_connected(conn)))

    def test_connected_twice(self) -> None:
        """Connecting the same host connection twice is a programming error."""
        conn = self.connected()
        self.assertRaises(ValueError, self.bridge.notify_connected, conn)

    def test_connect_hook_refuses(self) -> None:
        """A connection the connect hook refuses is closed with 1008 and its messages dropped."""
        self.app.connect = lambda params, info: ConnectError(403)
        conn = FakeHostConnection()
        self.assertFalse(self.successResultOf(self.bridge.notify_connected(conn)))
        self.assertEqual(conn.closed, (1008, "connection refused (403)"))
        self.bridge.handle_raw_message(conn, '["1","1","room:a","phx_join",{}]')
        self.assertEqual(conn.sent, [])

    def test_async_connect_hook(self) -> None:
        """Messages sent while the connect hook is pending are handled, in order, once it accepts."""
        decision: Deferred[ConnectResult] = Deferred()
        seen: list[Any] = []

        def connect(params: Any, info: ConnectInfo) -> Deferred[ConnectResult]:
            seen.append((params, info.peer))
            return decision

        self.app.connect = connect
        conn = FakeHostConnection()
        accepted = self.bridge.notify_connected(
            conn, params={"token": "t"}, connect_info=ConnectInfo(peer="1.2.3.4:5")
        )
        self.bridge.handle_raw_message(conn, '["1","1","room:a","phx_join",{}]')
        self.bridge.handle_raw_message(conn, '["1","2","room:a","ping",{}]')
        self.assertEqual(conn.sent, [])
        decision.callback(ConnectOk({"user": 7}))
        self.assertTrue(self.successResultOf(accepted))
        self.assertEqual(seen, [({"token": "t"}, "1.2.3.4:5")])
        self.assertEqual(
            [(frame[1], frame[4]["response"]) for frame in conn.take()],
            [("1", {"socket": {"user": 7}}), ("2", {})],
        )

    def test_disconnect_while_connecting(self) -> None:
        """A connection that goes away before the connect hook answers never opens a socket."""
        decision: Deferred[ConnectResult] = Deferred()
        self.app.connect = lambda params, info: decision
        conn = FakeHostConnection()
        accepted = self.bridge.notify_connected(conn)
        self.bridge.handle_raw_message(conn, '["1","1","room:a","phx_join",{}]')
        self.bridge.notify_disconnected(conn)
        decision.callback(ConnectOk())
        self.assertFalse(self.successResultOf(accepted))
        self.assertEqual(self.bridge.get_coordinator().socket_count(), 0)
        self.assertEqual(conn.sent, [])

    def test_stop_closes_connections(self) -> None:
        """Stopping the bridge closes every host connection with 1001."""
        conn = self.connected()
        self.successResultOf(self.bridge.stop())
        self.assertEqual(conn.closed, (1001, "server shutting down"))
