"""
The limits at the WebSocket edge against a real C{twistd beryl} over
loopback: each test reproduces an attack, bounded, and checks the server
stops it and keeps serving.
"""

from __future__ import annotations

import socket
import time
from typing import Any, cast

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.server import Site

from beryl.demo import demo_app
from beryl.server import make_server
from beryl.web import root_resource
from tests.interop.harness import BerylServer, start_server
from tests.test_frames import client_frame
from tests.test_websocket_adapter import server_frames

UPGRADE = (
    b"GET /socket/websocket?vsn=2.0.0 HTTP/1.1\r\n"
    b"Host: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
PATIENCE = 60.0
"""Seconds to wait for something the server must do; generous, for a loaded machine."""


def connect(server: BerylServer) -> socket.socket:
    client = socket.create_connection(("127.0.0.1", server.port), timeout=PATIENCE)
    return client


def response_head(client: socket.socket) -> bytes:
    """
    The HTTP response head (and what came with it), or what arrived before
    the server closed.
    """
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = client.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def upgraded(server: BerylServer) -> socket.socket:
    client = connect(server)
    client.sendall(UPGRADE)
    head = response_head(client)
    assert head.startswith(b"HTTP/1.1 101"), head
    return client


def closed_by_server(client: socket.socket) -> bool:
    """
    Read until the server closes the connection; C{False} if it did not
    within L{PATIENCE}.
    """
    client.settimeout(PATIENCE)
    try:
        while client.recv(65536):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        return False
    return True


class EdgeLimitTests(SynchronousTestCase):
    """
    Slow handshakes, many connections from one address, pong floods and
    ping-only sockets against C{twistd beryl}.
    """

    def test_handshake_trickle(self) -> None:
        """An upgrade request trickling in a byte at a time gets 408 and is closed at the deadline, and others are still served."""
        server = start_server(self, "--handshake-timeout", "1")
        client = connect(server)
        self.addCleanup(client.close)
        request = UPGRADE[:-2] + b"X-Padding: " + b"a" * 400 + b"\r\n\r\n"
        sent = 0
        answer = b""
        cut_off = False
        client.settimeout(0.2)
        for byte in request:
            try:
                client.sendall(bytes((byte,)))
                sent += 1
                chunk = client.recv(4096)
                answer += chunk
                if chunk == b"":
                    cut_off = True
                    break
            except TimeoutError:
                continue
            except (ConnectionResetError, BrokenPipeError):
                cut_off = True
                break
        self.assertTrue(cut_off, "the server waited for the whole trickled request")
        self.assertLess(sent, len(request))
        self.assertTrue(answer.startswith(b"HTTP/1.1 408 "), answer)
        upgraded(server).close()
        self.assertIn("did not finish their HTTP request", server.log())

    def test_connections_per_address(self) -> None:
        """Past --max-connections-per-ip a connection gets 429; a closed one frees its place."""
        server = start_server(self, "--max-connections-per-ip", "2")
        first = upgraded(server)
        second = upgraded(server)
        self.addCleanup(second.close)
        third = connect(server)
        self.addCleanup(third.close)
        head = response_head(third)
        self.assertTrue(head.startswith(b"HTTP/1.1 429 "), head)
        self.assertIn(b"too many connections", head)
        first.close()
        deadline = time.monotonic() + PATIENCE
        while True:
            again = connect(server)
            again.sendall(UPGRADE)
            head = response_head(again)
            again.close()
            if head.startswith(b"HTTP/1.1 101") or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.assertTrue(head.startswith(b"HTTP/1.1 101"), head)

    def test_pong_flood(self) -> None:
        """A client that sends pings and never reads is dropped at the send-buffer cap, and others are still served."""
        # No message rate limit here: it would cut the flood off first (see
        # test_ping_flood_rate_limited); this test is about the pongs.
        server = start_server(self, "--max-message-rate", "0")
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.settimeout(PATIENCE)
        client.connect(("127.0.0.1", server.port))
        self.addCleanup(client.close)
        client.sendall(UPGRADE)
        self.assertTrue(response_head(client).startswith(b"HTTP/1.1 101"))
        pings = client_frame(b"p" * 125, opcode=9) * 1000
        sent = 0
        dropped = False
        while sent < 256 * 1024 * 1024:
            try:
                client.sendall(pings)
            except (ConnectionResetError, BrokenPipeError):
                dropped = True
                break
            sent += len(pings)
        self.assertTrue(dropped, f"still connected after {sent} bytes of pings")
        upgraded(server).close()
        self.assertIn("reads too slowly", server.log())

    def test_ping_flood_rate_limited(self) -> None:
        """WebSocket pings count against the message rate: a ping flood is closed with 1008."""
        server = start_server(self)
        client = upgraded(server)
        self.addCleanup(client.close)
        client.settimeout(PATIENCE)
        client.sendall(client_frame(b"p", opcode=9) * 5000)
        data = b""
        close = None
        deadline = time.monotonic() + PATIENCE
        while close is None and time.monotonic() < deadline:
            chunk = client.recv(65536)
            if not chunk:
                break
            data += chunk
            close = next((p for op, p in server_frames(data) if op == 8), None)
        self.assertIsNotNone(close, "no close frame")
        assert close is not None
        self.assertEqual(int.from_bytes(close[:2], "big"), 1008)

    def test_pings_not_activity(self) -> None:
        """A socket that only sends WebSocket pings is closed as idle with 1001."""
        server = start_server(self, "--heartbeat-timeout", "1")
        client = upgraded(server)
        self.addCleanup(client.close)
        client.settimeout(0.2)
        data = b""
        close = None
        deadline = time.monotonic() + PATIENCE
        while close is None and time.monotonic() < deadline:
            client.sendall(client_frame(b"still here", opcode=9))
            try:
                data += client.recv(4096)
            except TimeoutError:
                continue
            close = next((p for op, p in server_frames(data) if op == 8), None)
        self.assertIsNotNone(close)
        assert close is not None
        self.assertEqual(int.from_bytes(close[:2], "big"), 1001)
        self.assertIn((10, b"still here"), server_frames(data))


class FairnessTests(TestCase):
    """
    One socket flooding pipelined messages does not hold up another, in a
    server in this process (so the order the core sees messages in can be
    recorded).
    """

    async def test_flood_does_not_starve(self) -> None:
        """Another socket's message is handled after a bounded number of a flooder's, not after its whole burst."""
        server = make_server(demo_app(), reactor, check_origin=None)
        server.service.startService()
        self.addCleanup(server.service.stopService)
        port = cast(Any, reactor).listenTCP(
            0,
            Site(root_resource(server.websocket_factory, demo=False)),
            interface="127.0.0.1",
        )
        self.addCleanup(port.stopListening)
        number = port.getHost().port
        order: list[str] = []
        receive = server.coordinator.receive_data

        def recording(socket: Any, data: bytes | str, is_binary: bool) -> None:
            order.append(str(socket.socket_id))
            receive(socket, data, is_binary)

        server.coordinator.receive_data = recording  # type: ignore[method-assign]
        clients = []
        for _ in range(2):
            client = socket.create_connection(("127.0.0.1", number))
            self.addCleanup(client.close)
            client.sendall(UPGRADE)
            client.setblocking(False)
            head = b""
            while b"\r\n\r\n" not in head:
                try:
                    head += client.recv(4096)
                except BlockingIOError:
                    await deferLater(reactor, 0.01, lambda: None)
            self.assertTrue(head.startswith(b"HTTP/1.1 101"), head)
            client.setblocking(True)
            client.sendall(client_frame(b'["1","1","feed:x","phx_join",{}]'))
            clients.append(client)
        while len(order) < 2:
            await deferLater(reactor, 0.01, lambda: None)
        flooder_id, probe_id = order[0], order[1]
        if flooder_id == probe_id:
            self.fail("both joins came from one socket")
        burst = 1000
        ping = client_frame(b'["1","2","feed:x","ping",{}]')
        flooder, probe = clients
        flooder_first = order.index(flooder_id)
        flooder.sendall(ping * burst)
        await deferLater(reactor, 0, lambda: None)
        probe.sendall(ping)
        deadline = time.monotonic() + PATIENCE
        while order.count(flooder_id) < burst + 1 or order.count(probe_id) < 2:
            if time.monotonic() > deadline:
                self.fail(f"only {len(order)} messages handled")
            await deferLater(reactor, 0.01, lambda: None)
        probe_at = len(order) - order[::-1].index(probe_id) - 1
        before = order[flooder_first + 1 : probe_at].count(flooder_id)
        self.assertLess(before, burst // 2)
