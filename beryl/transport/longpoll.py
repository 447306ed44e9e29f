"""
The long-poll transport: C{<prefix>/longpoll}, Phoenix's HTTP fallback for
clients that cannot open a WebSocket (proxies, corporate firewalls, Node
without a global C{WebSocket}).

A long-poll session is one more kind of connection to the core, through
L{ISocketHost} alone: the same channels, presence, broadcasts and limits
as a WebSocket.  The protocol is Phoenix's (C{long_poll.ex}), byte for
byte where the client can tell:

  - C{GET} without a valid session token runs the connect hook and opens a
    session: C{{"status":410,"token":T,"messages":[]}} ("410" means "new
    session" here, as in Phoenix).  C{GET} with the token polls: the
    messages buffered since the last poll at once (C{200}), or, held up to
    the poll timeout, as soon as one arrives, else C{204}.
  - C{POST} with the token carries messages: one text frame, or with
    C{Content-Type: application/x-ndjson} one frame per line (text frames
    as JSON, client binary frames in base64), at most 100 lines.
  - Every JSON answer is HTTP 200 with the real status inside: 200, 204,
    403 (origin or connect refused), 410 (session gone or new).

Session tokens are signed (HMAC, with a key made at start) and name the
node and the session, so a forged token finds nothing and a token never
reads another session's buffer.  A token of another node is a gone
session (put sticky sessions in front of a cluster).  A session nobody
polled for the idle timeout ends exactly like a closed WebSocket.  The
server sends no heartbeats (the client sends none either) and never a
binary frame: a binary payload cannot reach a long-poll client and is
logged and dropped, as for a V1 client.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from typing import Any, Callable

import orjson
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from beryl.app import ConnectError, ConnectInfo, ConnectResult
from beryl.counters import Counters
from beryl.interfaces import IConnection, ISocketHost
from beryl.transport.handshake import (
    HandshakeRefused,
    check_origin,
    connect_params,
    parse_params,
)
from beryl.transport.sessiontokens import SessionTokens
from beryl.wire import Frame, Serializer

__all__ = [
    "MAX_BATCH_LINES",
    "LongPollResource",
    "LongPollSession",
    "LongPollTransport",
]

MAX_BATCH_LINES = 100
"""The most messages one POST may carry (phoenix.js sends at most 100)."""

TOKEN_HEADER = b"x-phoenix-longpoll-token"
AUTH_TOKEN_HEADER = b"x-phoenix-authtoken"
NDJSON = b"application/x-ndjson"

_GONE = b'{"status":410}'
_OK = b'{"status":200}'
_FORBIDDEN = b'{"status":403}'


def _json(request: Request, body: bytes) -> bytes:
    """
    Set the headers of a JSON answer (always HTTP 200) and return its body.
    """
    request.setHeader(b"content-type", b"application/json; charset=utf-8")
    request.setHeader(b"cache-control", b"no-store")
    return body


def _finish(request: Request, body: bytes) -> None:
    """
    Answer a request whose C{render} returned C{NOT_DONE_YET}.
    """
    _json(request, body)
    request.setHeader(b"content-length", b"%d" % len(body))
    request.write(body)
    request.finish()


def _plain(request: Request, code: int, reason: str) -> bytes:
    """
    A real HTTP error (a body that cannot be read), as Phoenix answers them.
    """
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    return reason.encode("utf-8") + b"\n"


def _peer(request: Request) -> str:
    """
    The client's address in the form the WebSocket transport gives it.
    """
    address = request.getClientAddress()
    if isinstance(address, IPv4Address):
        return f"tcp4:{address.host}:{address.port}"
    if isinstance(address, IPv6Address):
        return f"tcp6:{address.host}:{address.port}"
    return str(address)


def _header(request: Request, name: bytes) -> str | None:
    value = request.getHeader(name)
    return None if value is None else value.decode("latin-1")


@implementer(IConnection)
class LongPollSession:
    """
    One long-poll session: the core's L{IConnection} for it, the buffer of
    frames waiting for a poll and the poll being held.
    """

    __slots__ = (
        "_buffer",
        "_buffered",
        "_flush_pending",
        "_idle_call",
        "_poll_call",
        "_poller",
        "_token_json",
        "_transport",
        "closed",
        "last_poll",
        "overflowed",
        "session_id",
        "socket",
        "token",
    )

    prepare_key = "longpoll"

    def __init__(self, transport: LongPollTransport, session_id: str) -> None:
        self._transport = transport
        self.session_id = session_id
        self.token = transport.tokens.issue(session_id)
        self._token_json = orjson.dumps(self.token)
        self.socket: object | None = None
        self.closed = False
        self.overflowed = False
        self.last_poll = transport.clock.seconds()
        # frames as JSON strings (each a serialized Phoenix frame), in order
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._poller: Request | None = None
        self._poll_call: IDelayedCall | None = None
        self._flush_pending = False
        self._idle_call: IDelayedCall | None = None

    def answer(self, status: int) -> bytes:
        """
        A poll's answer: C{status}, the token and the buffered frames, which
        leave the buffer.
        """
        messages = b",".join(self._buffer)
        self._buffer = []
        self._buffered = 0
        return b'{"status":%d,"token":%s,"messages":[%s]}' % (
            status,
            self._token_json,
            messages,
        )

    def opened(self) -> bytes:
        """
        The answer to the GET that opened this session: C{410} (Phoenix's
        "new session"), the token and no messages; anything already
        buffered waits for the first poll.
        """
        return b'{"status":410,"token":%s,"messages":[]}' % self._token_json

    def poll(self, request: Request) -> bytes | int:
        """
        A C{GET} with this session's token: answered now when frames wait,
        else held until one arrives or the poll timeout passes.  A newer
        poll replaces a held one, which is answered C{204}.
        """
        transport = self._transport
        self.last_poll = transport.clock.seconds()
        if self.socket is not None:
            transport.host.touch(self.socket)
        if self._buffer:
            return _json(request, self.answer(200))
        if self._poller is not None:
            self._respond(self.answer(204))
        self._poller = request
        self._poll_call = transport.clock.callLater(
            transport.poll_timeout, self._poll_expired
        )
        request.notifyFinish().addErrback(self._poll_lost, request)
        return NOT_DONE_YET

    def _respond(self, body: bytes) -> None:
        """
        Answer the held poll with C{body}.
        """
        request = self._poller
        self._poller = None
        self._cancel_poll_timers()
        transport = self._transport
        self.last_poll = transport.clock.seconds()
        if self.socket is not None and not self.closed:
            # A poll held longer than the core's idle timeout still counts.
            transport.host.touch(self.socket)
        if request is not None:
            _finish(request, body)

    def _cancel_poll_timers(self) -> None:
        call = self._poll_call
        if call is not None and call.active():
            call.cancel()
        self._poll_call = None

    def _poll_expired(self) -> None:
        self._poll_call = None
        if self._poller is not None:
            self._respond(self.answer(200 if self._buffer else 204))

    def _poll_lost(self, failure: Failure, request: Request) -> None:
        """
        The client dropped a held poll's connection.
        """
        if self._poller is request:
            self._poller = None
            self._cancel_poll_timers()
            self.last_poll = self._transport.clock.seconds()

    def flush(self) -> None:
        """
        Answer a held poll with what this turn buffered (see
        L{LongPollTransport.flush_soon}).
        """
        self._flush_pending = False
        if self._poller is not None and self._buffer:
            self._respond(self.answer(200))

    def schedule_idle_check(self, delay: float) -> None:
        """
        Look again in C{delay} seconds whether the client still polls.
        """
        self._idle_call = self._transport.clock.callLater(delay, self._check_idle)

    def _check_idle(self) -> None:
        self._idle_call = None
        if self.closed:
            return
        transport = self._transport
        if self._poller is not None:
            self.schedule_idle_check(transport.idle_timeout)
            return
        idle = transport.clock.seconds() - self.last_poll
        if idle >= transport.idle_timeout:
            transport.log.info(
                "Long-poll session {session} was not polled for {idle:.1f} s; "
                "ending it.",
                session=self.session_id,
                idle=idle,
            )
            transport.end(self)
        else:
            self.schedule_idle_check(transport.idle_timeout - idle)

    def end(self) -> None:
        """
        Stop all timers and answer a held poll with C{410} (gone).
        """
        self.closed = True
        if self._idle_call is not None and self._idle_call.active():
            self._idle_call.cancel()
        self._idle_call = None
        self._buffer = []
        self._buffered = 0
        if self._poller is not None:
            self._respond(_GONE)
        self._cancel_poll_timers()

    # IConnection

    def prepare(self, frame: Frame) -> object:
        """
        A frame as one element of a poll's C{messages}: its text as a JSON
        string, escaped once for every long-poll recipient of a broadcast;
        C{None} (not sent) for a binary frame, which long-poll cannot carry.
        """
        if frame.is_binary:
            self._transport.log.warn(
                "A binary frame cannot travel over long-poll; not sent to "
                "long-poll sessions.",
            )
            return None
        return orjson.dumps(frame.data.decode("utf-8"))

    def send(self, frame: Frame) -> None:
        prepared = self.prepare(frame)
        if prepared is not None:
            self.send_prepared(prepared)

    def send_prepared(self, prepared: object) -> None:
        if self.closed or self.overflowed:
            return
        assert isinstance(prepared, bytes)
        self._buffer.append(prepared)
        self._buffered += len(prepared)
        transport = self._transport
        if self._buffered > transport.max_buffer:
            self._overflow()
        elif self._poller is not None and not self._flush_pending:
            self._flush_pending = True
            transport.flush_soon(self)

    def _overflow(self) -> None:
        transport = self._transport
        self.overflowed = True
        transport.counters.slow_client_dropped()
        transport.log.warn(
            "Long-poll session {session} has {count} frames ({size} bytes) "
            "waiting for a poll, more than the limit of {limit} bytes; "
            "ending it.",
            session=self.session_id,
            count=len(self._buffer),
            size=self._buffered,
            limit=transport.max_buffer,
        )
        self._buffer = []
        self._buffered = 0
        # Not inside the write that overflowed: the core may be iterating.
        transport.clock.callLater(0, transport.end, self)

    def close(self, code: int, reason: str) -> None:
        """
        The core ends the session (idle, bad frame, shutdown, ...): a held
        poll is answered C{410} and the next request finds no session.
        """
        self._transport.end(self)


class LongPollTransport:
    """
    The long-poll sessions of one node and how they live and die; the
    HTTP side is L{LongPollResource}.

    @param host: the core (see L{ISocketHost}).
    @param node_name: the node's name, written into session tokens.
    @param check_origin: the origin rule, as for WebSockets.
    @param poll_timeout: seconds a poll is held when nothing is waiting
        (Phoenix's C{window_ms}, 10 s; phoenix.js gives up on a request
        after 20 s).
    @param idle_timeout: seconds without a poll after which a session ends
        (Phoenix: 1.5 times the poll timeout).
    @param max_buffer: bytes of frames that may wait for a poll; past that
        the session ends.
    @param max_body: the largest C{POST} body in bytes.
    @param secret: the token signing key (random when not given).
    """

    log = Logger()

    def __init__(
        self,
        host: ISocketHost,
        clock: IReactorTime,
        node_name: str = "beryl",
        check_origin: str | list[str] | Callable[[str], bool] | None = "host",
        poll_timeout: float = 10.0,
        idle_timeout: float = 15.0,
        max_buffer: int = 16 * 1024 * 1024,
        max_body: int = 8 * 1024 * 1024,
        secret: bytes | None = None,
        counters: Counters | None = None,
    ) -> None:
        self.host = host
        self.counters = counters if counters is not None else host.counters
        self.clock = clock
        self.node_name = node_name
        self.check_origin = check_origin
        self.poll_timeout = poll_timeout
        self.idle_timeout = idle_timeout
        self.max_buffer = max_buffer
        self.max_body = max_body
        self.tokens = SessionTokens(node_name, clock, secret)
        self.sessions: dict[str, LongPollSession] = {}
        self._to_flush: list[LongPollSession] = []
        self._flush_call: IDelayedCall | None = None

    def flush_soon(self, session: LongPollSession) -> None:
        """
        Answer C{session}'s held poll at the end of this reactor turn, with
        everything the turn produced; one timer for every session a
        broadcast reached, not one each.
        """
        self._to_flush.append(session)
        if self._flush_call is None:
            self._flush_call = self.clock.callLater(0, self._flush)

    def _flush(self) -> None:
        self._flush_call = None
        sessions, self._to_flush = self._to_flush, []
        for session in sessions:
            try:
                session.flush()
            except Exception:
                self.log.failure(
                    "Answering the poll of long-poll session {session} failed.",
                    session=session.session_id,
                )

    def open(
        self,
        serializer: Serializer,
        params: dict[str, Any],
        info: ConnectInfo,
        assigns: Any,
    ) -> LongPollSession:
        """
        Open a session for a client the connect hook accepted.
        """
        session = LongPollSession(self, secrets.token_urlsafe(18))
        self.sessions[session.session_id] = session
        # The headers were for the connect hook; the socket keeps the rest.
        info = ConnectInfo(auth_token=None, origin=info.origin, peer=info.peer)
        socket = self.host.open(session, serializer, params, info, assigns)
        session.socket = socket
        if session.closed:
            # The node is stopping: the core closed it at once.
            self.host.closed(socket)
        else:
            session.schedule_idle_check(self.idle_timeout)
        return session

    def find(self, token: str | None) -> LongPollSession | None:
        """
        The live session a token names, or C{None}: no token, a forged or
        expired one, one of another node, or a session that ended.
        """
        if token is None:
            return None
        named = self.tokens.read(token)
        node = named[0] if named is not None else self.tokens.claimed_node(token)
        if node is not None and node != self.node_name:
            self.log.info(
                "A long-poll request carries a session of node {other}, not of "
                "this node ({node}); answering 410 so that the client starts "
                "over here.  Put sticky sessions in front of the nodes.",
                other=node,
                node=self.node_name,
            )
            return None
        if named is None:
            return None
        session_id = named[1]
        return self.sessions.get(session_id)

    def end(self, session: LongPollSession) -> None:
        """
        End a session exactly like a closed WebSocket: its channels
        terminate and its presences are untracked.  Safe to call more than
        once.
        """
        if self.sessions.get(session.session_id) is session:
            del self.sessions[session.session_id]
        if session.closed:
            return
        session.end()
        if session.socket is not None:
            self.host.closed(session.socket)

    def session_count(self) -> int:
        """
        The number of live sessions.
        """
        return len(self.sessions)


def _split_batch(body: bytes) -> list[tuple[bytes, bool]]:
    """
    The frames of an C{application/x-ndjson} body: a line starting with
    C{[} (V2) or C{E{lb}} (V1) is a text frame, any other the base64 of a binary
    frame; empty lines are skipped.

    @raise ValueError: naming the line that is neither, or when there are
        more than L{MAX_BATCH_LINES} lines.
    """
    frames: list[tuple[bytes, bool]] = []
    for number, line in enumerate(body.split(b"\n"), 1):
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            continue
        if len(frames) == MAX_BATCH_LINES:
            raise ValueError(f"more than {MAX_BATCH_LINES} messages in one request")
        if line[:1] in (b"[", b"{"):
            frames.append((line, False))
            continue
        try:
            frames.append((base64.b64decode(line, validate=True), True))
        except (binascii.Error, ValueError):
            raise ValueError(
                f"line {number} is neither a JSON frame nor base64"
            ) from None
    return frames


class LongPollResource(Resource):
    """
    C{<prefix>/longpoll}: the HTTP side of L{LongPollTransport}.
    """

    isLeaf = True
    log = Logger()

    def __init__(self, transport: LongPollTransport) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.transport = transport

    def render(self, request: Request) -> bytes | int:
        request.setHeader(b"access-control-allow-origin", b"*")
        origin = _header(request, b"origin")
        if not check_origin(
            self.transport.check_origin, origin, _header(request, b"host") or ""
        ):
            self.log.info(
                "Refused a long-poll request from {peer}: origin {origin!r} is "
                "not allowed.",
                peer=_peer(request),
                origin=origin,
            )
            return _json(request, _FORBIDDEN)
        method = request.method
        if method == b"GET":
            return self._get(request, origin)
        if method == b"POST":
            return self._post(request)
        if method == b"OPTIONS":
            wanted = request.requestHeaders.getRawHeaders(
                b"access-control-request-headers", []
            )
            request.setHeader(b"access-control-allow-headers", b", ".join(wanted))
            request.setHeader(b"access-control-allow-methods", b"get, post, options")
            request.setHeader(b"access-control-max-age", b"3600")
            return b""
        request.setResponseCode(400)
        return b""

    def _session(self, request: Request) -> LongPollSession | None:
        """
        The session named by the request's token: the
        C{X-Phoenix-Longpoll-Token} header, else the C{token} parameter.
        """
        token = _header(request, TOKEN_HEADER)
        if token is None:
            value = parse_params(request.uri.decode("utf-8", "replace")).get("token")
            token = value if isinstance(value, str) else None
        return self.transport.find(token)

    def _get(self, request: Request, origin: str | None) -> bytes | int:
        session = self._session(request)
        if session is not None:
            return session.poll(request)
        return self._open(request, origin)

    def _open(self, request: Request, origin: str | None) -> bytes | int:
        """
        No live session: run the connect hook, as a WebSocket handshake
        does, and open one (C{410} with the new token) or refuse (C{403}).
        """
        peer = _peer(request)
        try:
            params, serializer = connect_params(request.uri.decode("utf-8", "replace"))
        except HandshakeRefused as refusal:
            self.log.info(
                "Refused a long-poll session from {peer}: {reason}.",
                peer=peer,
                reason=refusal.reason,
            )
            return _json(request, _FORBIDDEN)
        token = request.getHeader(AUTH_TOKEN_HEADER)
        info = ConnectInfo(
            auth_token=None if token is None else token.decode("latin-1"),
            origin=origin,
            peer=peer,
            headers={
                name.decode("latin-1").lower(): b", ".join(values).decode("latin-1")
                for name, values in request.requestHeaders.getAllRawHeaders()
            },
        )
        gone: list[Failure] = []
        request.notifyFinish().addErrback(gone.append)

        def decided(result: ConnectResult) -> None:
            if gone:
                # The client left while the connect hook decided.
                return
            if isinstance(result, ConnectError):
                _finish(request, _FORBIDDEN)
                return
            session = self.transport.open(serializer, params, info, result.assigns)
            _finish(request, session.opened())

        def failed(failure: Failure) -> None:
            self.log.failure("Opening a long-poll session failed.", failure)
            if not gone:
                _finish(request, _FORBIDDEN)

        self.transport.host.connect(params, info).addCallback(decided).addErrback(
            failed
        )
        return NOT_DONE_YET

    def _post(self, request: Request) -> bytes:
        session = self._session(request)
        if session is None:
            return _json(request, _GONE)
        content = request.content
        assert content is not None
        content.seek(0, 2)
        size = content.tell()
        if size > self.transport.max_body:
            self.log.warn(
                "Long-poll session {session} sent a body of {size} bytes, more "
                "than the limit of {limit}; refused.",
                session=session.session_id,
                size=size,
                limit=self.transport.max_body,
            )
            return _plain(
                request, 413, f"body larger than {self.transport.max_body} bytes"
            )
        content.seek(0)
        body = content.read()
        kind = (request.getHeader(b"content-type") or b"").split(b";")[0].strip()
        if kind.lower() == NDJSON:
            try:
                frames = _split_batch(body)
            except ValueError as error:
                self.log.warn(
                    "Long-poll session {session} sent a malformed batch: {reason}; "
                    "refused.",
                    session=session.session_id,
                    reason=str(error),
                )
                return _plain(request, 400, str(error))
        elif body:
            frames = [(body, False)]
        else:
            return _plain(request, 400, "empty body")
        host = self.transport.host
        for data, is_binary in frames:
            host.receive_data(session.socket, data, is_binary)
            if session.closed:
                # That frame could not be decoded (or ended the session):
                # the core closed it, as it closes a WebSocket.
                return _json(request, _GONE)
        return _json(request, _OK)
