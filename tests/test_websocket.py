"""
The WebSocket transport in-process, over real loopback sockets: what
happens to clients that vanish during the handshake or stop reading.
"""

from __future__ import annotations

import socket
from typing import Any, Mapping

from twisted.internet import reactor
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


def masked_text(payload: bytes) -> bytes:
    """
    A client text frame (mask of zeros, so the payload is unchanged).
    """
    assert len(payload) < 126
    return bytes((0x81, 0x80 | len(payload))) + b"\0\0\0\0" + payload


class TransportTests(TestCase):
    def serve(self, app: App, **options: Any) -> int:
        server = make_server(app, reactor, check_origin=None, **options)
        server.service.startService()
        self.addCleanup(server.service.stopService)
        self.server = server
        port = reactor.listenTCP(
            0, Site(root_resource(server.websocket_factory, demo=False)), interface="127.0.0.1"
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

    async def test_client_gone_during_connect_hook(self) -> None:
        """A client that leaves while an asynchronous connect hook decides never becomes a socket."""
        decision: Deferred[ConnectResult] = Deferred()
        asked: list[Mapping[str, Any]] = []

        def connect(params: Mapping[str, Any], info: ConnectInfo) -> Deferred[ConnectResult]:
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
