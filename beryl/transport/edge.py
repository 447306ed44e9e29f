"""
Limits at the edge, before a connection is a socket: an absolute deadline
for the whole HTTP upgrade, and a cap on connections per client address.

L{EdgeGuard} keeps the books; L{GuardedSite} is a C{twisted.web} site whose
HTTP channels report to it, and the WebSocket protocol reports the end of
its handshake and its connection's end.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import Site

from beryl.counters import Counters

__all__ = ["EdgeGuard", "GuardedSite"]

_log = Logger()

_TIMEOUT_BODY = b"request or upgrade not finished in time\n"
_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: %d\r\n"
    b"Connection: close\r\n\r\n" % len(_TIMEOUT_BODY)
) + _TIMEOUT_BODY
_GRACE = 2.0
"""Seconds a timed-out connection has to take its 408 before it is aborted."""

_REFUSAL_BODY = b"too many connections from this address\n"
_REFUSAL = (
    b"HTTP/1.1 429 Too Many Requests\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: %d\r\n"
    b"Connection: close\r\n\r\n" % len(_REFUSAL_BODY)
) + _REFUSAL_BODY


class EdgeGuard:
    """
    The books of one listener: open connections per client address, and a
    deadline per connection that is still in its HTTP request or upgrade.

    @param handshake_timeout: seconds from the first byte of a request (the
        connection, for the first one) until the request is whole, and for
        a WebSocket until the upgrade is done; then the client gets
        C{408 Request Timeout} and the connection is closed (aborted if it
        does not take that within a few seconds), however slowly bytes
        kept arriving.  C{0} turns it off.
    @param max_per_address: most open connections from one IP address;
        C{0} for no limit.
    """

    def __init__(
        self,
        clock: IReactorTime,
        handshake_timeout: float = 10.0,
        max_per_address: int = 0,
        counters: Counters | None = None,
    ) -> None:
        self.clock = clock
        self.counters = counters if counters is not None else Counters()
        self.handshake_timeout = handshake_timeout
        self.max_per_address = max_per_address
        self.per_address: dict[str, int] = {}
        self.timed_out = 0
        self._open: dict[object, str | None] = {}
        # Every deadline is its start plus the same timeout, so in order
        # of start they are in order of expiry: one timer, for the first,
        # serves them all (a delayed call per connection would be kept,
        # cancelled, by the reactor long after the upgrade).
        self._deadlines: OrderedDict[object, float] = OrderedDict()
        self._timer: IDelayedCall | None = None
        self._logged_at = -1e9
        self._unlogged = 0

    def admit(self, address: IAddress | None) -> str | None | bool:
        """
        Count a new connection from C{address}.

        @return: C{False} when the address already has its most
            connections (the connection is refused and not counted);
            otherwise the key it is counted under (C{None} for addresses
            without a host, which are not limited).
        """
        host = getattr(address, "host", None)
        if host is None or not self.max_per_address:
            return None
        count = self.per_address.get(host, 0)
        if count >= self.max_per_address:
            self.counters.limit_hit("connections_per_address")
            return False
        self.per_address[host] = count + 1
        return str(host)

    def opened(self, transport: object, host: str | None) -> None:
        """
        A connection admitted under C{host} is made: keep its count until
        L{release}, and start its handshake deadline.
        """
        self._open[transport] = host
        self.start(transport)

    def start(self, transport: object) -> None:
        """
        Start (again) the deadline of C{transport}'s request.
        """
        if self.handshake_timeout and transport not in self._deadlines:
            self._deadlines[transport] = self.clock.seconds() + self.handshake_timeout
            if self._timer is None:
                self._timer = self.clock.callLater(self.handshake_timeout, self._due)

    def pending(self, transport: object) -> bool:
        """
        Whether C{transport}'s deadline runs.
        """
        return transport in self._deadlines

    def settle(self, transport: object) -> None:
        """
        The request (or the upgrade) on C{transport} is done in time.
        """
        deadlines = self._deadlines
        if deadlines.pop(transport, None) is not None and not deadlines:
            timer, self._timer = self._timer, None
            if timer is not None and timer.active():
                timer.cancel()

    def release(self, transport: object) -> None:
        """
        C{transport}'s connection is gone; safe to call more than once.
        """
        self.settle(transport)
        if transport not in self._open:
            return
        host = self._open.pop(transport)
        if host is not None:
            count = self.per_address.get(host, 0) - 1
            if count > 0:
                self.per_address[host] = count
            else:
                self.per_address.pop(host, None)

    def _due(self) -> None:
        """
        Time out every connection whose deadline has come, and set the
        timer for the next one.
        """
        self._timer = None
        deadlines = self._deadlines
        now = self.clock.seconds()
        while deadlines:
            transport, due = next(iter(deadlines.items()))
            if due > now:
                self._timer = self.clock.callLater(due - now, self._due)
                return
            del deadlines[transport]
            try:
                self._expired(transport)
            except Exception:
                _log.failure("Timing out a connection's handshake failed.")

    def _expired(self, transport: Any) -> None:
        self.timed_out += 1
        self.counters.limit_hit("handshake_timeout")
        self._unlogged += 1
        now = self.clock.seconds()
        if now - self._logged_at >= 10:
            _log.info(
                "Closed {count} connection(s) that did not finish their HTTP "
                "request or WebSocket upgrade within {timeout} s (latest from "
                "{peer}).",
                count=self._unlogged,
                timeout=self.handshake_timeout,
                peer=transport.getPeer(),
            )
            self._logged_at = now
            self._unlogged = 0
        transport.write(_TIMEOUT)
        transport.loseConnection()
        self.clock.callLater(_GRACE, transport.abortConnection)


class _Refused(Protocol):
    """
    Answers C{429 Too Many Requests} and closes.
    """

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(_REFUSAL)
        self.transport.loseConnection()


class _GuardedChannel(HTTPChannel):
    """
    An HTTP channel that reports to an L{EdgeGuard}.
    """

    guard: EdgeGuard
    edge_host: str | None = None
    _edge_transport: object = None

    def connectionMade(self) -> None:
        super().connectionMade()  # type: ignore[no-untyped-call]
        self._edge_transport = self.transport
        self.guard.opened(self.transport, self.edge_host)

    def dataReceived(self, data: bytes) -> None:
        transport = self._edge_transport
        if transport is not None and self.transport is transport:
            # The first byte of another request on a kept-alive connection.
            self.guard.start(transport)
        super().dataReceived(data)  # type: ignore[no-untyped-call]

    def allContentReceived(self) -> None:
        transport = self.transport
        super().allContentReceived()  # type: ignore[no-untyped-call]
        if transport is not None and self.transport is transport:
            # An ordinary request, whole; an upgrade took the transport
            # over and its protocol settles when the handshake is done.
            self.guard.settle(transport)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.guard.release(self._edge_transport)
        super().connectionLost(reason)  # type: ignore[no-untyped-call]


class GuardedSite(Site):
    """
    A site whose connections are limited by C{guard}.  It speaks HTTP/1.1
    only (no HTTP/2 negotiation).
    """

    protocol = _GuardedChannel  # type: ignore[assignment]

    def __init__(self, resource: Resource, guard: EdgeGuard, **kwargs: Any) -> None:
        super().__init__(resource, **kwargs)  # type: ignore[no-untyped-call]
        self.guard = guard

    def buildProtocol(self, addr: IAddress | None) -> Any:
        host = self.guard.admit(addr)
        if host is False:
            return _Refused()
        channel: Any = Site.buildProtocol(self, addr)
        channel.guard = self.guard
        channel.edge_host = host
        return channel
