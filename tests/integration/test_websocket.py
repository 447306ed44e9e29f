"""
The WebSocket transport in-process, over real loopback sockets: what
happens to clients that vanish during the handshake or stop reading.
"""

from __future__ import annotations

import socket
from typing import Any, Mapping

from twisted.internet import reactor as global_reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.server import Site

from beryl.app import App, ConnectInfo, ConnectOk, ConnectResult
from beryl.demo import demo_app
from beryl.server import make_server
from beryl.web import root_resource

HANDSHAKE = (
    "GET /socket/websocket?vsn=2.0.0 HTTP/1.1\r\n"
    "Host: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)

# Twisted's stubs type the global reactor narrowly (listenTCP rejects a Site).
reactor: Any = global_reactor


def masked_text(payload: bytes) -> bytes:
    """
    A client text frame (mask of zeros, so the payload is unchanged).
    """
    assert len(payload) < 126
    return bytes((0x81, 0x80 | len(payload))) + b"\0\0\0\0" + payload


def client_frame(
    payload: bytes, opcode: int = 1, fin: bool = True, mask: bytes = b"\x37\xfa\x21\x3d"
) -> bytes:
    """
    A masked client frame of any size.
    """
    length = len(payload)
    first = (0x80 if fin else 0) | opcode
    if length < 126:
        header = bytes((first, 0x80 | length))
    elif length < 65536:
        header = bytes((first, 0x80 | 126)) + length.to_bytes(2, "big")
    else:
        header = bytes((first, 0x80 | 127)) + length.to_bytes(8, "big")
    masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
    return header + mask + masked


def read_frames(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """
    The whole server frames at the start of C{data}, and what is left.
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
    return frames, data


class TransportTests(TestCase):
    def serve(self, app: App, **options: Any) -> int:
        server = make_server(app, reactor, check_origin=None, **options)
        server.service.startService()
        self.addCleanup(server.service.stopService)
        self.server = server
        port = reactor.listenTCP(
            0,
            Site(root_resource(server.websocket_factory, demo=False)),
            interface="127.0.0.1",
        )
        self.addCleanup(port.stopListening)
        return int(port.getHost().port)

    async def read_response(self, client: socket.socket) -> bytes:
        """
        Read the handshake's response without blocking the reactor.
        """
        client.setblocking(False)
        data = b""
        while b"\r\n\r\n" not in data:
            try:
                data += client.recv(4096)
            except BlockingIOError:
                await deferLater(reactor, 0.01, lambda: None)
        self.assertTrue(data.startswith(b"HTTP/1.1 101"), data)
        return data

    async def exchange(
        self, client: socket.socket, chunks: list[bytes], count: int
    ) -> list[tuple[int, bytes]]:
        """
        Send C{chunks} one by one (each its own TCP write), then collect
        C{count} server frames.
        """
        for chunk in chunks:
            client.sendall(chunk)
            await deferLater(reactor, 0.02, lambda: None)
        data = b""
        frames: list[tuple[int, bytes]] = []
        for _ in range(500):
            try:
                data += client.recv(1 << 20)
            except BlockingIOError:
                await deferLater(reactor, 0.01, lambda: None)
            frames, _ = read_frames(data)
            if len(frames) >= count:
                break
        return frames

    async def test_frame_shapes(self) -> None:
        """Frames split across reads, several in one read, 16- and 64-bit lengths, fragments and pings all arrive."""
        port = self.serve(demo_app())
        client = socket.create_connection(("127.0.0.1", port))
        self.addCleanup(client.close)
        client.sendall(HANDSHAKE.encode())
        await self.read_response(client)
        join = client_frame(b'["1","1","feed:x","phx_join",{}]')
        (reply,) = await self.exchange(client, [join], 1)
        self.assertIn(b'"ok"', reply[1])

        def ping(ref: int, body: str) -> bytes:
            return b'["1","%d","feed:x","ping",{"b":"%s"}]' % (ref, body.encode())

        medium, large = "m" * 300, "L" * 70000
        whole = client_frame(ping(2, "a")) + client_frame(ping(3, "b"))
        split = client_frame(ping(4, medium))
        fragmented = client_frame(ping(6, "frag")[:10], fin=False) + client_frame(
            ping(6, "frag")[10:], opcode=0
        )
        control = client_frame(b"hi", opcode=9)
        frames = await self.exchange(
            client,
            [
                whole,
                split[:3],
                split[3:40],
                split[40:],
                client_frame(ping(5, large)),
                fragmented,
                control,
            ],
            6,
        )
        self.assertEqual(len(frames), 6)
        refs = [(opcode, payload[:14]) for opcode, payload in frames]
        self.assertEqual(
            [(opcode, body) for opcode, body in refs if opcode == 1],
            [(1, b'["1","%d","feed' % n) for n in (2, 3, 4, 5, 6)],
        )
        self.assertIn((10, b"hi"), frames)
        self.assertIn(large.encode(), frames[3][1])
        self.assertIn(medium.encode(), frames[2][1])

    async def test_data_frame_inside_fragmented_message(self) -> None:
        """A whole data frame in the middle of a fragmented message fails the connection with 1002."""
        port = self.serve(demo_app())
        client = socket.create_connection(("127.0.0.1", port))
        self.addCleanup(client.close)
        client.sendall(HANDSHAKE.encode())
        await self.read_response(client)
        message = b'["1","1","feed:x","phx_join",{}]'
        frames = await self.exchange(
            client,
            [
                client_frame(message[:10], fin=False),
                client_frame(b'["1","2","phoenix","heartbeat",{}]'),
            ],
            1,
        )
        self.assertEqual(
            [(opcode, payload[:2]) for opcode, payload in frames], [(8, b"\x03\xea")]
        )
        # Answer the close, so the server finishes the close handshake.
        client.sendall(client_frame(b"\x03\xea", opcode=8))
        for _ in range(300):
            try:
                if client.recv(4096) == b"":
                    break
            except BlockingIOError:
                await deferLater(reactor, 0.01, lambda: None)
            except ConnectionResetError:
                break

    async def test_client_gone_during_connect_hook(self) -> None:
        """A client that leaves while an asynchronous connect hook decides never becomes a socket."""
        decision: Deferred[ConnectResult] = Deferred()
        asked: list[Mapping[str, Any]] = []

        def connect(
            params: Mapping[str, Any], info: ConnectInfo
        ) -> Deferred[ConnectResult]:
            asked.append(params)
            return decision

        port = self.serve(App(connect=connect))
        client = socket.create_connection(("127.0.0.1", port))
        client.sendall(HANDSHAKE.encode())
        while not asked:
            await deferLater(reactor, 0.01, lambda: None)
        client.close()
        await deferLater(reactor, 0.1, lambda: None)
        decision.callback(ConnectOk())
        await deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(self.server.coordinator.socket_count(), 0)

    async def test_slow_reader_dropped(self) -> None:
        """A client that stops reading is disconnected once its send buffer passes the limit."""
        port = self.serve(demo_app(), max_send_buffer=256 * 1024)
        client = socket.create_connection(("127.0.0.1", port))
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.sendall(HANDSHAKE.encode())
        await self.read_response(client)
        client.sendall(masked_text(b'["1","1","feed:x","phx_join",{}]'))
        while self.server.coordinator.local_subscriber_count("feed:x") == 0:
            await deferLater(reactor, 0.01, lambda: None)
        body = "x" * 64 * 1024
        for _ in range(200):
            self.server.coordinator.broadcast("feed:x", "news", {"body": body})
            await deferLater(reactor, 0, lambda: None)
            if self.server.coordinator.socket_count() == 0:
                break
        for _ in range(100):
            if self.server.coordinator.socket_count() == 0:
                break
            await deferLater(reactor, 0.01, lambda: None)
        client.close()
        self.assertEqual(self.server.coordinator.socket_count(), 0)
