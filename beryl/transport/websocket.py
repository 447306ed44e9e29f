"""
The WebSocket transport on Autobahn: C{<prefix>/websocket}.

The protocol class is thin: during the handshake it negotiates the
serializer, the Phoenix 1.8 auth-token subprotocol and the origin, and asks
the coordinator's connect hook; afterwards it decodes frames and hands
messages to the coordinator.  Outbound frames are framed once (broadcasts
once per broadcast, not once per socket) and written straight to the TCP
transport.
"""

from __future__ import annotations

import struct
from typing import Any, Callable, Mapping

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.protocol import WebSocketProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet import tcp
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.http import HTTPChannel
from zope.interface import implementer

from beryl.app import ConnectError, ConnectInfo
from beryl.interfaces import IConnection, ISocketHost
from beryl.transport.handshake import (
    HandshakeRefused,
    check_origin,
    parse_params,
    split_auth_token,
)
from beryl.wire import Frame, serializer_for_vsn

__all__ = ["PhoenixWebSocketFactory", "PhoenixWebSocketProtocol", "websocket_frame"]

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
    A whole, unmasked server-to-client WebSocket message (FIN set, no
    extensions) carrying C{frame}.
    """
    data = frame.data
    opcode = 0x82 if frame.is_binary else 0x81
    length = len(data)
    if length < 126:
        return bytes((opcode, length)) + data
    if length < 65536:
        return struct.pack("!BBH", opcode, 126, length) + data
    return struct.pack("!BBQ", opcode, 127, length) + data


def _unmask(mask: bytes, payload: bytes) -> bytes:
    """
    Undo a client frame's XOR mask, as one big-integer operation.
    """
    length = len(payload)
    if not length:
        return payload
    key = int.from_bytes(mask * (length // 4 + 1), "little") & ((1 << (8 * length)) - 1)
    return (int.from_bytes(payload, "little") ^ key).to_bytes(length, "little")


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


def direct_writer(
    transport: Any, turns: WriteTurns, max_buffer: int = 16 * 1024 * 1024
) -> Callable[[bytes], None]:
    """
    A write function for C{transport} that, on a plain TCP connection with
    nothing buffered, sends a turn's first message straight to the socket:
    one C{send()} instead of Twisted's buffer, C{epoll} registration and
    deferred write (three system calls).  Later messages of the same turn
    (a burst of broadcasts, pipelined pings) go to Twisted's buffer, so they
    leave together in one C{send()}.  What the socket does not take, and
    everything on other transports (TLS), goes through C{transport.write}
    as usual.

    A client that stops reading would make the buffer grow without end: once
    more than C{max_buffer} bytes wait, the connection is aborted.

    This reads L{twisted.internet.abstract.FileDescriptor}'s buffer
    attributes, so it is used only where they exist.
    """
    write: Callable[[bytes], None] = transport.write
    sock = getattr(transport, "socket", None)
    if (
        not isinstance(transport, tcp.Connection)
        or sock is None
        or not all(
            hasattr(transport, name)
            for name in ("dataBuffer", "offset", "_tempDataLen")
        )
    ):
        return write
    send = sock.send
    last_turn = -1
    aborted = False

    def write_now(data: bytes) -> None:
        nonlocal last_turn, aborted
        if aborted:
            return
        buffered = len(transport.dataBuffer) - transport.offset + transport._tempDataLen
        if buffered or transport.disconnecting or not transport.connected:
            if buffered > max_buffer:
                aborted = True
                _log.warn(
                    "A client at {peer} reads too slowly ({buffered} bytes "
                    "waiting); dropping it.",
                    peer=transport.getPeer(),
                    buffered=buffered,
                )
                transport.abortConnection()
                return
            write(data)
            return
        turn = turns.current()
        if turn == last_turn:
            write(data)
            return
        last_turn = turn
        try:
            sent = send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            # Let Twisted notice the error and close the connection.
            write(data)
            return
        if sent < len(data):
            write(data[sent:])

    return write_now


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
    _write: Callable[[bytes], None]
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
        super().connectionLost(reason)

    def onOpen(self) -> None:
        if self._accepted is None or self._gone:
            return
        self._release_http_state()
        self._write = direct_writer(
            self.transport, self.factory.turns, self.factory.max_send_buffer
        )
        serializer, params, info, assigns = self._accepted
        self._accepted = None
        # The headers were for the connect hook; the socket keeps the rest.
        info = ConnectInfo(auth_token=None, origin=info.origin, peer=info.peer)
        self._socket = self.factory.coordinator.open(
            self, serializer, params, info, assigns
        )

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
        Read whole, unfragmented, masked data frames here, and hand
        everything else (control frames, fragments, partial frames, frames
        over the size limit, the handshake) to Autobahn.  Autobahn spends
        most of a small message's inbound cost in its general frame
        machinery; text frames need no separate UTF-8 pass here because the
        JSON decoder rejects invalid UTF-8 (and the socket is closed with
        1007, as Autobahn would).
        """
        if (
            self.state != _OPEN
            or self.data
            or self.current_frame is not None
            or self.inside_message
            or self._socket is None
        ):
            super().dataReceived(data)
            return
        end = len(data)
        position = 0
        limit = self.maxFramePayloadSize
        while end - position >= 6:
            first, second = data[position], data[position + 1]
            # FIN set, no RSV bits, text (1) or binary (2), masked
            if first not in (0x81, 0x82) or not second & 0x80:
                break
            length = second & 0x7F
            start = position + 6
            if length == 126:
                if end - position < 8:
                    break
                length = (data[position + 2] << 8) | data[position + 3]
                if length < 126:
                    break  # not the minimal encoding: Autobahn fails it
                start = position + 8
            elif length == 127:
                break
            if (limit and length > limit) or start + length > end:
                break
            mask = data[start - 4 : start]
            payload = data[start : start + length]
            position = start + length
            self.onMessage(_unmask(mask, payload), first == 0x82)
            if self.state != _OPEN or self._socket is None:
                # Closed by that message: Autobahn reads the rest (the
                # client's close reply among it) in its closing state.
                break
        if position < end:
            super().dataReceived(data[position:] if position else data)

    def onMessageEnd(self) -> None:
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
        if self._socket is not None:
            self.factory.coordinator.touch(self._socket)
            self.factory.coordinator.received_ping(self._socket)
        super().onPing(payload)

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

    @param check_origin: L{None} to accept any origin, C{"host"} to require
        the origin's host to equal the request's C{Host}, or a list of
        allowed origins (C{"https://example.com"}, C{"//*.example.com"}).
    @param max_frame_size: the largest inbound message in bytes; a larger
        one closes the socket with 1009.
    @param max_send_buffer: bytes that may wait for a client that reads
        slowly; past that it is disconnected.
    """

    protocol = PhoenixWebSocketProtocol  # type: ignore[assignment]

    def __init__(
        self,
        coordinator: ISocketHost,
        check_origin: str | list[str] | Callable[[str], bool] | None = "host",
        max_frame_size: int = 8 * 1024 * 1024,
        max_send_buffer: int = 16 * 1024 * 1024,
    ) -> None:
        WebSocketServerFactory.__init__(self, server="Beryl")
        self.coordinator = coordinator
        self.check_origin = check_origin
        self.max_send_buffer = max_send_buffer
        self.turns = WriteTurns(coordinator.clock)
        WebSocketServerFactory.setProtocolOptions(
            self,
            maxFramePayloadSize=max_frame_size,
            maxMessagePayloadSize=max_frame_size,
            failByDrop=False,
            utf8validateIncoming=True,
            autoPingInterval=0,
            openHandshakeTimeout=10,
            closeHandshakeTimeout=2,
        )
