"""
Tests for L{beryl.transport.websocket}: the adapter on a L{StringTransport}
with a fake core, on its fast path and on the plain Autobahn path, and a
differential test of the two.
"""

from __future__ import annotations

from typing import Any, Mapping

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from beryl.app import ConnectInfo, ConnectOk, ConnectResult
from beryl.counters import Counters
from beryl.interfaces import IConnection, ISocketHost
from beryl.transport import websocket
from beryl.transport.websocket import PhoenixWebSocketFactory, PhoenixWebSocketProtocol
from beryl.wire import DecodeError, Message, Serializer, Unacceptable
from tests.test_frames import client_frame

HANDSHAKE = (
    b"GET /socket/websocket?vsn=2.0.0 HTTP/1.1\r\n"
    b"Host: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


@attrs.define(eq=False)
class Handle:
    connection: IConnection
    serializer: Serializer
    closed: bool = False


@implementer(ISocketHost)
class RecordingHost:
    """
    A fake core with the transport seam's methods: it decodes with the real
    serializer, records the messages, and closes a socket whose frame does
    not decode with 1007, as the coordinator does.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.counters = Counters()
        self.messages: list[Message] = []
        self.touched = 0
        self.pings = 0
        self.sockets: list[Handle] = []
        self.decision: Deferred[ConnectResult] | None = None

    def connect(
        self, params: Mapping[str, Any], info: ConnectInfo
    ) -> Deferred[ConnectResult]:
        if self.decision is not None:
            return self.decision
        return succeed(ConnectOk())

    def open(
        self,
        connection: IConnection,
        serializer: Serializer,
        params: Mapping[str, Any],
        info: ConnectInfo,
        assigns: Any = None,
    ) -> Handle:
        handle = Handle(connection, serializer)
        self.sockets.append(handle)
        return handle

    def receive_data(self, socket: object, data: bytes | str, is_binary: bool) -> None:
        assert isinstance(socket, Handle)
        if socket.closed:
            return
        message: Message | DecodeError | Unacceptable
        if is_binary:
            assert isinstance(data, bytes)
            message = socket.serializer.decode_binary(data)
        else:
            message = socket.serializer.decode_text(data)
        if isinstance(message, Unacceptable):
            self.messages.append(message.message)
        elif isinstance(message, DecodeError):
            socket.connection.close(1007, message.reason[:120])
            self.closed(socket)
        else:
            self.messages.append(message)

    def touch(self, socket: object) -> None:
        self.touched += 1

    def received_ping(self, socket: object) -> None:
        self.pings += 1

    def closed(
        self, socket: object, local_code: int | None = None, local_reason: str = ""
    ) -> None:
        assert isinstance(socket, Handle)
        socket.closed = True


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """
    The whole server frames in C{data}.
    """
    frames = []
    while len(data) >= 2:
        length, start = data[1] & 0x7F, 2
        if length == 126:
            length, start = int.from_bytes(data[2:4], "big"), 4
        elif length == 127:
            length, start = int.from_bytes(data[2:10], "big"), 10
        if len(data) < start + length:
            break
        frames.append((data[0] & 0x0F, data[start : start + length]))
        data = data[start + length :]
    return frames


class Connected:
    """
    One adapter after a successful handshake, on a L{StringTransport}.
    """

    def __init__(self, fast: bool, **options: Any) -> None:
        self.clock = Clock()
        self.host = RecordingHost(self.clock)
        self.factory = PhoenixWebSocketFactory(
            self.host,
            check_origin=None,
            fast_path=fast,
            clock=self.clock,
            handshake_timeout=0,
            **options,
        )
        self.factory.setProtocolOptions(closeHandshakeTimeout=0)
        protocol = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        assert isinstance(protocol, PhoenixWebSocketProtocol)
        self.protocol: PhoenixWebSocketProtocol = protocol
        self.transport: StringTransport = StringTransport(
            peerAddress=IPv4Address("TCP", "127.0.0.1", 1)
        )
        self.protocol.makeConnection(self.transport)
        self.protocol.dataReceived(HANDSHAKE)
        assert self.transport.value().startswith(b"HTTP/1.1 101"), (
            self.transport.value()
        )
        self.transport.clear()
        self.output: bytes = b""

    def feed(self, chunks: list[bytes]) -> None:
        """
        Deliver C{chunks} one read each, running the turns they need.
        """
        for chunk in chunks:
            if self.transport.disconnecting and not self.protocol._held:
                break
            self.protocol.dataReceived(chunk)
            self.settle()

    def turn(self) -> None:
        """
        Run what is due now, but not what that schedules (as a reactor
        does: that waits for the next turn).
        """
        due = list(self.clock.calls)
        del self.clock.calls[:]
        for call in due:
            call.func(*call.args, **call.kw)

    def settle(self) -> None:
        while self.clock.getDelayedCalls():
            self.clock.advance(0)

    def frames(self) -> list[tuple[int, bytes]]:
        self.output += self.transport.value()
        self.transport.clear()
        return server_frames(self.output)

    def close_code(self) -> int | None:
        for opcode, payload in self.frames():
            if opcode == 8:
                return int.from_bytes(payload[:2], "big") if payload else 1005
        return None


def heartbeat(ref: int, pad: int = 0) -> bytes:
    return b'[null,"%d","phoenix","heartbeat",{"p":"%s"}]' % (ref, b"x" * pad)


MIXED = [
    client_frame(heartbeat(1)),
    client_frame(heartbeat(2, pad=200)),
    client_frame(b"ping!", opcode=9),
    client_frame(heartbeat(3)[:7], fin=False),
    client_frame(b"", opcode=9),
    client_frame(heartbeat(3)[7:], opcode=0),
    client_frame(heartbeat(4)),
]
MIXED_REFS = ["1", "2", "3", "4"]


class AdapterTests(SynchronousTestCase):
    """
    The adapter delivers the same messages however the bytes arrive, on
    both paths.
    """

    def test_fake_core_is_a_socket_host(self) -> None:
        """The fake core these tests use has the transport seam's methods."""
        self.assertTrue(verifyObject(ISocketHost, RecordingHost(Clock())))

    def check_chunks(self, fast: bool, chunks: list[bytes]) -> None:
        connected = Connected(fast)
        connected.feed(chunks)
        self.assertEqual([m.ref for m in connected.host.messages], MIXED_REFS)
        self.assertEqual(
            [f for f in connected.frames() if f[0] == 10], [(10, b"ping!"), (10, b"")]
        )
        self.assertIsNone(connected.close_code())

    def test_one_byte_at_a_time(self) -> None:
        """Fed one byte per read, every message and ping arrives, on both paths."""
        data = b"".join(MIXED)
        for fast in (True, False):
            self.check_chunks(fast, [data[i : i + 1] for i in range(len(data))])

    def test_every_split_point(self) -> None:
        """Fed in two reads split anywhere, every message and ping arrives, on both paths."""
        data = b"".join(MIXED)
        for fast in (True, False):
            for cut in range(len(data) + 1):
                self.check_chunks(fast, [data[:cut], data[cut:]])

    def test_read_budget(self) -> None:
        """At most the budget of messages is read per turn; reading pauses meanwhile."""
        connected = Connected(True, read_budget=4)
        connected.protocol.dataReceived(
            b"".join(client_frame(heartbeat(i)) for i in range(10))
        )
        self.assertEqual(len(connected.host.messages), 4)
        self.assertEqual(connected.transport.producerState, "paused")
        connected.turn()
        self.assertEqual(len(connected.host.messages), 8)
        connected.turn()
        self.assertEqual(len(connected.host.messages), 10)
        self.assertEqual(connected.transport.producerState, "producing")

    def test_counts_in_host_counters(self) -> None:
        """Without counters of its own, the factory counts in (and reads its write budget from) the host's."""
        host = RecordingHost(Clock())
        factory = PhoenixWebSocketFactory(host, check_origin=None)
        self.assertIs(factory.counters, host.counters)

    def test_write_budget(self) -> None:
        """Messages that fan out widely are read a few a turn: reading stops once they made more than the write budget of messages out."""
        connected = Connected(True, write_budget=250)
        counters = connected.factory.counters
        receive = connected.host.receive_data

        def broadcast(socket: object, data: bytes | str, is_binary: bool) -> None:
            receive(socket, data, is_binary)
            counters.messages_out += 100  # a broadcast to 100 subscribers

        connected.host.receive_data = broadcast  # type: ignore[method-assign]
        connected.protocol.dataReceived(
            b"".join(client_frame(heartbeat(i)) for i in range(7))
        )
        self.assertEqual(len(connected.host.messages), 3)
        self.assertEqual(connected.transport.producerState, "paused")
        connected.turn()
        self.assertEqual(len(connected.host.messages), 6)
        connected.turn()
        self.assertEqual(len(connected.host.messages), 7)
        self.assertEqual(connected.transport.producerState, "producing")

    def test_split_frame_back_to_fast_path(self) -> None:
        """After a frame split across reads, the next frames go back to the fast path and its read budget (a split payload is finished by Autobahn first)."""
        frame = client_frame(heartbeat(0))
        # split in the header (6 bytes with the mask), and in the payload
        for split, first_read in ((5, 1 + 4), (10, 1 + 1 + 4)):
            connected = Connected(True, read_budget=4)
            connected.protocol.dataReceived(frame + frame[:split])
            connected.protocol.dataReceived(frame[split:] + frame * 8)
            self.assertEqual(len(connected.host.messages), first_read)
            self.assertEqual(connected.transport.producerState, "paused")
            connected.settle()
            self.assertEqual(len(connected.host.messages), 10)
            self.assertEqual(connected.transport.producerState, "producing")

    def test_read_slice(self) -> None:
        """On the Autobahn path at most the slice of bytes is read per turn."""
        frame = client_frame(heartbeat(1))
        connected = Connected(False, read_slice=len(frame) * 2)
        connected.protocol.dataReceived(frame * 5)
        self.assertEqual(len(connected.host.messages), 2)
        self.assertEqual(connected.transport.producerState, "paused")
        connected.turn()
        self.assertEqual(len(connected.host.messages), 4)
        connected.settle()
        self.assertEqual(len(connected.host.messages), 5)
        self.assertEqual(connected.transport.producerState, "producing")

    def test_ping_not_activity(self) -> None:
        """A WebSocket ping is answered and counted against the rate, but is not the client's activity."""
        for fast in (True, False):
            connected = Connected(fast)
            connected.feed([client_frame(b"hi", opcode=9)])
            self.assertEqual(connected.frames(), [(10, b"hi")])
            self.assertEqual(connected.host.touched, 0)
            self.assertEqual(connected.host.pings, 1)

    def test_pongs_capped(self) -> None:
        """Pongs count against the send-buffer cap: a client that never reads is dropped."""
        connected = Connected(False, max_send_buffer=100)
        producer = connected.transport.producer
        assert producer is not None
        producer.pauseProducing()  # Twisted's buffer is over its mark
        ping = client_frame(b"p" * 20, opcode=9)
        connected.feed([ping] * 10)
        self.assertTrue(connected.transport.disconnecting)
        pongs = [f for f in connected.frames() if f[0] == 10]
        self.assertEqual(len(pongs), 4)

    def test_invalid_utf8(self) -> None:
        """Invalid UTF-8 in a text frame closes with 1007 on both paths."""
        for fast in (True, False):
            connected = Connected(fast)
            connected.feed([client_frame(b'["\xff"]')])
            self.assertEqual(connected.close_code(), 1007)
            self.assertEqual(connected.host.messages, [])


class FallbackTests(SynchronousTestCase):
    """
    The fast path is feature-checked once; without it the adapter uses
    Autobahn's reader and logs one warning.
    """

    def setUp(self) -> None:
        self.patch(websocket, "_fast_path", None)

    def test_available(self) -> None:
        """With the Twisted and Autobahn in use the fast path is available."""
        self.assertTrue(websocket.fast_path_available())
        self.assertTrue(Connected(None).factory.fast_path)  # type: ignore[arg-type]

    def test_missing_attributes(self) -> None:
        """When Autobahn lacks the parser state, the fallback is used and one warning logged."""
        self.patch(
            websocket,
            "_PARSER_ATTRIBUTES",
            websocket._PARSER_ATTRIBUTES + ("no_such_attribute",),
        )
        events: list[dict[str, Any]] = []
        self.patch(websocket._log, "observer", events.append)
        first = Connected(None)  # type: ignore[arg-type]
        second = Connected(None)  # type: ignore[arg-type]
        self.assertFalse(first.factory.fast_path)
        self.assertFalse(second.factory.fast_path)
        self.assertEqual(len(events), 1)
        self.assertIn("Autobahn", events[0]["missing"])
        first.feed([client_frame(heartbeat(1)), client_frame(heartbeat(2))])
        self.assertEqual([m.ref for m in first.host.messages], ["1", "2"])

    def test_missing_buffer_attributes(self) -> None:
        """When Twisted lacks the buffer attributes, the fallback is used."""
        self.patch(websocket, "buffer_attributes_present", lambda: False)
        self.assertFalse(websocket.fast_path_available())


# The differential test: random frames at random chunkings, fast path
# against Autobahn's own.

MAX_FRAME = 300


@st.composite
def frame_sequences(draw: st.DrawFn) -> bytes:
    """
    A stream of client frames, valid and invalid.
    """
    frames: list[bytes] = []
    for index in range(draw(st.integers(1, 8))):
        kind = draw(
            st.sampled_from(
                [
                    "text",
                    "text",
                    "medium",
                    "binary",
                    "garbage",
                    "bad utf-8",
                    "ping",
                    "pong",
                    "close",
                    "fragments",
                    "rsv",
                    "opcode",
                    "unmasked",
                    "non-minimal",
                    "64-bit",
                    "oversize",
                    "continuation",
                    "big ping",
                ]
            )
        )
        message = heartbeat(index)
        if kind == "text":
            frames.append(client_frame(message))
        elif kind == "medium":
            frames.append(client_frame(heartbeat(index, pad=150)))
        elif kind == "binary":
            frames.append(client_frame(draw(st.binary(max_size=20)), opcode=2))
        elif kind == "garbage":
            frames.append(client_frame(b"not json"))
        elif kind == "bad utf-8":
            frames.append(client_frame(message[:5] + b"\xc3\x28" + message[5:]))
        elif kind == "ping":
            frames.append(client_frame(draw(st.binary(max_size=125)), opcode=9))
        elif kind == "big ping":
            frames.append(client_frame(b"p" * 126, opcode=9))
        elif kind == "pong":
            frames.append(client_frame(b"pong", opcode=10))
        elif kind == "close":
            frames.append(client_frame(b"\x03\xe8", opcode=8))
        elif kind == "fragments":
            cut = draw(st.integers(0, len(message)))
            parts = [
                client_frame(message[:cut], fin=False),
                client_frame(message[cut:], opcode=0),
            ]
            if draw(st.booleans()):
                parts.insert(1, client_frame(b"mid", opcode=9))
            frames.extend(parts)
        elif kind == "rsv":
            frames.append(client_frame(message, rsv=draw(st.sampled_from([1, 2, 4]))))
        elif kind == "opcode":
            frames.append(
                client_frame(message, opcode=draw(st.sampled_from([3, 7, 11, 15])))
            )
        elif kind == "unmasked":
            frames.append(client_frame(message, mask=None))
        elif kind == "non-minimal":
            frames.append(
                client_frame(message, length_bytes=draw(st.sampled_from([2, 8])))
            )
        elif kind == "64-bit":
            frames.append(client_frame(heartbeat(index, pad=150), length_bytes=8))
        elif kind == "oversize":
            frames.append(client_frame(heartbeat(index, pad=MAX_FRAME)))
        else:
            frames.append(client_frame(message, opcode=0))
    return b"".join(frames)


@st.composite
def chunkings(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    data = draw(frame_sequences())
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=6)))
    bounds = [0, *cuts, len(data)]
    return data, [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


class DifferentialTests(SynchronousTestCase):
    """
    The fast path and Autobahn's own path agree on everything.
    """

    @settings(max_examples=300, deadline=None)
    @given(chunkings(), st.integers(1, 4))
    def test_same_messages_and_close(
        self, case: tuple[bytes, list[bytes]], budget: int
    ) -> None:
        """Random valid and invalid frames at random chunkings give the same messages, pongs and close code on both paths."""
        data, chunks = case
        results = []
        for fast in (True, False):
            connected = Connected(
                fast, max_frame_size=MAX_FRAME, read_budget=budget, read_slice=64
            )
            connected.feed(chunks)
            frames = connected.frames()
            results.append(
                (
                    connected.host.messages,
                    [f for f in frames if f[0] == 10],
                    connected.close_code(),
                )
            )
        self.assertEqual(results[0], results[1])
