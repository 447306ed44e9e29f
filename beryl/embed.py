"""
The host-application bridge: Beryl's channels behind connections that the
host application owns.

Some applications already terminate their clients' connections themselves
(their own WebSocket stack, a line protocol over TCP, a message bus) and
want only Beryl's channel system behind them.  The host implements
L{IHostConnection} for each of its connections and forwards their
lifecycle to a L{Bridge}::

    bridge = start(app, reactor)

    # when a client connects
    bridge.notify_connected(conn, params={"token": token})
    # for each text (str) or binary (bytes) message it sends
    bridge.handle_raw_message(conn, text)
    # when it goes away
    bridge.notify_disconnected(conn)

Everything Beryl sends to the client comes back through
C{conn.send_text}, C{conn.send_bytes} and C{conn.close}.  Each message is
one Phoenix frame (a V2 JSON array by default); heartbeats, joins and
replies work as over Beryl's own WebSocket transport.  Every call must be
made on the reactor thread.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from zope.interface import Interface, implementer

from beryl.app import App, ConnectError, ConnectInfo, ConnectResult
from beryl.coordinator import Coordinator
from beryl.interfaces import IConnection, ISocketHost
from beryl.server import Server, make_server
from beryl.session.effects import CLOSE_POLICY
from beryl.wire import Frame, serializer_for_vsn

__all__ = ["Bridge", "HostConnectionAdapter", "IHostConnection", "start"]


class IHostConnection(Interface):
    """
    One client connection owned by the host application, as the bridge
    writes to it.
    """

    def send_text(text: str) -> None:
        """
        Send one text message (a whole Phoenix frame, normally JSON).
        """

    def send_bytes(data: bytes) -> None:
        """
        Send one binary message (a Phoenix V2 binary frame).
        """

    def close(code: int, reason: str) -> None:
        """
        Close the connection; C{code} and C{reason} follow WebSocket close
        codes (1001 going away, 1007 undecodable frame, 1008 refused).  The
        host still calls L{Bridge.notify_disconnected} when it is gone
        (calling it is harmless if the bridge already forgot the
        connection).
        """


@implementer(IConnection)
class HostConnectionAdapter:
    """
    The coordinator's L{IConnection} over a host's L{IHostConnection}.
    """

    prepare_key = "host"

    def __init__(self, host: IHostConnection, closed: Callable[[], None]) -> None:
        """
        @param closed: called after Beryl closes the connection, so that the
            bridge forgets it.
        """
        self.host = host
        self._closed = closed

    def send(self, frame: Frame) -> None:
        """
        Write C{frame} as a binary or text message.
        """
        self.send_prepared(self.prepare(frame))

    def prepare(self, frame: Frame) -> str | bytes:
        """
        A frame as the host takes it: the bytes of a binary frame, the text
        of a text frame (decoded once for every recipient of a broadcast).
        """
        return frame.data if frame.is_binary else frame.data.decode("utf-8")

    def send_prepared(self, prepared: object) -> None:
        """
        Write a frame made by L{prepare}: C{str} as text, C{bytes} as binary.
        """
        if isinstance(prepared, str):
            self.host.send_text(prepared)
        else:
            assert isinstance(prepared, bytes)
            self.host.send_bytes(prepared)

    def close(self, code: int, reason: str) -> None:
        """
        Ask the host to close the connection.
        """
        self._closed()
        self.host.close(code, reason)


@attrs.define(eq=False)
class _HostSocket:
    """
    The bridge's record of one host connection (C{adapter.host}): its
    socket once the connect hook accepted it, and the messages that came
    before that.
    """

    adapter: HostConnectionAdapter
    # the host's socket handle, once the connect hook accepted it
    handle: object | None = None
    backlog: list[str | bytes] = attrs.field(factory=list)


class Bridge:
    """
    Beryl's running services and the entry points through which a host
    application hands them its connections.

    @ivar server: the services (see L{make_server}).
    """

    log = Logger()

    def __init__(self, server: Server) -> None:
        self.server = server
        self._host: ISocketHost = server.coordinator
        # keyed by id(): host connections need not be hashable, and the
        # entry holds the connection, so the id stays unique while it is here
        self._connections: dict[int, _HostSocket] = {}

    def get_coordinator(self) -> Coordinator:
        """
        The channel system, for broadcasts from application code
        (C{bridge.get_coordinator().broadcast(topic, event, payload)}).
        """
        return self.server.coordinator

    def notify_connected(
        self,
        conn: IHostConnection,
        params: Mapping[str, Any] | None = None,
        connect_info: ConnectInfo | None = None,
        vsn: str = "2.0.0",
    ) -> Deferred[bool]:
        """
        A client connected: run the application's connect hook and, if it
        accepts, open a socket for C{conn}.  Messages handed to
        L{handle_raw_message} before the hook answers wait for it.

        @param params: the connect parameters (what a WebSocket client puts
            in the query string), seen by the connect hook and channels.
        @param connect_info: what the host knows about the client (peer,
            headers, auth token).
        @param vsn: the Phoenix serializer version: C{"2.0.0"} (V2 arrays)
            or C{"1.0.0"} (V1 objects).
        @return: fires with whether the socket was accepted; a refused (or
            unsupported-vsn) connection is closed with 1008.
        @raise ValueError: when C{conn} is already connected.
        """
        key = id(conn)
        if key in self._connections:
            raise ValueError(f"{conn!r} is already connected to the bridge")
        serializer = serializer_for_vsn(vsn)
        if serializer is None:
            self.log.info(
                "Refused a host connection: unsupported protocol version {vsn!r}.",
                vsn=vsn,
            )
            conn.close(CLOSE_POLICY, f"unsupported protocol version {vsn}")
            return succeed(False)
        host = self._host
        params = {} if params is None else params
        info = ConnectInfo() if connect_info is None else connect_info
        entry = _HostSocket(HostConnectionAdapter(conn, lambda: self._drop(entry)))
        self._connections[key] = entry

        def decided(result: ConnectResult) -> bool:
            if self._connections.get(key) is not entry:
                # Disconnected (or closed by Beryl) while the hook decided.
                return False
            if isinstance(result, ConnectError):
                self._drop(entry)
                conn.close(CLOSE_POLICY, f"connection refused ({result.status})")
                return False
            entry.handle = host.open(
                entry.adapter, serializer, params, info, result.assigns
            )
            backlog, entry.backlog = entry.backlog, []
            for data in backlog:
                host.receive_data(entry.handle, data, isinstance(data, bytes))
            return True

        return host.connect(params, info).addCallback(decided)

    def handle_raw_message(self, conn: IHostConnection, data: str | bytes) -> None:
        """
        One message from the client: a C{str} is a text frame (JSON), and
        C{bytes} a binary frame.  An undecodable frame closes the connection
        with 1007.  Messages of a connection the bridge does not know (never
        connected, refused or closed) are dropped.
        """
        entry = self._connections.get(id(conn))
        if entry is None:
            self.log.debug("Dropped a message from an unknown host connection.")
            return
        if entry.handle is None:
            entry.backlog.append(data)
            return
        self._host.receive_data(entry.handle, data, isinstance(data, bytes))

    def notify_disconnected(self, conn: IHostConnection) -> None:
        """
        The client is gone: its channels are terminated and the socket
        forgotten.  Safe to call for a connection the bridge already forgot.
        """
        entry = self._connections.get(id(conn))
        if entry is not None:
            self._drop(entry)

    def stop(self) -> Deferred[None]:
        """
        Stop Beryl's services; every connection is closed with 1001.
        """
        stopped: Deferred[object] = self.server.service.stopService()
        return stopped.addCallback(lambda _: None)

    def _drop(self, entry: _HostSocket) -> None:
        """
        Forget a connection: the host reported it gone, the connect hook
        refused it, or Beryl closed it (shutdown, idle, bad frame; the host
        will not report that), so its socket, if any, is done now.
        """
        entry.backlog.clear()
        key = id(entry.adapter.host)
        if self._connections.get(key) is entry:
            del self._connections[key]
        if entry.handle is not None:
            self._host.closed(entry.handle)


def start(app: App, reactor: Any = None, **options: Any) -> Bridge:
    """
    Start Beryl's services for C{app} and return the bridge to them.

    @param reactor: the reactor (or, in tests, a C{Clock}); the global
        reactor when not given, so call this from the host's composition
        root (its C{main} or C{makeService}).
    @param options: passed to L{make_server}: C{max_channels},
        C{idle_timeout}, ...
    """
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    server = make_server(app, reactor, **options)
    server.service.startService()
    return Bridge(server)
