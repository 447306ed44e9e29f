"""
Tests for L{beryl.transport.longpoll}: the long-poll session machinery,
driven with fake requests, a fake clock and a real coordinator.
"""

from __future__ import annotations

import base64
from io import BytesIO
from typing import Any, Mapping

import attrs
import orjson
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Site
from twisted.web.test.requesthelper import DummyRequest
from zope.interface.verify import verifyObject

from beryl.app import App, ConnectError, ConnectInfo, ConnectOk, ConnectResult
from beryl.channel import Channel, JoinContext, JoinOk, NoReply, SocketContext
from beryl.coordinator import Coordinator, SocketHandle
from beryl.demo import demo_app
from beryl.interfaces import IConnection, ISocketHost
from beryl.transport.longpoll import LongPollResource, LongPollTransport
from beryl.transport.sessiontokens import SessionTokens
from beryl.web import access_log_formatter
from beryl.wire import Binary, Payload

NDJSON = {"content-type": "application/x-ndjson"}


def _heartbeat(number: int) -> list[Any]:
    return [None, str(number), "phoenix", "heartbeat", {}]


class FakeRequest(DummyRequest):
    """
    A L{DummyRequest} with the attributes of a real request that the
    transport and the access log read.
    """

    content: BytesIO
    code: int = 200
    sentLength: int = 0


@attrs.define
class Recorded:
    """
    What the recording channel saw.
    """

    payloads: list[Payload] = attrs.field(factory=list)
    terminated: list[str] = attrs.field(factory=list)


def recording_app(recorded: Recorded, connect: Any = None) -> App:
    """
    The demo app plus C{rec:*}, whose channel records the payloads pushed
    to it and its termination.
    """

    def join(topic: str, payload: Payload, ctx: JoinContext) -> JoinOk[None]:
        return JoinOk(None)

    def handle_in(event: str, payload: Payload, ctx: SocketContext[None]) -> Any:
        recorded.payloads.append(payload)
        return NoReply(None)

    def terminate(reason: str, ctx: SocketContext[None]) -> None:
        recorded.terminated.append(reason)

    app = demo_app()
    if connect is not None:
        app.connect = connect
    return app.channel(
        "rec:*",
        Channel.create(join).with_handle_in(handle_in).with_terminate(terminate),
    )


class LongPollCase(SynchronousTestCase):
    """
    A coordinator on a fake clock with its long-poll transport, and helpers
    that make requests the way phoenix.js does.
    """

    max_buffer = 16 * 1024 * 1024
    max_body = 64 * 1024

    def setUp(self) -> None:
        self.clock = Clock()
        self.recorded = Recorded()
        self.coordinator = Coordinator(self.app(), clock=self.clock, idle_timeout=60.0)
        self.coordinator.startService()
        self.transport = LongPollTransport(
            self.coordinator,
            self.clock,
            node_name="node-a",
            check_origin="host",
            poll_timeout=10.0,
            idle_timeout=15.0,
            max_buffer=self.max_buffer,
            max_body=self.max_body,
            secret=b"k" * 32,
        )
        self.resource = LongPollResource(self.transport)

    def tearDown(self) -> None:
        self.coordinator.stopService()
        self.clock.advance(60)

    def app(self) -> App:
        return recording_app(self.recorded)

    def request(
        self,
        method: bytes = b"GET",
        query: str = "vsn=2.0.0",
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        token: str | None = None,
    ) -> FakeRequest:
        """
        Render one request to C{/socket/longpoll?query[&token=...]}.
        """
        request = FakeRequest([])
        request.method = method
        if token is not None:
            query += f"&token={token}"
        request.uri = f"/socket/longpoll?{query}".encode()
        request.client = IPv4Address("TCP", "127.0.0.1", 40000)
        request.requestHeaders.setRawHeaders(b"host", [b"localhost:4000"])
        for name, value in (headers or {}).items():
            request.requestHeaders.setRawHeaders(name.encode(), [value.encode()])
        request.content = BytesIO(body or b"")
        request.render(self.resource)
        return request

    def answer(self, request: FakeRequest) -> Any:
        """
        The JSON a finished request was answered with (HTTP 200 always).
        """
        self.assertEqual(request.finished, 1, "the request is not answered yet")
        self.assertIn(request.responseCode, (None, 200))
        self.assertEqual(
            request.responseHeaders.getRawHeaders(b"content-type"),
            [b"application/json; charset=utf-8"],
        )
        return orjson.loads(b"".join(request.written))

    def open(self, query: str = "vsn=2.0.0") -> str:
        """
        Open a session; its token.
        """
        answer = self.answer(self.request(query=query))
        self.assertEqual(answer["status"], 410)
        self.assertEqual(answer["messages"], [])
        token: str = answer["token"]
        return token

    def post(
        self, token: str, *frames: Any, headers: Mapping[str, str] = NDJSON
    ) -> FakeRequest:
        """
        POST frames (JSON values) as phoenix.js batches them.
        """
        body = b"\n".join(orjson.dumps(frame) for frame in frames)
        return self.request(b"POST", body=body, headers=headers, token=token)

    def poll(self, token: str) -> list[Any]:
        """
        A poll that must be answered at once with messages; them, decoded.
        """
        answer = self.answer(self.request(token=token))
        self.assertEqual(answer["status"], 200)
        self.assertEqual(answer["token"], token)
        return [orjson.loads(message) for message in answer["messages"]]

    def join(self, token: str, topic: str, payload: Any = None) -> None:
        """
        Join C{topic} (join_ref and ref "1") and read the ok reply.
        """
        self.assertEqual(
            self.answer(self.post(token, ["1", "1", topic, "phx_join", payload or {}])),
            {"status": 200},
        )
        self.assertIn(
            ["1", "1", topic, "phx_reply", {"status": "ok", "response": {}}],
            self.poll(token),
        )


class SessionTests(LongPollCase):
    """
    Opening, polling and posting.
    """

    def test_interfaces(self) -> None:
        """A session is an IConnection and the coordinator is used as an ISocketHost."""
        self.open()
        (session,) = self.transport.sessions.values()
        verifyObject(IConnection, session)
        verifyObject(ISocketHost, self.transport.host)

    def test_counts_in_host_counters(self) -> None:
        """Without counters of its own, the transport counts in the host's."""
        self.assertIs(self.transport.counters, self.coordinator.counters)

    def test_get_without_token_opens_a_session(self) -> None:
        """A GET without a token opens a session: status 410, a token, no messages, Phoenix's headers."""
        request = self.request()
        answer = self.answer(request)
        self.assertEqual(answer["status"], 410)
        self.assertIsInstance(answer["token"], str)
        self.assertEqual(answer["messages"], [])
        headers = request.responseHeaders
        self.assertEqual(headers.getRawHeaders(b"access-control-allow-origin"), [b"*"])
        self.assertEqual(headers.getRawHeaders(b"cache-control"), [b"no-store"])
        self.assertEqual(self.coordinator.socket_count(), 1)

    def test_push_and_reply(self) -> None:
        """A POSTed join and push are answered in the next poll, in order."""
        token = self.open()
        self.join(token, "room:lobby", {"user": "alice"})
        self.post(token, ["1", "2", "room:lobby", "ping", {"n": 1}])
        messages = self.poll(token)
        self.assertIn(
            [
                "1",
                "2",
                "room:lobby",
                "phx_reply",
                {"status": "ok", "response": {"n": 1}},
            ],
            messages,
        )

    def test_held_poll_answered_when_a_message_arrives(self) -> None:
        """A poll with nothing waiting is held, then answered once with everything one turn produced."""
        token = self.open()
        held = self.request(token=token)
        self.assertEqual(held.finished, 0)
        self.post(
            token,
            ["1", "1", "feed:x", "phx_join", {}],
            [None, "2", "phoenix", "heartbeat", {}],
        )
        self.assertEqual(held.finished, 0)
        self.clock.advance(0)
        answer = self.answer(held)
        self.assertEqual(answer["status"], 200)
        refs = [orjson.loads(m)[1] for m in answer["messages"]]
        self.assertEqual(refs, ["1", "2"])

    def test_poll_timeout_answers_204(self) -> None:
        """A held poll with nothing to say is answered 204 with the token after the poll timeout."""
        token = self.open()
        held = self.request(token=token)
        self.clock.advance(9.9)
        self.assertEqual(held.finished, 0)
        self.clock.advance(0.1)
        self.assertEqual(
            self.answer(held), {"status": 204, "token": token, "messages": []}
        )

    def test_newer_poll_replaces_older(self) -> None:
        """A second poll answers the held one with 204 and is held itself."""
        token = self.open()
        first = self.request(token=token)
        second = self.request(token=token)
        self.assertEqual(self.answer(first)["status"], 204)
        self.assertEqual(second.finished, 0)
        self.clock.advance(10)
        self.assertEqual(self.answer(second)["status"], 204)

    def test_token_in_header(self) -> None:
        """The token is read from X-Phoenix-Longpoll-Token before the query."""
        token = self.open()
        held = self.request(headers={"x-phoenix-longpoll-token": token})
        self.assertEqual(held.finished, 0)
        self.clock.advance(10)
        self.assertEqual(self.answer(held)["token"], token)

    def test_heartbeat_answered(self) -> None:
        """The phoenix heartbeat is answered as over a WebSocket."""
        token = self.open()
        self.post(token, [None, "7", "phoenix", "heartbeat", {}])
        self.assertEqual(
            self.poll(token),
            [[None, "7", "phoenix", "phx_reply", {"status": "ok", "response": {}}]],
        )

    def test_broadcast_reaches_session(self) -> None:
        """A broadcast on a joined topic is buffered for the session."""
        token = self.open()
        self.join(token, "feed:x")
        self.coordinator.broadcast("feed:x", "news", {"n": 1})
        self.assertEqual(self.poll(token), [[None, None, "feed:x", "news", {"n": 1}]])

    def test_leave(self) -> None:
        """phx_leave is answered and closes the channel; later pushes are unmatched."""
        token = self.open()
        self.join(token, "rec:a")
        self.post(token, ["1", "2", "rec:a", "phx_leave", {}])
        self.assertEqual(
            self.poll(token),
            [
                ["1", "2", "rec:a", "phx_reply", {"status": "ok", "response": {}}],
                ["1", "1", "rec:a", "phx_close", {}],
            ],
        )
        self.assertEqual(self.recorded.terminated, ["leave"])

    def test_binary_push_from_base64(self) -> None:
        """A base64 line in an ndjson body is a V2 binary push."""
        token = self.open()
        self.join(token, "rec:a")
        frame = bytes([0, 1, 1, 5, 4]) + b"1" + b"2" + b"rec:a" + b"blob" + b"\x00\xff"
        self.request(
            b"POST",
            body=base64.b64encode(frame),
            headers=NDJSON,
            token=token,
        )
        self.assertEqual(self.recorded.payloads, [Binary(b"\x00\xff")])

    def test_binary_frames_never_sent(self) -> None:
        """A binary broadcast is not sent to long-poll sessions (warned); text ones still are."""
        token = self.open()
        self.join(token, "feed:x")
        self.coordinator.broadcast("feed:x", "blob", Binary(b"\x01"))
        self.coordinator.broadcast("feed:x", "text", {})
        self.assertEqual(self.poll(token), [[None, None, "feed:x", "text", {}]])

    def test_v1_session(self) -> None:
        """Without vsn the session speaks V1; a whole non-ndjson body is one V1 frame."""
        token = self.open(query="")
        body = orjson.dumps(
            {"topic": "feed:x", "event": "phx_join", "payload": {}, "ref": "1"}
        )
        request = self.request(
            b"POST",
            query="",
            body=body,
            headers={"content-type": "text/plain"},
            token=token,
        )
        self.assertEqual(self.answer(request), {"status": 200})
        answer = self.answer(self.request(query="", token=token))
        (message,) = [orjson.loads(m) for m in answer["messages"]]
        self.assertEqual(
            message,
            {
                "topic": "feed:x",
                "event": "phx_reply",
                "payload": {"status": "ok", "response": {}},
                "ref": "1",
            },
        )

    def test_v1_lines_in_ndjson(self) -> None:
        """V1 objects in an ndjson batch (phoenix.js with a V1 encoder) are text frames."""
        token = self.open(query="")
        request = self.post(
            token,
            {"topic": "feed:x", "event": "phx_join", "payload": {}, "ref": "1"},
            {"topic": "phoenix", "event": "heartbeat", "payload": {}, "ref": "2"},
        )
        self.assertEqual(self.answer(request), {"status": 200})
        self.assertEqual(len(self.poll(token)), 2)

    def test_options_preflight(self) -> None:
        """OPTIONS answers the CORS preflight as Phoenix does."""
        request = self.request(
            b"OPTIONS",
            headers={"access-control-request-headers": "x-phoenix-authtoken"},
        )
        self.assertEqual(request.written, [b""])
        headers = request.responseHeaders
        self.assertEqual(
            headers.getRawHeaders(b"access-control-allow-headers"),
            [b"x-phoenix-authtoken"],
        )
        self.assertEqual(
            headers.getRawHeaders(b"access-control-allow-methods"),
            [b"get, post, options"],
        )
        self.assertEqual(headers.getRawHeaders(b"access-control-max-age"), [b"3600"])

    def test_other_methods_refused(self) -> None:
        """Methods other than GET, POST and OPTIONS get HTTP 400."""
        request = self.request(b"PUT")
        self.assertEqual(request.responseCode, 400)
        self.assertEqual(self.coordinator.socket_count(), 0)

    def test_real_site_envelope(self) -> None:
        """Through a real Site, answers are HTTP 200 with a content length and the JSON body."""
        site = Site(self.resource)
        protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        assert protocol is not None
        wire = StringTransport()
        protocol.makeConnection(wire)
        protocol.dataReceived(b"GET /?vsn=2.0.0 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        head, _, body = wire.value().partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 200 "))
        self.assertIn(b"Content-Length: %d" % len(body), head)
        self.assertEqual(orjson.loads(body)["status"], 410)
        protocol.connectionLost(Failure(ConnectionDone()))


class ConnectTests(LongPollCase):
    """
    The connect hook, origin and protocol version.
    """

    seen: list[tuple[Mapping[str, Any], ConnectInfo]]
    result: ConnectResult | Deferred[ConnectResult]

    def app(self) -> App:
        self.seen = []
        self.result = ConnectOk({"user": "u"})

        def connect(
            params: Mapping[str, Any], info: ConnectInfo
        ) -> ConnectResult | Deferred[ConnectResult]:
            self.seen.append((params, info))
            return self.result

        return recording_app(self.recorded, connect)

    def test_connect_info(self) -> None:
        """The connect hook sees the params (last token wins) and the same ConnectInfo as for a WebSocket."""
        self.request(
            query="user=a&token=t1&token=t2&vsn=2.0.0",
            headers={
                "x-phoenix-authtoken": "secret-token",
                "origin": "http://localhost:4000",
            },
        )
        ((params, info),) = self.seen
        self.assertEqual(params, {"user": "a", "token": "t2", "vsn": "2.0.0"})
        self.assertEqual(info.auth_token, "secret-token")
        self.assertEqual(info.origin, "http://localhost:4000")
        self.assertEqual(info.peer, "tcp4:127.0.0.1:40000")
        self.assertEqual(info.headers["host"], "localhost:4000")

    def test_socket_assigns(self) -> None:
        """The connect hook's assigns become the socket's."""
        token = self.open()
        self.join(token, "rec:a")
        (session,) = self.transport.sessions.values()
        assert isinstance(session.socket, SocketHandle)
        self.assertEqual(session.socket.assigns, {"user": "u"})

    def test_connect_refused(self) -> None:
        """A refusing connect hook gives status 403 and no session."""
        self.result = ConnectError(401)
        self.assertEqual(self.answer(self.request()), {"status": 403})
        self.assertEqual(self.transport.session_count(), 0)

    def test_connect_later(self) -> None:
        """An asynchronous connect hook holds the GET until it decides."""
        decision: Deferred[ConnectResult] = Deferred()
        self.result = decision
        request = self.request()
        self.assertEqual(request.finished, 0)
        decision.callback(ConnectOk())
        self.assertEqual(self.answer(request)["status"], 410)

    def test_client_gone_before_connect_decides(self) -> None:
        """A client that leaves while the connect hook decides gets no session."""
        decision: Deferred[ConnectResult] = Deferred()
        self.result = decision
        request = self.request()
        request.processingFailed(Failure(ConnectionDone()))
        decision.callback(ConnectOk())
        self.assertEqual(request.written, [])
        self.assertEqual(self.transport.session_count(), 0)
        self.assertEqual(self.coordinator.socket_count(), 0)

    def test_bad_vsn(self) -> None:
        """An unsupported vsn is refused with 403 before the connect hook."""
        for query in ("vsn=3.0.0", "vsn=2.0", "vsn[]=2.0.0"):
            self.assertEqual(self.answer(self.request(query=query)), {"status": 403})
        self.assertEqual(self.seen, [])

    def test_origin_refused(self) -> None:
        """A foreign Origin gets status 403 on GET and POST; no Origin passes."""
        token = self.open()
        evil = {"origin": "http://evil.example"}
        self.assertEqual(self.answer(self.request(headers=evil)), {"status": 403})
        request = self.request(b"POST", body=b"[]", headers=evil, token=token)
        self.assertEqual(self.answer(request), {"status": 403})
        self.assertEqual(len(self.seen), 1)


class TokenTests(LongPollCase):
    """
    Session tokens: signed, per node, per session.
    """

    def test_forged_token(self) -> None:
        """A forged token opens a new session on GET and gets 410 on POST."""
        token = self.open()
        forged = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
        answer = self.answer(self.request(token=forged))
        self.assertEqual(answer["status"], 410)
        self.assertNotEqual(answer["token"], token)
        post = self.post(forged, [None, "1", "phoenix", "heartbeat", {}])
        self.assertEqual(self.answer(post), {"status": 410})

    def test_garbage_token(self) -> None:
        """Unknown tokens of any shape are answered 410, never an error."""
        for token in ("x", "", "a.b.c", "%00", "token[]=1"):
            post = self.post(token, [None, "1", "phoenix", "heartbeat", {}])
            self.assertEqual(self.answer(post), {"status": 410})

    def test_token_of_another_node(self) -> None:
        """A valid token naming another node finds no session here (sticky sessions needed)."""
        other = SessionTokens("node-b", self.clock, secret=b"k" * 32)
        self.open()
        (session_id,) = self.transport.sessions
        token = other.issue(session_id)
        post = self.post(token, [None, "1", "phoenix", "heartbeat", {}])
        self.assertEqual(self.answer(post), {"status": 410})

    def test_token_expires(self) -> None:
        """A token past its maximum age reads as nothing."""
        tokens = SessionTokens("n", self.clock, max_age=60)
        token = tokens.issue("s")
        self.assertEqual(tokens.read(token), ("n", "s"))
        self.clock.advance(61)
        self.assertIsNone(tokens.read(token))

    def test_sessions_are_separate(self) -> None:
        """One session's token never reads another session's messages."""
        alice, bob = self.open(), self.open()
        self.post(alice, [None, "1", "phoenix", "heartbeat", {}])
        held = self.request(token=bob)
        self.clock.advance(0)
        self.assertEqual(held.finished, 0)
        self.assertEqual(len(self.poll(alice)), 1)
        self.clock.advance(10)
        self.assertEqual(self.answer(held)["messages"], [])


class LifetimeTests(LongPollCase):
    """
    Idle expiry, the buffer cap, dropped polls and shutdown.
    """

    max_buffer = 4096

    def test_idle_session_ends_like_a_closed_socket(self) -> None:
        """No poll for the idle timeout: channels terminate, presence is untracked, the token is gone."""
        token = self.open()
        self.join(token, "room:lobby", {"user": "alice"})
        self.join(token, "rec:a")
        self.clock.advance(0)
        self.assertEqual(list(self.coordinator.presence.list("room:lobby")), ["alice"])
        self.clock.advance(15)
        self.assertEqual(self.coordinator.presence.list("room:lobby"), {})
        self.assertEqual(self.recorded.terminated, ["closed"])
        self.assertEqual(self.coordinator.socket_count(), 0)
        post = self.post(token, [None, "1", "phoenix", "heartbeat", {}])
        self.assertEqual(self.answer(post), {"status": 410})
        answer = self.answer(self.request(token=token))
        self.assertEqual(answer["status"], 410)
        self.assertNotEqual(answer["token"], token)

    def test_polling_keeps_session(self) -> None:
        """A client that keeps polling keeps its session well past the idle timeout."""
        token = self.open()
        for _ in range(10):
            held = self.request(token=token)
            self.clock.advance(10)
            self.assertEqual(self.answer(held)["status"], 204)
        self.assertEqual(self.transport.session_count(), 1)
        self.assertEqual(self.coordinator.socket_count(), 1)

    def test_posts_alone_do_not_keep_session(self) -> None:
        """A client that only POSTs and never polls is ended after the idle timeout."""
        token = self.open()
        for _ in range(4):
            self.post(token, [None, "1", "phoenix", "heartbeat", {}])
            self.clock.advance(5)
        self.assertEqual(self.transport.session_count(), 0)
        self.assertEqual(self.coordinator.socket_count(), 0)

    def test_dropped_poll(self) -> None:
        """A held poll whose client drops is forgotten; idle time counts from the drop."""
        token = self.open()
        held = self.request(token=token)
        self.clock.advance(5)
        held.processingFailed(Failure(ConnectionDone()))
        self.clock.advance(14)
        self.assertEqual(self.transport.session_count(), 1)
        self.assertEqual(held.written, [])
        self.clock.advance(1)
        self.assertEqual(self.transport.session_count(), 0)

    def test_buffer_cap(self) -> None:
        """Past the buffer cap the session ends with a logged reason; others are untouched."""
        slow, fast = self.open(), self.open()
        self.join(slow, "room:lobby", {"user": "slow"})
        self.join(fast, "feed:x")
        for number in range(100):
            self.coordinator.broadcast("feed:x", "news", {"n": number})
            self.coordinator.broadcast("room:lobby", "news", {"text": "x" * 100})
            self.clock.advance(0)
            if number % 10 == 0:
                self.poll(fast)
        self.assertEqual(self.transport.session_count(), 1)
        self.assertEqual(self.transport.counters.slow_clients_dropped, 1)
        self.assertEqual(self.coordinator.presence.list("room:lobby"), {})
        answer = self.answer(self.request(token=slow))
        self.assertNotEqual(answer["token"], slow)
        self.assertTrue(self.poll(fast))

    def test_shutdown_answers_held_polls(self) -> None:
        """Stopping the node answers held polls with 410 and ends every session."""
        token = self.open()
        held = self.request(token=token)
        self.coordinator.stopService()
        self.assertEqual(self.answer(held), {"status": 410})
        self.assertEqual(self.transport.session_count(), 0)

    def test_thousand_sessions(self) -> None:
        """A thousand concurrent sessions each get a broadcast in their held poll, then expire cleanly."""
        tokens = [self.open() for _ in range(1000)]
        for token in tokens:
            self.post(token, ["1", "1", "feed:all", "phx_join", {}])
        for token in tokens:
            self.poll(token)
        held = [self.request(token=token) for token in tokens]
        self.coordinator.broadcast("feed:all", "news", {"n": 1})
        self.clock.advance(0)
        for request in held:
            (message,) = self.answer(request)["messages"]
            self.assertEqual(
                orjson.loads(message), [None, None, "feed:all", "news", {"n": 1}]
            )
        self.assertEqual(self.coordinator.local_subscriber_count("feed:all"), 1000)
        self.clock.advance(15)
        self.assertEqual(self.transport.session_count(), 0)
        self.assertEqual(self.coordinator.socket_count(), 0)
        self.assertEqual(self.coordinator.local_subscriber_count("feed:all"), 0)


class BadInputTests(LongPollCase):
    """
    Malformed and oversized bodies are answered; nothing else changes.
    """

    def test_bad_base64_line(self) -> None:
        """A line that is neither JSON nor base64 gets HTTP 400; no line of it is processed."""
        token = self.open()
        body = b'[null,"1","phoenix","heartbeat",{}]\n!!not base64!!'
        request = self.request(b"POST", body=body, headers=NDJSON, token=token)
        self.assertEqual(request.responseCode, 400)
        self.assertIn(b"line 2", b"".join(request.written))
        held = self.request(token=token)
        self.clock.advance(10)
        self.assertEqual(self.answer(held)["status"], 204)
        self.assertEqual(self.coordinator.socket_count(), 1)

    def test_too_many_lines(self) -> None:
        """More than 100 messages in one POST is refused whole with HTTP 400."""
        token = self.open()
        frames = [_heartbeat(number) for number in range(101)]
        request = self.post(token, *frames)
        self.assertEqual(request.responseCode, 400)
        self.assertEqual(self.answer_count(token), 0)
        self.assertEqual(self.answer(self.post(token, *frames[:100])), {"status": 200})
        self.assertEqual(self.answer_count(token), 100)

    def answer_count(self, token: str) -> int:
        held = self.request(token=token)
        self.clock.advance(10)
        return len(self.answer(held)["messages"])

    def test_huge_body(self) -> None:
        """A body over the limit gets HTTP 413 and the session goes on."""
        token = self.open()
        body = b"[" + b" " * self.max_body + b"]"
        request = self.request(b"POST", body=body, headers=NDJSON, token=token)
        self.assertEqual(request.responseCode, 413)
        self.assertEqual(self.transport.session_count(), 1)

    def test_empty_body(self) -> None:
        """An empty non-ndjson body gets HTTP 400."""
        token = self.open()
        request = self.request(b"POST", body=b"", token=token)
        self.assertEqual(request.responseCode, 400)
        self.assertEqual(self.transport.session_count(), 1)

    def test_undecodable_frame_ends_session(self) -> None:
        """A frame the serializer cannot decode ends the session as it closes a WebSocket (410)."""
        token = self.open()
        self.join(token, "rec:a")
        request = self.request(b"POST", body=b"[not json", headers=NDJSON, token=token)
        self.assertEqual(self.answer(request), {"status": 410})
        self.assertEqual(self.recorded.terminated, ["closed"])
        self.assertEqual(self.coordinator.socket_count(), 0)
        other = self.open()
        self.post(other, [None, "1", "phoenix", "heartbeat", {}])
        self.assertEqual(len(self.poll(other)), 1)


class AccessLogTests(SynchronousTestCase):
    def test_tokens_redacted(self) -> None:
        """The access log line keeps the request but not the values of token parameters."""
        request = FakeRequest([])
        request.uri = b"/socket/longpoll?token=app-secret&vsn=2.0.0&token=SESSION.x.y"
        request.client = IPv4Address("TCP", "10.0.0.1", 1234)
        request.code = 200
        request.sentLength = 14
        line = access_log_formatter("[01/Jan/2026:00:00:00 +0000]", request)
        self.assertIn(
            "/socket/longpoll?token=[redacted]&vsn=2.0.0&token=[redacted]", line
        )
        self.assertNotIn("SESSION", line)
        self.assertNotIn("app-secret", line)
        self.assertIn('"10.0.0.1"', line)
