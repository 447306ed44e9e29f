"""
Tests for L{beryl.transport.edge}: the handshake deadline and the cap on
connections per address, on L{StringTransport}s with a L{Clock}.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.python.failure import Failure
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.static import Data

from beryl.tap import Options, make_beryl_service
from beryl.transport.edge import EdgeGuard, GuardedSite
from beryl.transport.websocket import PhoenixWebSocketFactory, PhoenixWebSocketProtocol
from beryl.web import socket_resource
from tests.test_websocket_adapter import RecordingHost

HANDSHAKE = (
    b"GET /socket/websocket?vsn=2.0.0 HTTP/1.1\r\n"
    b"Host: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def site(guard: EdgeGuard) -> GuardedSite:
    root = Resource()
    root.putChild(b"", Data(b"hello", "text/plain"))
    return GuardedSite(root, guard, reactor=guard.clock)


class Connection:
    """
    A client of a L{GuardedSite} on a L{StringTransport}.
    """

    def __init__(
        self, site: GuardedSite, host: str = "10.0.0.1", port: int = 1
    ) -> None:
        address = IPv4Address("TCP", host, port)
        self.protocol = site.buildProtocol(address)
        self.transport = StringTransport(peerAddress=address)
        self.transport.abortConnection = self.abort  # type: ignore[method-assign]
        self.transport.protocol = self.protocol  # type: ignore[attr-defined]
        self.aborted = False
        self.protocol.makeConnection(self.transport)

    def abort(self) -> None:
        self.aborted = True
        self.lose()

    @property
    def timed_out(self) -> bool:
        """
        Whether the server answered 408 and closed.
        """
        return self.transport.disconnecting and b"408 Request Timeout" in (
            self.transport.value()
        )

    def lose(self) -> None:
        self.transport.disconnecting = True
        self.transport.protocol.connectionLost(Failure(ConnectionDone()))  # type: ignore[attr-defined]


REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


class HandshakeDeadlineTests(SynchronousTestCase):
    """
    A request must be whole within the deadline, however it trickles.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.guard = EdgeGuard(self.clock, handshake_timeout=10)
        self.site = site(self.guard)

    def test_trickle(self) -> None:
        """A request that trickles in one byte at a time gets 408 at the deadline, and is aborted if it does not go."""
        connection = Connection(self.site)
        for byte in REQUEST[:-3]:
            connection.protocol.dataReceived(bytes((byte,)))
            self.clock.advance(1)
            if connection.transport.disconnecting:
                break
        self.assertTrue(connection.timed_out)
        self.assertEqual(self.clock.seconds(), 10)
        self.clock.advance(2)
        self.assertTrue(connection.aborted)
        self.assertEqual(self.guard.timed_out, 1)
        self.assertEqual(self.guard.counters.limit_hits["handshake_timeout"], 1)

    def test_silent(self) -> None:
        """A connection that sends nothing gets 408 and is closed at the deadline."""
        connection = Connection(self.site)
        self.clock.advance(9.9)
        self.assertFalse(connection.transport.disconnecting)
        self.clock.advance(0.1)
        self.assertTrue(connection.timed_out)

    def test_whole_request(self) -> None:
        """A whole request in time is answered and not aborted later."""
        connection = Connection(self.site)
        connection.protocol.dataReceived(REQUEST)
        self.assertIn(b"hello", connection.transport.value())
        self.clock.advance(50)  # (Twisted's own idle timeout is 60 s)
        self.assertFalse(connection.transport.disconnecting)

    def test_next_request(self) -> None:
        """On a kept-alive connection the next request has its own deadline."""
        connection = Connection(self.site)
        connection.protocol.dataReceived(REQUEST)
        self.clock.advance(100)
        connection.protocol.dataReceived(b"GET / HT")
        self.clock.advance(10)
        self.assertTrue(connection.timed_out)

    def test_closed(self) -> None:
        """A connection that closes leaves no deadline behind."""
        connection = Connection(self.site)
        connection.lose()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_one_timer(self) -> None:
        """Connections in their handshake share one timer, and each still times out at its own deadline."""
        early = [Connection(self.site) for _ in range(50)]
        self.clock.advance(4)
        late = [Connection(self.site) for _ in range(50)]
        finished = Connection(self.site)
        finished.protocol.dataReceived(REQUEST)
        guard_calls = [
            call
            for call in self.clock.getDelayedCalls()
            if getattr(getattr(call, "func", None), "__self__", None) is self.guard
        ]
        self.assertEqual(len(guard_calls), 1)
        self.clock.advance(6)
        self.assertTrue(all(c.timed_out for c in early))
        self.assertFalse(any(c.transport.disconnecting for c in late))
        self.clock.advance(3.9)
        self.assertFalse(any(c.transport.disconnecting for c in late))
        self.clock.advance(0.1)
        self.assertTrue(all(c.timed_out for c in late))
        self.assertFalse(finished.transport.disconnecting)
        self.assertEqual(self.guard.timed_out, 100)

    def test_off(self) -> None:
        """A timeout of zero sets no deadline."""
        guard = EdgeGuard(self.clock, handshake_timeout=0)
        connection = Connection(site(guard))
        self.clock.advance(1000)
        self.assertFalse(connection.aborted)


class PerAddressTests(SynchronousTestCase):
    """
    At most C{max_per_address} connections from one address are open.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.guard = EdgeGuard(self.clock, handshake_timeout=0, max_per_address=2)
        self.site = site(self.guard)

    def test_refused_past_limit(self) -> None:
        """The third connection from one address gets 429 and is closed."""
        Connection(self.site)
        Connection(self.site, port=2)
        third = Connection(self.site, port=3)
        self.assertTrue(third.transport.value().startswith(b"HTTP/1.1 429 "))
        self.assertIn(b"too many connections", third.transport.value())
        self.assertTrue(third.transport.disconnecting)
        self.assertEqual(self.guard.per_address, {"10.0.0.1": 2})
        self.assertEqual(self.guard.counters.limit_hits["connections_per_address"], 1)

    def test_other_address(self) -> None:
        """Another address has its own count."""
        Connection(self.site)
        Connection(self.site, port=2)
        other = Connection(self.site, host="10.0.0.2")
        other.protocol.dataReceived(REQUEST)
        self.assertIn(b"hello", other.transport.value())

    def test_released(self) -> None:
        """A closed connection frees its place, once."""
        first = Connection(self.site)
        Connection(self.site, port=2)
        first.lose()
        self.guard.release(first.transport)
        self.assertEqual(self.guard.per_address, {"10.0.0.1": 1})
        again = Connection(self.site, port=3)
        again.protocol.dataReceived(REQUEST)
        self.assertIn(b"hello", again.transport.value())

    def test_off(self) -> None:
        """A limit of zero admits everyone."""
        guard = EdgeGuard(self.clock, max_per_address=0)
        self.assertTrue(
            all(
                guard.admit(IPv4Address("TCP", "1.1.1.1", n)) is None for n in range(50)
            )
        )

    def test_no_host(self) -> None:
        """Addresses without a host (UNIX sockets) are not limited."""
        self.assertIsNone(self.guard.admit(UNIXAddress(b"/tmp/x")))


class UpgradeTests(SynchronousTestCase):
    """
    The deadline covers the whole WebSocket upgrade, and an open socket
    keeps its place in the per-address count until it closes.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.host = RecordingHost(self.clock)
        self.factory = PhoenixWebSocketFactory(
            self.host,
            check_origin=None,
            clock=self.clock,
            handshake_timeout=10,
            max_connections_per_address=1,
        )
        # Autobahn's own timer would use the global reactor.
        self.factory.setProtocolOptions(openHandshakeTimeout=0, closeHandshakeTimeout=0)
        root = Resource()
        root.putChild(b"socket", socket_resource(self.factory))
        self.site = GuardedSite(root, self.factory.guard, reactor=self.clock)

    def test_connect_hook_past_deadline(self) -> None:
        """An upgrade whose connect hook has not answered by the deadline gets 408 and is closed."""
        self.host.decision = Deferred()
        connection = Connection(self.site)
        connection.protocol.dataReceived(HANDSHAKE)
        self.clock.advance(9)
        self.assertFalse(connection.transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(connection.timed_out)
        self.clock.advance(2)
        self.assertTrue(connection.aborted)
        self.assertEqual(self.host.sockets, [])
        self.assertEqual(self.factory.guard.per_address, {})

    def test_open_socket(self) -> None:
        """An upgrade done in time is not aborted, and holds its address's place until closed."""
        connection = Connection(self.site)
        connection.protocol.dataReceived(HANDSHAKE)
        self.assertIn(b"101 Switching Protocols", connection.transport.value())
        self.assertEqual(len(self.host.sockets), 1)
        self.clock.advance(100)
        self.assertFalse(connection.transport.disconnecting)
        refused = Connection(self.site, port=2)
        self.assertTrue(refused.transport.value().startswith(b"HTTP/1.1 429 "))
        websocket = connection.transport.protocol  # type: ignore[attr-defined]
        self.assertIsInstance(websocket, PhoenixWebSocketProtocol)
        websocket.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.factory.guard.per_address, {})


class OptionTests(SynchronousTestCase):
    """
    C{twistd beryl}'s edge options.
    """

    def parse(self, *argv: str) -> Options:
        options = Options()
        options.parseOptions(list(argv))
        return options

    def test_defaults(self) -> None:
        """The handshake deadline is 10 s and the per-address cap is off."""
        options = self.parse()
        self.assertEqual(options["handshake-timeout"], 10.0)
        self.assertEqual(options["max-connections-per-ip"], 0)

    def test_parsed(self) -> None:
        """The options parse as numbers and reach the WebSocket factory."""
        options = self.parse(
            "--handshake-timeout", "2.5", "--max-connections-per-ip", "3"
        )
        service = make_beryl_service(options, MemoryReactor())
        coordinator = service.getServiceNamed("coordinator")
        self.assertEqual(options["handshake-timeout"], 2.5)
        self.assertEqual(options["max-connections-per-ip"], 3)
        self.assertIsNotNone(coordinator)

    def test_bad(self) -> None:
        """Negative, zero (for the deadline), NaN and words are refused, naming the option."""
        for argv in (
            ["--handshake-timeout", "0"],
            ["--handshake-timeout", "nan"],
            ["--max-connections-per-ip", "-1"],
            ["--max-connections-per-ip", "many"],
        ):
            error = self.assertRaises(UsageError, self.parse, *argv)
            self.assertIn(argv[0], str(error))
