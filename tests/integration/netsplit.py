"""
A TCP proxy that splits a cluster's network: it sits in front of every
node's cluster port and can blackhole each direction between two nodes
while every socket stays open, as a real netsplit does (a firewall dropping
packets), not a reset.

Blackholed bytes are held, as TCP would keep retransmitting them, and
delivered when that direction heals; a side that closes its socket during
the split is seen closing only then.  Nodes that give up on a silent link
and reconnect get through the proxy too, and are split the same way.

The proxy runs an asyncio loop in a thread of the test process, so that
the (blocking) tests steer it with plain method calls.  It tells which
node opened a connection from the first AMP box the node sends (its
C{Hello} carries C{node_name}), parsed with Twisted's own AMP parser.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Callable, Iterable

from twisted.protocols import amp

__all__ = ["NetsplitProxy"]


class _Direction:
    """
    One direction of one proxied connection: bytes from C{source} to
    C{destination}, written to C{transport} unless blackholed.
    """

    def __init__(self, proxy: NetsplitProxy, destination: str) -> None:
        self.proxy = proxy
        self.source: str | None = None
        self.destination = destination
        self.transport: asyncio.Transport | None = None
        self.held: list[bytes] = []
        self.closing = False

    def blocked(self) -> bool:
        return self.source is None or self.proxy.is_blocked(
            self.source, self.destination
        )

    def send(self, data: bytes) -> None:
        if self.blocked():
            self.proxy.held_bytes += len(data)
        self.held.append(data)
        self.release()

    def close(self) -> None:
        self.closing = True
        self.release()

    def release(self) -> None:
        """
        Deliver what was held (and a close) if this direction is open now.
        """
        if self.blocked() or self.transport is None:
            return
        if not self.transport.is_closing():
            for data in self.held:
                self.transport.write(data)
            if self.closing:
                self.transport.close()
        self.held.clear()


class _Upstream(asyncio.Protocol):
    """
    The proxy's connection to the node behind a front.
    """

    def __init__(self, connection: _Connection) -> None:
        self.connection = connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.connection.to_node.transport = transport
        self.connection.to_node.release()

    def data_received(self, data: bytes) -> None:
        self.connection.to_client.send(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.connection.to_client.close()


class _Connection(asyncio.Protocol):
    """
    A connection accepted by the front of node C{node}: some other node
    (named by its first AMP box) linking to it.
    """

    def __init__(self, proxy: NetsplitProxy, node: str, port: int) -> None:
        self.proxy = proxy
        self.node = node
        self.port = port
        self.to_node = _Direction(proxy, node)
        self.to_client: _Direction = _Direction(proxy, "")
        self.to_client.source = node
        self.first = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.to_client.transport = transport
        self.proxy.connections.append(self)
        loop = asyncio.get_running_loop()
        task = loop.create_connection(lambda: _Upstream(self), "127.0.0.1", self.port)
        asyncio.ensure_future(task).add_done_callback(self._upstream_done)

    def _upstream_done(self, future: asyncio.Future[Any]) -> None:
        if future.exception() is not None and self.to_client.transport is not None:
            self.to_client.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.to_node.source is None:
            self.first += data
            boxes = amp.parseString(self.first)
            if not boxes:
                return
            name = boxes[0].get(b"node_name", b"?").decode("utf-8", "replace")
            self.to_node.source = name
            self.to_client.destination = name
            data, self.first = self.first, b""
        self.to_node.send(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.to_node.close()


class NetsplitProxy:
    """
    Fronts for the cluster ports of several nodes, and the rules of which
    node's bytes may reach which.

    @ivar held_bytes: how many bytes were held back by splits so far.
    """

    def __init__(self) -> None:
        self._blocked: set[tuple[str, str]] = set()
        self.connections: list[_Connection] = []
        self.held_bytes = 0
        self._loop = asyncio.new_event_loop()
        self._servers: list[asyncio.AbstractServer] = []
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="netsplit-proxy", daemon=True
        )
        self._thread.start()

    def _call(self, function: Callable[[], object]) -> None:
        done = threading.Event()

        def run() -> None:
            try:
                function()
            finally:
                done.set()

        self._loop.call_soon_threadsafe(run)
        done.wait(10)

    def front(self, node: str, port: int) -> int:
        """
        Listen on a new loopback port for connections to node C{node}, whose
        cluster port is C{port}; returns the front's port (what the node
        advertises).
        """
        future = asyncio.run_coroutine_threadsafe(
            self._loop.create_server(
                lambda: _Connection(self, node, port), "127.0.0.1", 0
            ),
            self._loop,
        )
        server = future.result(10)
        self._servers.append(server)
        front: int = server.sockets[0].getsockname()[1]
        return front

    def is_blocked(self, source: str, destination: str) -> bool:
        """
        Whether bytes from C{source} to C{destination} are blackholed.
        """
        return (source, destination) in self._blocked

    def block(self, source: str, destination: str) -> None:
        """
        Blackhole the bytes from C{source} to C{destination} (one way).
        """
        self._call(lambda: self._blocked.add((source, destination)))

    def split(self, side: Iterable[str], other: Iterable[str]) -> None:
        """
        Blackhole both ways between every node of C{side} and every node of
        C{other}.
        """
        pairs = [(a, b) for a in side for b in other]
        for a, b in pairs:
            self.block(a, b)
            self.block(b, a)

    def heal(self) -> None:
        """
        Lift every split and deliver what was held.
        """

        def lift() -> None:
            self._blocked.clear()
            for connection in self.connections:
                connection.to_node.release()
                connection.to_client.release()

        self._call(lift)

    def stop(self) -> None:
        """
        Close every front and connection and stop the loop.
        """

        def close() -> None:
            for server in self._servers:
                server.close()
            for connection in self.connections:
                for direction in (connection.to_node, connection.to_client):
                    if direction.transport is not None:
                        direction.transport.abort()

        self._call(close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
