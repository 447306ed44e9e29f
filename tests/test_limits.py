"""
Tests for the channel limits of one socket: the message and join rates,
the topic size, replies that cannot be encoded and numbers that JSON
allows but doubles do not hold, driven through the coordinator with a
fake clock and fake connections.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from twisted.internet.task import Clock
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from beryl.app import App
from beryl.channel import Channel, JoinContext, JoinOk, Reply, SocketContext
from beryl.coordinator import REFUSED_FACTOR, Coordinator
from beryl.session.effects import CloseSocket, SendReply
from beryl.session.state import Session
from beryl.tap import Options
from beryl.testing import FakeClient
from beryl.wire import V1_JSON, V2_JSON, Message, Payload, Unacceptable, encode_once


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def _default_recursion_limit(testcase: SynchronousTestCase) -> None:
    """
    The interpreter's default recursion limit (1,000, as under C{twistd})
    for one test: the standard library's JSON encoder stops near it, and
    other tests' libraries (Hypothesis) raise it.
    """
    testcase.addCleanup(sys.setrecursionlimit, sys.getrecursionlimit())
    sys.setrecursionlimit(1000)


class Echo:
    """
    A channel that records its joins and echoes every push.
    """

    def __init__(self) -> None:
        self.joins: list[str] = []
        self.terminated: list[str] = []

    def join(self, topic: str, payload: Payload, ctx: JoinContext) -> Any:
        self.joins.append(topic)
        return JoinOk(None)

    def handle_in(self, event: str, payload: Payload, ctx: SocketContext[Any]) -> Any:
        if event == "unencodable":
            return Reply("ok", {"value": object()}, None)
        return Reply("ok", payload, None)

    def terminate(self, reason: str, ctx: SocketContext[Any]) -> None:
        self.terminated.append(reason)

    def channel(self) -> Channel[Any]:
        return (
            Channel.create(self.join)
            .with_handle_in(self.handle_in)
            .with_terminate(self.terminate)
        )


class LimitsTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.echo = Echo()
        self.app = App().channel("room:*", self.echo.channel())

    def coordinator(self, **options: Any) -> Coordinator:
        coordinator = Coordinator(self.app, clock=self.clock, **options)
        coordinator.startService()

        def stop() -> None:
            coordinator.stopService()
            self.clock.advance(coordinator.drain_timeout)
            self.assertEqual(self.clock.getDelayedCalls(), [])

        self.addCleanup(stop)
        return coordinator

    def joined(self, coordinator: Coordinator, topic: str = "room:a") -> FakeClient:
        client = FakeClient(coordinator)
        client.send("1", "1", topic, "phx_join", {})
        self.assertEqual(client.take()[0][4]["status"], "ok")
        return client

    def pings(self, client: FakeClient, count: int, first: int = 0) -> list[Any]:
        for ref in range(first, first + count):
            client.send("1", str(ref), "room:a", "ping", {"n": ref})
        return client.take()


class MessageRateTests(LimitsTestCase):
    def test_burst_then_rate_limited(self) -> None:
        """Past the burst a push gets only the error reply 'rate limited', with its ref."""
        coordinator = self.coordinator(max_message_rate=100, message_burst=200)
        client = self.joined(coordinator)
        # the join took one event
        replies = self.pings(client, 200)
        self.assertEqual([r[4]["status"] for r in replies], ["ok"] * 199 + ["error"])
        self.assertEqual(
            replies[-1], ["1", "199", "room:a", "phx_reply", _error("rate limited")]
        )
        self.assertIsNone(client.connection.closed)

    def test_tokens_come_back_at_the_rate(self) -> None:
        """An empty bucket lets one more push through per 1/rate seconds."""
        coordinator = self.coordinator(max_message_rate=100, message_burst=10)
        client = self.joined(coordinator)
        self.pings(client, 20)
        self.clock.advance(0.02)
        replies = self.pings(client, 3, first=100)
        self.assertEqual([r[4]["status"] for r in replies], ["ok", "ok", "error"])

    def test_steady_rate_never_limited(self) -> None:
        """A socket sending at the rate, however long, is never refused."""
        coordinator = self.coordinator(max_message_rate=100, message_burst=5)
        client = self.joined(coordinator)
        statuses: set[str] = set()
        for ref in range(2000):
            self.clock.advance(0.01)
            client.send("1", str(ref), "room:a", "ping", {})
            statuses.update(r[4]["status"] for r in client.take())
        self.assertEqual(statuses, {"ok"})

    def test_heartbeats_count(self) -> None:
        """Heartbeats take from the same bucket and are refused past it."""
        coordinator = self.coordinator(max_message_rate=10, message_burst=3)
        client = FakeClient(coordinator)
        for ref in range(4):
            client.send(None, str(ref), "phoenix", "heartbeat", {})
        statuses = [r[4] for r in client.take()]
        self.assertEqual(statuses[-1], _error("rate limited"))
        self.assertEqual([s["status"] for s in statuses], ["ok"] * 3 + ["error"])

    def test_websocket_pings_count(self) -> None:
        """WebSocket pings the transport reports empty the bucket too."""
        coordinator = self.coordinator(max_message_rate=10, message_burst=5)
        client = self.joined(coordinator)
        for _ in range(4):
            coordinator.received_ping(client.socket)
        self.assertEqual(
            [r[4]["status"] for r in self.pings(client, 2)], ["error", "error"]
        )

    def test_flood_closes_with_1008(self) -> None:
        """A socket whose refused messages pass ten times the limit is closed with 1008."""
        coordinator = self.coordinator(max_message_rate=10, message_burst=4)
        client = self.joined(coordinator)
        refusable = 4 * REFUSED_FACTOR
        replies = self.pings(client, 3 + refusable)
        self.assertEqual(len(replies), 3 + refusable)
        self.assertIsNone(client.connection.closed)
        client.send("1", "last", "room:a", "ping", {})
        self.assertEqual(client.take(), [])
        self.assertEqual(
            client.connection.closed, (1008, "message rate limit exceeded")
        )
        self.assertEqual(self.echo.terminated, ["closed"])
        self.assertEqual(coordinator.socket_count(), 0)

    def test_ping_flood_closes_with_1008(self) -> None:
        """WebSocket pings far past the limit close the socket with 1008 too."""
        coordinator = self.coordinator(max_message_rate=10, message_burst=4)
        client = FakeClient(coordinator)
        for _ in range(5 + 4 * REFUSED_FACTOR):
            coordinator.received_ping(client.socket)
        self.assertEqual(
            client.connection.closed, (1008, "message rate limit exceeded")
        )

    def test_zero_is_no_limit(self) -> None:
        """A rate of 0 refuses nothing."""
        coordinator = self.coordinator(max_message_rate=0)
        client = self.joined(coordinator)
        replies = self.pings(client, 5000)
        self.assertEqual({r[4]["status"] for r in replies}, {"ok"})

    def test_default_allows_a_browser(self) -> None:
        """By default a burst of 200 events and then 100 per second are accepted."""
        coordinator = self.coordinator()
        client = FakeClient(coordinator)
        for ref in range(200):
            client.send(None, str(ref), "phoenix", "heartbeat", {})
        self.assertEqual({r[4]["status"] for r in client.take()}, {"ok"})
        self.clock.advance(1)
        for ref in range(101):
            client.send(None, str(ref), "phoenix", "heartbeat", {})
        statuses = [r[4]["status"] for r in client.take()]
        self.assertEqual(statuses, ["ok"] * 100 + ["error"])


class JoinRateTests(LimitsTestCase):
    def test_join_rate(self) -> None:
        """Joins past their own burst get 'join rate limited' and are not run."""
        coordinator = self.coordinator(max_join_rate=1, join_burst=2)
        client = FakeClient(coordinator)
        for n in range(3):
            client.send(str(n), str(n), f"room:{n}", "phx_join", {})
        replies = client.take()
        self.assertEqual([r[4]["status"] for r in replies], ["ok", "ok", "error"])
        self.assertEqual(
            replies[2], ["2", "2", "room:2", "phx_reply", _error("join rate limited")]
        )
        self.assertEqual(self.echo.joins, ["room:0", "room:1"])
        self.clock.advance(1)
        client.send("9", "9", "room:9", "phx_join", {})
        self.assertEqual(client.take()[0][4]["status"], "ok")

    def test_pushes_do_not_take_joins(self) -> None:
        """Pushes and heartbeats leave the join bucket alone."""
        coordinator = self.coordinator(max_join_rate=1, join_burst=2)
        client = self.joined(coordinator)
        self.pings(client, 50)
        client.send("2", "2", "room:b", "phx_join", {})
        self.assertEqual(client.take()[0][4]["status"], "ok")


class TopicSizeTests(LimitsTestCase):
    def test_long_topic_refused(self) -> None:
        """A join to a topic over the limit gets an error reply echoing only 100 characters and is not joined."""
        coordinator = self.coordinator(max_topic_bytes=1024)
        client = FakeClient(coordinator)
        topic = "room:" + "x" * 1020
        client.send("1", "1", topic, "phx_join", {})
        (reply,) = client.take()
        self.assertEqual(
            reply,
            [
                "1",
                "1",
                topic[:100],
                "phx_reply",
                _error("topic too long", max_topic_bytes=1024),
            ],
        )
        self.assertEqual(self.echo.joins, [])
        self.assertEqual(client.socket.session.joined_topics(), [])
        self.assertEqual(coordinator.local_subscriber_count(topic), 0)

    def test_limit_in_bytes(self) -> None:
        """The limit counts UTF-8 bytes: 1,024 of them join, 1,025 do not."""
        coordinator = self.coordinator(max_topic_bytes=1024)
        client = FakeClient(coordinator)
        fits = "room:" + "é" * 509 + "x"
        too_long = "room:" + "é" * 510
        self.assertEqual(len(fits.encode()), 1024)
        client.send("1", "1", fits, "phx_join", {})
        client.send("2", "2", too_long, "phx_join", {})
        replies = client.take()
        self.assertEqual([r[4]["status"] for r in replies], ["ok", "error"])
        self.assertEqual(self.echo.joins, [fits])

    def test_push_to_long_topic(self) -> None:
        """A push naming a long topic gets the size error, not an echo of the topic."""
        coordinator = self.coordinator(max_topic_bytes=64)
        client = FakeClient(coordinator)
        client.send(None, "7", "room:" + "y" * 100_000, "new_msg", {})
        (reply,) = client.take()
        self.assertEqual(len(reply[2]), 100)
        self.assertEqual(reply[4], _error("topic too long", max_topic_bytes=64))

    def test_session_refuses_long_topic(self) -> None:
        """The session answers a long topic with one error reply and no other effect."""
        session = Session(lambda topic: object(), max_topic_bytes=10)
        effects = session.receive(Message("1", "1", "room:12345678", "phx_join", {}))
        self.assertEqual(
            effects,
            (
                SendReply(
                    "1",
                    "1",
                    "room:12345678",
                    "error",
                    {"reason": "topic too long", "max_topic_bytes": 10},
                ),
            ),
        )
        self.assertFalse(session.busy)

    def test_session_limit_exceeded(self) -> None:
        """limit_exceeded ends the socket with 1008 and the reason."""
        session = Session(lambda topic: object())
        self.assertEqual(
            session.limit_exceeded("too fast"), (CloseSocket(1008, "too fast"),)
        )
        self.assertEqual(session.limit_exceeded("again"), ())


class UnencodableReplyTests(LimitsTestCase):
    def test_deep_payload_answered(self) -> None:
        """A ping nested too deeply to encode gets an error reply saying so."""
        _default_recursion_limit(self)
        coordinator = self.coordinator()
        client = self.joined(coordinator)
        frame = f'["1","5","room:a","ping",{_nested(1020)}]'.encode()
        coordinator.receive_data(client.socket, frame, False)
        self.assertEqual(
            client.take(),
            [["1", "5", "room:a", "phx_reply", _error("reply cannot be encoded")]],
        )
        self.assertIsNone(client.connection.closed)

    def test_nesting_orjson_refuses_is_encoded(self) -> None:
        """Nesting from 255 to several hundred deep is echoed exactly."""
        coordinator = self.coordinator()
        client = self.joined(coordinator)
        payload = _nested(400)
        frame = f'["1","5","room:a","ping",{payload}]'.encode()
        coordinator.receive_data(client.socket, frame, False)
        (data,) = [frame.data for frame in client.connection.frames]
        self.assertEqual(json.loads(data)[4]["response"], json.loads(payload))

    def test_not_json(self) -> None:
        """A reply that is not JSON at all gets the error reply, for V1 too."""
        coordinator = self.coordinator()
        client = FakeClient(coordinator, serializer=V1_JSON)
        client.send(None, "1", "room:a", "phx_join", {})
        client.send(None, "2", "room:a", "unencodable", {})
        replies = client.take()
        self.assertEqual(replies[-1]["payload"], _error("reply cannot be encoded"))
        self.assertEqual(replies[-1]["ref"], "2")


class NumberTests(LimitsTestCase):
    def test_big_integers_round_trip(self) -> None:
        """Integers beyond 64 bits are echoed exactly."""
        coordinator = self.coordinator()
        client = self.joined(coordinator)
        big = 2**200
        frame = f'["1","5","room:a","ping",{{"n":{big},"m":-{big},"s":9223372036854775808}}]'
        coordinator.receive_data(client.socket, frame.encode(), False)
        (data,) = [frame.data for frame in client.connection.frames]
        self.assertEqual(
            json.loads(data)[4]["response"],
            {"n": big, "m": -big, "s": 9223372036854775808},
        )

    def test_not_finite_refused(self) -> None:
        """1e400, NaN and Infinity get an error reply on that push and the socket stays open."""
        coordinator = self.coordinator()
        client = self.joined(coordinator)
        for ref, number in enumerate(["1e400", "-1e400", "NaN", "[Infinity]"]):
            frame = f'["1","{ref}","room:a","ping",{{"x":{number}}}]'
            coordinator.receive_data(client.socket, frame.encode(), False)
        replies = client.take()
        self.assertEqual(
            replies,
            [
                ["1", str(ref), "room:a", "phx_reply", _error("numbers must be finite")]
                for ref in range(4)
            ],
        )
        client.send("1", "9", "room:a", "ping", {"after": 1.5})
        self.assertEqual(
            client.take()[0][4], {"status": "ok", "response": {"after": 1.5}}
        )
        self.assertIsNone(client.connection.closed)


class EchoBoundTests(LimitsTestCase):
    def test_long_ref_is_a_bad_frame(self) -> None:
        """A string ref longer than 255 characters closes the socket with 1007 rather than being echoed."""
        coordinator = self.coordinator()
        client = self.joined(coordinator)
        frame = '["1","' + "r" * 256 + '","room:a","ping",{}]'
        coordinator.receive_data(client.socket, frame.encode(), False)
        self.assertEqual(client.take(), [])
        assert client.connection.closed is not None
        self.assertEqual(client.connection.closed[0], 1007)
        self.assertIn("at most 255 characters", client.connection.closed[1])

    def test_longest_ref_echoed(self) -> None:
        """A 255-character ref is still answered."""
        coordinator = self.coordinator()
        client = self.joined(coordinator)
        client.send("1", "r" * 255, "room:a", "ping", {})
        self.assertEqual(client.take()[0][1], "r" * 255)

    def test_unhandled_event_echo_bounded(self) -> None:
        """The default handle_in names at most 100 characters of an unknown event."""
        app = App().channel("room:*", Channel.create(self.echo.join))
        coordinator = Coordinator(app, clock=self.clock)
        client = self.joined(coordinator)
        client.send("1", "2", "room:a", "e" * 100_000, {})
        (reply,) = client.take()
        self.assertEqual(
            reply[4]["response"], {"reason": f"unhandled event {'e' * 100!r}"}
        )


class WireNumberTests(SynchronousTestCase):
    def test_decode_big_integers(self) -> None:
        """Both JSON serializers decode integers of any size exactly."""
        v2 = V2_JSON.decode_text(
            b'[null,"1","t","e",[18446744073709551616,-9223372036854775809]]'
        )
        v1 = V1_JSON.decode_text(
            b'{"topic":"t","event":"e","ref":"1","payload":123456789012345678901234567890}'
        )
        assert isinstance(v2, Message) and isinstance(v1, Message)
        self.assertEqual(v2.payload, [2**64, -(2**63) - 1])
        self.assertEqual(v1.payload, 123456789012345678901234567890)

    def test_long_digit_strings_stay_strings(self) -> None:
        """A long run of digits inside a string is decoded as that string."""
        message = V2_JSON.decode_text(
            b'[null,"1","t","e",{"id":"12345678901234567890123"}]'
        )
        assert isinstance(message, Message)
        self.assertEqual(message.payload, {"id": "12345678901234567890123"})

    def test_encode_big_integers(self) -> None:
        """Replies, pushes and encode_once carry integers beyond 64 bits exactly."""
        big = -(2**100)
        self.assertEqual(
            json.loads(V2_JSON.encode_reply("1", "2", "t", "ok", {"n": big}).data),
            ["1", "2", "t", "phx_reply", {"status": "ok", "response": {"n": big}}],
        )
        self.assertEqual(
            json.loads(V1_JSON.encode_push("1", "t", "e", [big]).data)["payload"], [big]
        )
        fragment = encode_once({"n": big})
        self.assertEqual(
            json.loads(V2_JSON.encode_broadcast("t", "e", fragment).data)[4], {"n": big}
        )

    def test_not_finite_is_unacceptable(self) -> None:
        """A frame with a number that is not finite decodes to Unacceptable with its envelope."""
        result = V2_JSON.decode_text(b'["3","4","room:a","ping",{"x":1e999}]')
        self.assertEqual(
            result,
            Unacceptable(
                Message("3", "4", "room:a", "ping", {"x": None}),
                "numbers must be finite",
            ),
        )

    def test_too_many_digits(self) -> None:
        """An integer longer than Python converts (4,300 digits) is Unacceptable, not a crash."""
        result = V1_JSON.decode_text(
            b'{"topic":"t","event":"e","ref":"1","payload":' + b"7" * 5000 + b"}"
        )
        self.assertEqual(
            result,
            Unacceptable(
                Message(None, "1", "t", "e", None), "integer has too many digits"
            ),
        )

    def test_not_finite_bad_envelope(self) -> None:
        """A non-finite number in a frame that is not a message is malformed JSON."""
        result = V2_JSON.decode_text(b"[1e999]")
        self.assertNotIsInstance(result, (Message, Unacceptable))

    def test_unencodable_is_type_error(self) -> None:
        """What neither codec encodes raises TypeError."""
        _default_recursion_limit(self)
        self.assertRaises(
            TypeError, V2_JSON.encode_reply, None, "1", "t", "ok", {"x": object()}
        )
        deep = V2_JSON.decode_text(f'[null,"1","t","e",{_nested(1020)}]'.encode())
        assert isinstance(deep, Message)
        self.assertRaises(
            TypeError, V1_JSON.encode_reply, None, "1", "t", "ok", deep.payload
        )


class OptionTests(SynchronousTestCase):
    def parse(self, *argv: str) -> Options:
        options = Options()
        options.parseOptions(list(argv))
        return options

    def test_defaults(self) -> None:
        """The limits default to 100 events/s (burst 200), 10 joins/s (burst 100), 1 KB topics."""
        options = self.parse()
        self.assertEqual(
            [
                options[name]
                for name in (
                    "max-message-rate",
                    "message-burst",
                    "max-join-rate",
                    "join-burst",
                    "max-topic-bytes",
                )
            ],
            [100.0, 200.0, 10.0, 100.0, 1024],
        )

    def test_parsed(self) -> None:
        """The limit options parse, and a rate of 0 turns the limit off."""
        options = self.parse(
            "--max-message-rate",
            "0",
            "--message-burst",
            "5.5",
            "--max-join-rate",
            "2",
            "--join-burst",
            "3",
            "--max-topic-bytes",
            "64",
        )
        self.assertEqual(
            (
                options["max-message-rate"],
                options["message-burst"],
                options["max-join-rate"],
                options["join-burst"],
                options["max-topic-bytes"],
            ),
            (0.0, 5.5, 2.0, 3.0, 64),
        )

    def test_bad_values(self) -> None:
        """Negative, non-finite or zero bursts and sizes are usage errors naming the option."""
        for argv in (
            ["--max-message-rate", "-1"],
            ["--max-message-rate", "nan"],
            ["--message-burst", "0"],
            ["--max-join-rate", "inf"],
            ["--max-topic-bytes", "1.5"],
            ["--max-topic-bytes", "0"],
        ):
            error = self.assertRaises(UsageError, self.parse, *argv)
            self.assertIn(argv[0], str(error))


def _error(reason: str, **more: Any) -> dict[str, Any]:
    return {"status": "error", "response": {"reason": reason, **more}}
