"""
The WebSocket transport on Autobahn: C{<prefix>/websocket}.

During the handshake the protocol negotiates the serializer, the Phoenix 1.8
auth-token subprotocol and the origin, and asks the core's connect hook;
afterwards it hands each inbound message to the core and writes what the
core sends.  It knows no channel rules.

Two speed-ups use what Twisted and Autobahn do not promise: reading whole
data frames with L{beryl.transport.frames.scan} instead of Autobahn's frame
machinery (which needs Autobahn's parser state), and writing a turn's first
frame straight to the socket (L{beryl.transport.writer.direct_writer}, which
needs Twisted's buffer attributes).  Both are feature-checked once, at
start-up (L{fast_path_available}); where a check fails the protocol uses
Autobahn's own reading and C{transport.write}, and logs one warning.

Limits that act here: the send-buffer cap (pongs included), a budget of
messages read per socket per reactor turn (the rest waits, with the
transport's reading paused, so one flooding socket cannot starve others),
and the handshake deadline and per-address cap of L{beryl.transport.edge}.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.protocol import WebSocketProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IReactorTime
from twisted.internet.testing import StringTransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from zope.interface import implementer

from beryl.app import ConnectError, ConnectInfo
from beryl.counters import Counters
from beryl.interfaces import IConnection, ISocketHost
from beryl.transport.edge import EdgeGuard
from beryl.transport.frames import control_frame, scan, websocket_message
from beryl.transport.handshake import (
    HandshakeRefused,
    check_origin,
    parse_params,
    split_auth_token,
)
from beryl.transport.writer import (
    CappedWriter,
    WriteTurns,
    buffer_attributes_present,
    direct_writer,
)
from beryl.wire import Frame, serializer_for_vsn

__all__ = [
    "PhoenixWebSocketFactory",
    "PhoenixWebSocketProtocol",
    "fast_path_available",
    "websocket_frame",
]

_log = Logger()
_OPEN = WebSocketProtocol.STATE_OPEN
_HANDSHAKE_ATTRIBUTES = (
    "http_request_data",
    "http_response_data",
    "http_status_line",
    "http_request_params",
    "http_request_path",
    "http_request_uri",
    "http_request_host",
    "http_headers",
    "websocket_key",
    "websocket_origin",
    "websocket_protocols",
    "websocket_extensions",
)


def websocket_frame(frame: Frame) -> bytes:
    """
    A whole, unmasked server-to-client WebSocket message carrying C{frame}.
    """
    return websocket_message(frame.data, frame.is_binary)


_PARSER_ATTRIBUTES = (
    "data",
    "current_frame",
    "inside_message",
    "message_data",
    "message_is_binary",
    "failedByMe",
    "maxFramePayloadSize",
)
"""Autobahn's parser state that the fast read path reads."""

_PROBE_REQUEST = (
    b"GET / HTTP/1.1\r\nHost: probe\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)

_fast_path: bool | None = None


def _autobahn_parser_readable() -> bool:
    """
    Whether an Autobahn server protocol, after a handshake and one message
    over a C{StringTransport}, has the parser state the fast read path
    reads.
    """
    factory = WebSocketServerFactory()
    factory.protocol = WebSocketServerProtocol
    factory.setProtocolOptions(openHandshakeTimeout=0, autoPingInterval=0)
    probe: Any = factory.buildProtocol(None)
    try:
        probe.makeConnection(StringTransport())
        probe.dataReceived(_PROBE_REQUEST)
        # one masked text frame, so that the per-message state exists too
        probe.dataReceived(b"\x81\x81\0\0\0\0x")
        if not (
            probe.state == _OPEN
            and all(hasattr(probe, name) for name in _PARSER_ATTRIBUTES)
        ):
            return False
        # and one split in its payload: 1 of 3 bytes read (what _reclaim reads)
        probe.dataReceived(b"\x81\x83\0\0\0\0x")
        frame = probe.current_frame
        return bool(
            frame.fin
            and frame.length == 3
            and probe.current_frame_masker.pointer() == 1
            and not probe.data
        )
    except Exception:
        return False
    finally:
        try:
            probe.connectionLost(Failure(ConnectionDone()))
        except Exception:
            pass


def fast_path_available() -> bool:
    """
    Whether the Twisted and Autobahn in use have the private attributes the
    fast read and write paths use; checked once, and a warning logged once
    when they do not.
    """
    global _fast_path
    if _fast_path is None:
        twisted_ok = buffer_attributes_present()
        autobahn_ok = _autobahn_parser_readable()
        _fast_path = twisted_ok and autobahn_ok
        if not _fast_path:
            _log.warn(
                "The WebSocket fast path is off: {missing} lacks the private "
                "attributes it reads.  Sockets work through Autobahn's own "
                "reader and Twisted's write buffer, somewhat slower.",
                missing=" and ".join(
                    name
                    for name, ok in (("Twisted", twisted_ok), ("Autobahn", autobahn_ok))
                    if not ok
                ),
            )
    return _fast_path


@implementer(IConnection)
class PhoenixWebSocketProtocol(WebSocketServerProtocol):
    """
    One Phoenix WebSocket connection.
    """

    _log = Logger()
    factory: PhoenixWebSocketFactory
    prepare_key = "websocket"
    _socket: object | None = None
    _gone = False
    _fast = False
    _held: bytes | None = None
    _write: Callable[[bytes], None]
    # set from the factory's protocol options when the connection is made
    maxFramePayloadSize: int
    _accepted: tuple[Any, Mapping[str, Any], ConnectInfo, Any] | None = None

    def onConnect(self, request: Any) -> Deferred[str | None]:  # type: ignore[override]
        return ensureDeferred(self._handshake(request))

    async def _handshake(self, request: Any) -> str | None:
        factory = self.factory
        headers: Mapping[str, str] = request.headers
        origin = headers.get("origin")
        try:
            if not check_origin(factory.check_origin, origin, headers.get("host", "")):
                raise HandshakeRefused(f"origin {origin!r} is not allowed")
            offered, token = split_auth_token(list(request.protocols))
            if request.protocols and "phoenix" not in offered:
                raise HandshakeRefused("no supported subprotocol offered")
            params = parse_params(self.http_request_uri)
            vsn = params.get("vsn")
            serializer = (
                serializer_for_vsn(vsn) if isinstance(vsn, (str, type(None))) else None
            )
            if serializer is None:
                raise HandshakeRefused(f"unsupported protocol version {vsn!r}")
        except HandshakeRefused as refusal:
            self._log.info(
                "Refused a WebSocket from {peer}: {reason}.",
                peer=request.peer,
                reason=refusal.reason,
            )
            raise ConnectionDeny(403, "Forbidden") from None
        info = ConnectInfo(
            auth_token=token,
            origin=origin,
            peer=request.peer,
            headers=headers,
        )
        result = await factory.coordinator.connect(params, info)
        if self._gone:
            # The client left while the connect hook was deciding.
            raise ConnectionDeny(400, "Gone")
        if isinstance(result, ConnectError):
            raise ConnectionDeny(result.status, "Forbidden")
        self._accepted = (serializer, params, info, result.assigns)
        return "phoenix" if offered else None

    def connectionLost(self, reason: Any = None) -> None:
        self._gone = True
        self._held = None
        self.factory.guard.release(self.transport)
        super().connectionLost(reason)

    def onOpen(self) -> None:
        factory = self.factory
        transport: Any = self.transport
        factory.guard.settle(transport)
        self._fast = factory.fast_path
        if self._accepted is None or self._gone:
            self._write = transport.write
            return
        self._release_http_state()
        write = None
        if factory.fast_path:
            write = direct_writer(
                transport,
                factory.turns,
                factory.max_send_buffer,
                factory.counters.slow_client_dropped,
            )
        if write is None:
            # TLS, or no buffer attributes: public API only.
            write = CappedWriter(
                transport, factory.max_send_buffer, factory.counters.slow_client_dropped
            ).write
        self._write = write
        serializer, params, info, assigns = self._accepted
        self._accepted = None
        # The headers were for the connect hook; the socket keeps the rest.
        info = ConnectInfo(auth_token=None, origin=info.origin, peer=info.peer)
        self._socket = factory.coordinator.open(self, serializer, params, info, assigns)

    def _release_http_state(self) -> None:
        """
        Drop what only the handshake needed, to keep an open socket small:
        the raw request and response, and the HTTP channel that served the
        upgrade (it stays registered as the TCP transport's producer, with
        its own idle timer, after Autobahn takes the transport over).
        """
        for name in _HANDSHAKE_ATTRIBUTES:
            self.__dict__.pop(name, None)
        # A dictionary does not shrink when keys go; a copy is sized to fit.
        self.__dict__ = dict(self.__dict__)
        producer = getattr(self.transport, "producer", None)
        if isinstance(producer, HTTPChannel):
            producer.setTimeout(None)
            self.transport.unregisterProducer()  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        """
        Read at most the factory's C{read_budget} of messages now, and
        fewer once they have made more than its C{write_budget} of messages
        out; the rest waits for a later reactor turn, with the transport's
        reading paused meanwhile.

        On the fast path, whole unfragmented masked data frames are read
        here (L{scan}) and everything else (control frames, fragments,
        partial frames, frames over the size limit, the handshake) goes to
        Autobahn.  Text frames need no separate UTF-8 pass here because the
        JSON decoder rejects invalid UTF-8 (and the socket is closed with
        1007, as Autobahn would).
        """
        if self._held is not None:
            self._held += data
            return
        if not self._fast or self.state != _OPEN or self._socket is None:
            self._to_autobahn(data)
            return
        if self.current_frame is not None or self.data or self.inside_message:
            # A frame split across reads was left to Autobahn.  Take the
            # stream back at the next frame boundary, or every later read
            # would go the slow way (and past the read budget) for as long
            # as the client keeps sending.
            data = self._reclaim(data)
            if not data:
                return
        factory = self.factory
        budget = factory.read_budget
        frames, position = scan(data, self.maxFramePayloadSize, budget)
        receive = factory.coordinator.receive_data
        socket = self._socket
        counters = factory.counters
        # what this socket's messages may send (to anyone) this turn
        sent_limit = counters.messages_out + factory.write_budget
        for payload, is_binary, end in frames:
            receive(socket, payload, is_binary)
            if self.state != _OPEN or self._socket is None:
                # Closed by that message: Autobahn reads the rest (the
                # client's close reply among it) in its closing state.
                if end < len(data):
                    super().dataReceived(data[end:])
                return
            if counters.messages_out > sent_limit and end < len(data):
                # Broadcasts to many: the rest waits for the next turn.
                self._hold(data[end:])
                return
        if position < len(data):
            rest = data[position:] if position else data
            if len(frames) == budget:
                self._hold(rest)
            else:
                self._to_autobahn(rest)

    def _reclaim(self, data: bytes) -> bytes:
        """
        Let Autobahn finish the frame it is reading, then take back what
        follows it: the bytes left for the fast path (C{b""} when none
        are, or the stream stays with Autobahn: a fragmented message, or a
        closed socket).
        """
        frame = self.current_frame
        if frame is not None and frame.fin and not self.data:
            rest = frame.length - self.current_frame_masker.pointer()
            if rest > len(data):
                super().dataReceived(data)
                return b""
            super().dataReceived(data[:rest])
            data = data[rest:]
        if (
            self.current_frame is not None
            or self.inside_message
            or self.state != _OPEN
            or self._socket is None
        ):
            if data:
                self._to_autobahn(data)
            return b""
        if self.data:
            # the start of the next frame's header, held by Autobahn
            data = self.data + data
            self.data = b""
        return data

    def _to_autobahn(self, data: bytes) -> None:
        """
        Let Autobahn read C{data}; on an open socket at most
        C{read_slice} bytes of it now, the rest later.
        """
        limit = self.factory.read_slice
        if self.state == _OPEN and len(data) > limit:
            super().dataReceived(data[:limit])
            if not self._gone and self.state == _OPEN:
                self._hold(data[limit:])
                return
            data = data[limit:]
        super().dataReceived(data)

    def _hold(self, rest: bytes) -> None:
        """
        Keep C{rest} for the next reactor turn and stop reading until then.
        """
        self._held = rest
        self.transport.pauseProducing()  # type: ignore[union-attr]
        self.factory.clock.callLater(0, self._resume)

    def _resume(self) -> None:
        held, self._held = self._held, None
        if held is None or self._gone:
            return
        self.dataReceived(held)
        transport: Any = self.transport
        if self._held is None and not self._gone and not transport.disconnecting:
            transport.resumeProducing()

    def onMessageEnd(self) -> None:
        if not self._fast:
            super().onMessageEnd()
            return
        # Autobahn's version also fires a "message" event through a new
        # Deferred for every message, for observers Beryl never registers.
        if not self.failedByMe:
            self.onMessage(b"".join(self.message_data), self.message_is_binary)
        self.message_data = []

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        socket = self._socket
        if socket is not None:
            self.factory.coordinator.receive_data(socket, payload, isBinary)

    def onPing(self, payload: bytes) -> None:
        # The pong goes through the capped writer like every other frame.
        # A ping counts against the socket's message rate, but not as the
        # client's activity: only Phoenix heartbeats and channel traffic keep
        # an idle socket open.
        if self._socket is not None:
            self.factory.coordinator.received_ping(self._socket)
        if self.state == _OPEN:
            self._write(control_frame(10, payload))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        socket = self._socket
        if socket is not None:
            self._socket = None
            # If Autobahn closed it (invalid UTF-8, oversized message,
            # protocol violation), the core logs which socket and why.
            self.factory.coordinator.closed(
                socket,
                getattr(self, "localCloseCode", None),
                (getattr(self, "localCloseReason", b"") or b"").decode(
                    "utf-8", "replace"
                ),
            )

    # IConnection

    def send(self, frame: Frame) -> None:
        self.send_prepared(websocket_frame(frame))

    def prepare(self, frame: Frame) -> object:
        return websocket_frame(frame)

    def send_prepared(self, prepared: object) -> None:
        if self.state == _OPEN:
            assert isinstance(prepared, bytes)
            self._write(prepared)

    def close(self, code: int, reason: str) -> None:
        if self.state == _OPEN:
            self.sendCloseFrame(code, reason.encode("utf-8")[:123], isReply=False)


class PhoenixWebSocketFactory(WebSocketServerFactory):
    """
    Builds L{PhoenixWebSocketProtocol}s for one coordinator.

    @param check_origin: C{None} to accept any origin, C{"host"} to require
        the origin's host to equal the request's C{Host}, or a list of
        allowed origins (C{"https://example.com"}, C{"//*.example.com"}).
    @param max_frame_size: the largest inbound message in bytes; a larger
        one closes the socket with 1009.
    @param max_send_buffer: bytes that may wait for a client that reads
        slowly (pongs included); past that it is disconnected.
    @param handshake_timeout: seconds for the whole HTTP upgrade, from the
        connection to the open socket (C{0}: none).
    @param max_connections_per_address: most connections from one IP
        address, counted by a L{beryl.transport.edge.GuardedSite} that
        shares this factory's C{guard} (C{0}: no limit).
    @param read_budget: most messages read from one socket per reactor
        turn; C{read_slice} is the same bound in bytes for what Autobahn
        reads.
    @param write_budget: once the messages one socket sent this turn have
        made more than this many messages out (a broadcast to a big room
        counts once per subscriber), the rest of what it sent waits for a
        later turn, as past C{read_budget}: one client cannot hold the
        reactor with broadcasts.  Counted in the factory's C{counters}.
    @param fast_path: C{None} to use the fast read and write paths where
        L{fast_path_available}; C{False} to always use Autobahn's own.
    @param clock: the time source for deferred reads (the coordinator's
        C{clock} when C{None}).
    """

    protocol = PhoenixWebSocketProtocol  # type: ignore[assignment]

    def __init__(
        self,
        coordinator: ISocketHost,
        check_origin: str | list[str] | Callable[[str], bool] | None = "host",
        max_frame_size: int = 8 * 1024 * 1024,
        max_send_buffer: int = 16 * 1024 * 1024,
        handshake_timeout: float = 10.0,
        max_connections_per_address: int = 0,
        read_budget: int = 16,
        write_budget: int = 256,
        read_slice: int = 8192,
        fast_path: bool | None = None,
        clock: IReactorTime | None = None,
        counters: Counters | None = None,
    ) -> None:
        WebSocketServerFactory.__init__(self, server="Beryl")
        self.coordinator = coordinator
        self.counters = counters if counters is not None else coordinator.counters
        self.clock: IReactorTime = clock if clock is not None else coordinator.clock
        self.check_origin = check_origin
        self.max_send_buffer = max_send_buffer
        self.read_budget = read_budget
        self.write_budget = write_budget
        self.read_slice = read_slice
        self.fast_path = fast_path_available() if fast_path is None else fast_path
        self.turns = WriteTurns(self.clock)
        self.guard = EdgeGuard(
            self.clock,
            handshake_timeout=handshake_timeout,
            max_per_address=max_connections_per_address,
            counters=self.counters,
        )
        WebSocketServerFactory.setProtocolOptions(
            self,
            maxFramePayloadSize=max_frame_size,
            maxMessagePayloadSize=max_frame_size,
            failByDrop=False,
            utf8validateIncoming=True,
            autoPingInterval=0,
            openHandshakeTimeout=handshake_timeout,
            closeHandshakeTimeout=2,
        )
