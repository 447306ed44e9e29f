"""
Tests for L{beryl.transport.writer}: the turn counter, the direct writer on
a TCP connection whose socket is a fake, and the capped writer on a
L{StringTransport}.
"""

from __future__ import annotations

from typing import Callable

from twisted.internet import tcp
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from beryl.transport.writer import (
    CappedWriter,
    WriteTurns,
    buffer_attributes_present,
    direct_writer,
)


class FakeSocket:
    """
    A non-blocking socket that takes at most C{room} bytes per C{send}.
    """

    def __init__(self, room: int = 1 << 20) -> None:
        self.room = room
        self.sent: list[bytes] = []

    def setblocking(self, flag: bool) -> None:
        pass

    def fileno(self) -> int:
        return 99

    def send(self, data: bytes) -> int:
        if not self.room:
            raise BlockingIOError()
        taken = data[: self.room]
        self.sent.append(taken)
        return len(taken)


class FakeConnection(tcp.Connection):
    """
    Twisted's TCP connection, its buffer real, its socket a fake.
    """

    aborted = 0

    def __init__(self, sock: FakeSocket) -> None:
        super().__init__(sock, Protocol(), MemoryReactor())  # type: ignore[arg-type]
        self.connected = 1

    def buffered(self) -> bytes:
        return self.dataBuffer[self.offset :] + b"".join(self._tempDataBuffer)

    def abortConnection(self) -> None:
        self.aborted += 1

    def getPeer(self) -> str:
        return "peer"


class WriteTurnsTests(SynchronousTestCase):
    """
    L{WriteTurns} moves on once per reactor turn.
    """

    def test_same_turn(self) -> None:
        """The number stays within a turn and moves on at the next one."""
        clock = Clock()
        turns = WriteTurns(clock)
        first = turns.current()
        self.assertEqual(turns.current(), first)
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        clock.advance(0)
        self.assertEqual(turns.current(), first + 1)

    def test_idle_turns_not_scheduled(self) -> None:
        """Nothing is scheduled until someone asks."""
        clock = Clock()
        WriteTurns(clock)
        self.assertEqual(clock.getDelayedCalls(), [])


class DirectWriterTests(SynchronousTestCase):
    """
    L{direct_writer} sends a turn's first write straight to the socket.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.turns = WriteTurns(self.clock)

    def writer(
        self, sock: FakeSocket, cap: int = 1000
    ) -> tuple[FakeConnection, Callable[[bytes], None]]:
        connection = FakeConnection(sock)
        self.drops: list[None] = []
        write = direct_writer(
            connection, self.turns, cap, lambda: self.drops.append(None)
        )
        assert write is not None
        return connection, write

    def test_attributes_present(self) -> None:
        """This Twisted has the buffer attributes the writer reads."""
        self.assertTrue(buffer_attributes_present())

    def test_not_tcp(self) -> None:
        """A transport that is not a TCP connection gets no direct writer."""
        self.assertIsNone(direct_writer(StringTransport(), self.turns))

    def test_first_write_of_turn(self) -> None:
        """The first write goes to the socket, later ones of the turn to Twisted's buffer."""
        sock = FakeSocket()
        connection, write = self.writer(sock)
        write(b"one")
        write(b"two")
        self.assertEqual(sock.sent, [b"one"])
        self.assertEqual(connection.buffered(), b"two")

    def test_buffer_not_empty(self) -> None:
        """While Twisted holds bytes, writes queue behind them, in order."""
        sock = FakeSocket()
        connection, write = self.writer(sock)
        write(b"one")
        write(b"two")
        self.clock.advance(0)
        write(b"three")
        self.assertEqual(sock.sent, [b"one"])
        self.assertEqual(connection.buffered(), b"twothree")

    def test_partial_send(self) -> None:
        """What the socket does not take is buffered."""
        sock = FakeSocket(room=2)
        connection, write = self.writer(sock)
        write(b"hello")
        self.assertEqual(sock.sent, [b"he"])
        self.assertEqual(connection.buffered(), b"llo")

    def test_would_block(self) -> None:
        """A socket that takes nothing leaves everything to the buffer."""
        sock = FakeSocket(room=0)
        connection, write = self.writer(sock)
        write(b"hello")
        self.assertEqual(connection.buffered(), b"hello")

    def test_cap(self) -> None:
        """Past the cap the connection is aborted once, the drop is told once, and later writes are dropped."""
        sock = FakeSocket(room=0)
        connection, write = self.writer(sock, cap=10)
        for _ in range(5):
            write(b"0123456")
        self.assertEqual(connection.aborted, 1)
        self.assertEqual(len(self.drops), 1)
        self.assertEqual(connection.buffered(), b"0123456" * 2)


class CappedWriterTests(SynchronousTestCase):
    """
    L{CappedWriter} counts what is written while the transport says it is
    full.
    """

    def test_writes_through(self) -> None:
        """Writes reach the transport, which has the writer as its streaming producer."""
        transport = StringTransport()
        writer = CappedWriter(transport, 10)
        writer.write(b"abc")
        self.assertEqual(transport.value(), b"abc")
        self.assertIs(transport.producer, writer)
        self.assertTrue(transport.streaming)

    def test_cap(self) -> None:
        """Past the cap while paused the connection is aborted once, and the drop is told once."""
        transport = StringTransport()
        drops: list[None] = []
        writer = CappedWriter(transport, 10, lambda: drops.append(None))
        writer.pauseProducing()
        writer.write(b"123456")
        writer.write(b"123456")
        writer.write(b"123456")
        self.assertEqual(transport.value(), b"123456")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(len(drops), 1)

    def test_resume_resets(self) -> None:
        """Once the buffer drains the count starts again."""
        transport = StringTransport()
        writer = CappedWriter(transport, 10)
        writer.pauseProducing()
        writer.write(b"123456")
        writer.resumeProducing()
        writer.pauseProducing()
        writer.write(b"123456")
        self.assertFalse(transport.disconnecting)
        self.assertEqual(transport.value(), b"123456" * 2)

    def test_other_producer(self) -> None:
        """A transport that already has a producer still gets the writes (uncapped)."""
        transport = StringTransport()
        transport.registerProducer(CappedWriter(StringTransport()), True)
        writer = CappedWriter(transport, 1)
        writer.write(b"still written")
        self.assertEqual(transport.value(), b"still written")
