"""
Writing to a TCP transport with a cap on what may wait for a slow client,
and, where Twisted's private buffer attributes are available, a first write
per reactor turn that goes straight to the socket.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet import abstract, tcp
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.internet.testing import MemoryReactor
from twisted.logger import Logger
from zope.interface import implementer

__all__ = [
    "BUFFER_ATTRIBUTES",
    "CappedWriter",
    "WriteTurns",
    "buffer_attributes_present",
    "direct_writer",
]

_log = Logger()

BUFFER_ATTRIBUTES = ("dataBuffer", "offset", "_tempDataLen")
"""The private attributes of C{abstract.FileDescriptor} that L{direct_writer}
reads to learn how many bytes Twisted holds for a connection."""


def buffer_attributes_present() -> bool:
    """
    Whether this Twisted's file descriptors have L{BUFFER_ATTRIBUTES}, checked
    on a fresh instance.
    """
    probe = abstract.FileDescriptor(MemoryReactor())
    return all(hasattr(probe, name) for name in BUFFER_ATTRIBUTES)


class WriteTurns:
    """
    Counts reactor turns in which something was written, so that a
    connection can tell its first write of a turn from the ones after it.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self.number = 0
        self._scheduled = False

    def current(self) -> int:
        """
        The number of this turn; the count moves on at the next turn.
        """
        if not self._scheduled:
            self._scheduled = True
            self._clock.callLater(0, self._advance)
        return self.number

    def _advance(self) -> None:
        self.number += 1
        self._scheduled = False


def _too_slow(
    transport: Any, buffered: int, on_drop: Callable[[], None] | None
) -> None:
    _log.warn(
        "A client at {peer} reads too slowly ({buffered} bytes waiting); dropping it.",
        peer=transport.getPeer(),
        buffered=buffered,
    )
    transport.abortConnection()
    if on_drop is not None:
        on_drop()


def direct_writer(
    transport: Any,
    turns: WriteTurns,
    max_buffer: int = 16 * 1024 * 1024,
    on_drop: Callable[[], None] | None = None,
) -> Callable[[bytes], None] | None:
    """
    A write function for C{transport} that, on a plain TCP connection with
    nothing buffered, sends a turn's first message straight to the socket:
    one C{send()} instead of Twisted's buffer, C{epoll} registration and
    deferred write (three system calls).  Later messages of the same turn
    (a burst of broadcasts, pipelined pings) go to Twisted's buffer, so they
    leave together in one C{send()}.  What the socket does not take goes
    through C{transport.write} as usual.

    A client that stops reading would make the buffer grow without end: once
    more than C{max_buffer} bytes wait, the connection is aborted (once)
    and C{on_drop} is called.

    @return: C{None} where this cannot work: a transport that is not a plain
        TCP connection (TLS), or one without L{BUFFER_ATTRIBUTES}.
    """
    sock = getattr(transport, "socket", None)
    if (
        not isinstance(transport, tcp.Connection)
        or sock is None
        or not all(hasattr(transport, name) for name in BUFFER_ATTRIBUTES)
    ):
        return None
    return _DirectWriter(transport, sock.send, turns, max_buffer, on_drop).write


class _DirectWriter:
    """
    The state behind L{direct_writer}'s function: one per open socket, so
    it has slots rather than a closure's cells (about half the memory).
    """

    __slots__ = (
        "_transport",
        "_send",
        "_turns",
        "_max_buffer",
        "_on_drop",
        "_last_turn",
        "_aborted",
    )

    def __init__(
        self,
        transport: Any,
        send: Callable[[bytes], int],
        turns: WriteTurns,
        max_buffer: int,
        on_drop: Callable[[], None] | None,
    ) -> None:
        self._transport = transport
        self._send = send
        self._turns = turns
        self._max_buffer = max_buffer
        self._on_drop = on_drop
        self._last_turn = -1
        self._aborted = False

    def write(self, data: bytes) -> None:
        if self._aborted:
            return
        transport = self._transport
        buffered = len(transport.dataBuffer) - transport.offset + transport._tempDataLen
        if buffered or transport.disconnecting or not transport.connected:
            if buffered > self._max_buffer:
                self._aborted = True
                _too_slow(transport, buffered, self._on_drop)
                return
            transport.write(data)
            return
        turn = self._turns.current()
        if turn == self._last_turn:
            transport.write(data)
            return
        self._last_turn = turn
        try:
            sent = self._send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            # Let Twisted notice the error and close the connection.
            transport.write(data)
            return
        if sent < len(data):
            transport.write(data[sent:])


@implementer(IPushProducer)
class CappedWriter:
    """
    Writes through C{transport.write} only, and learns how much waits from
    the public producer API: registered as the transport's streaming
    producer, it is paused while Twisted's buffer is over its high-water
    mark, and counts what is written while paused.  Once that passes
    C{max_buffer} the connection is aborted (once).

    This is the write path when L{direct_writer} cannot be used; the cap is
    the same, give or take Twisted's high-water mark (64 KiB).
    """

    def __init__(
        self,
        transport: Any,
        max_buffer: int = 16 * 1024 * 1024,
        on_drop: Callable[[], None] | None = None,
    ) -> None:
        self._transport = transport
        self._on_drop = on_drop
        self._max_buffer = max_buffer
        self._paused = False
        self._waiting = 0
        self._aborted = False
        try:
            transport.registerProducer(self, True)
        except RuntimeError:
            # Someone else produces for this transport: the cap cannot be
            # told, so writes simply go through.
            _log.warn(
                "No send-buffer cap for {peer}: its transport already has a producer.",
                peer=transport.getPeer(),
            )

    def write(self, data: bytes) -> None:
        """
        Write C{data}, or drop the connection if too much already waits.
        """
        if self._aborted:
            return
        if self._paused:
            self._waiting += len(data)
            if self._waiting > self._max_buffer:
                self._aborted = True
                _too_slow(self._transport, self._waiting, self._on_drop)
                return
        self._transport.write(data)

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._waiting = 0

    def stopProducing(self) -> None:
        self._aborted = True
