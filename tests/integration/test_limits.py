"""
The channel limits against a real C{twistd beryl} on loopback: each test
reproduces one abuse, bounded, and checks the client gets a clear signal
(an error reply naming the limit, or a 1008 close with its reason) while
the server keeps serving.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.interop.harness import (
    OK_EMPTY,
    OP_PING,
    RawWebSocket,
    start_server,
    unique_topic,
)

CLOSE_POLICY = 1008


class LimitsTestCase(SynchronousTestCase):
    options: tuple[str, ...] = ()

    def setUp(self) -> None:
        self.server = start_server(self, *self.options)

    def joined(self) -> tuple[RawWebSocket, str]:
        client = RawWebSocket.connect(self.server.port)
        self.addCleanup(client.close)
        topic = unique_topic("feed")
        self.assertEqual(
            client.request(["1", "1", topic, "phx_join", {}]),
            ["1", "1", topic, "phx_reply", OK_EMPTY],
        )
        return client, topic

    def assert_serving(self) -> None:
        """
        A fresh socket still joins and gets its ping answered.
        """
        client, topic = self.joined()
        self.assertEqual(
            client.request(["1", "2", topic, "ping", {"still": "here"}]),
            [
                "1",
                "2",
                topic,
                "phx_reply",
                {"status": "ok", "response": {"still": "here"}},
            ],
        )


def _statuses(replies: list[Any]) -> list[str]:
    return [reply[4]["status"] for reply in replies]


class MessageRateTests(LimitsTestCase):
    # One token every 1,000 s: nothing refills while a test runs.
    options = ("--max-message-rate", "0.001", "--message-burst", "10")

    def test_rate_limited_replies(self) -> None:
        """Pushes past the burst each get the 'rate limited' error reply; the socket stays open."""
        client, topic = self.joined()
        for ref in range(20):
            client.send_json(["1", str(ref), topic, "ping", {"n": ref}])
        replies = [client.recv_json() for _ in range(20)]
        self.assertEqual([reply[1] for reply in replies], [str(n) for n in range(20)])
        self.assertEqual(_statuses(replies), ["ok"] * 9 + ["error"] * 11)
        self.assertEqual(replies[-1][4]["response"], {"reason": "rate limited"})
        # a heartbeat counts too, and is answered
        self.assertEqual(
            client.heartbeat("hb")[4]["response"], {"reason": "rate limited"}
        )
        self.assertIsNone(client.closed)
        self.assert_serving()

    def test_flood_closed_with_1008(self) -> None:
        """A socket that keeps flooding past ten times the limit is closed with 1008 and a reason."""
        client, topic = self.joined()
        for ref in range(500):
            client.send_json(["1", str(ref), topic, "ping", {}])
        code, reason, before = client.recv_close(timeout=30)
        self.assertEqual((code, reason), (CLOSE_POLICY, "message rate limit exceeded"))
        # the burst, then the refusals ten times the burst allows
        self.assertEqual(len(before), 9 + 100)
        self.assertIn("broke a limit (message rate limit exceeded)", self.server.log())
        self.assert_serving()

    def test_websocket_ping_flood(self) -> None:
        """WebSocket pings count: a ping flood is closed with 1008."""
        client = RawWebSocket.connect(self.server.port)
        self.addCleanup(client.close)
        for _ in range(200):
            client.send_frame(OP_PING, b"x")
        code, reason, _ = client.recv_close(timeout=30)
        self.assertEqual((code, reason), (CLOSE_POLICY, "message rate limit exceeded"))
        self.assert_serving()


class JoinRateTests(LimitsTestCase):
    options = ("--max-join-rate", "0.001", "--join-burst", "3")

    def test_join_churn(self) -> None:
        """Joins past the join burst get 'join rate limited' and nothing is joined."""
        client = RawWebSocket.connect(self.server.port)
        self.addCleanup(client.close)
        topics = [unique_topic("feed") for _ in range(6)]
        for n, topic in enumerate(topics):
            client.send_json([str(n), str(n), topic, "phx_join", {}])
        replies = [client.recv_json() for _ in topics]
        self.assertEqual(_statuses(replies), ["ok"] * 3 + ["error"] * 3)
        self.assertEqual(replies[5][4]["response"], {"reason": "join rate limited"})
        # the refused topic is not joined: a push to it is unmatched
        self.assertEqual(
            client.request(["5", "9", topics[5], "ping", {}])[4]["response"],
            {"reason": "unmatched topic"},
        )
        self.assert_serving()


class SizeAndEncodingTests(LimitsTestCase):
    def test_megabyte_topic(self) -> None:
        """A 1 MB topic is refused with a short error reply and is not joined."""
        client = RawWebSocket.connect(self.server.port)
        self.addCleanup(client.close)
        topic = "feed:" + "x" * 1_000_000
        client.send_json(["1", "1", topic, "phx_join", {}])
        opcode, data = client.recv_data()
        self.assertLess(len(data), 400)
        reply = json.loads(data)
        self.assertEqual(
            reply[4],
            {
                "status": "error",
                "response": {"reason": "topic too long", "max_topic_bytes": 1024},
            },
        )
        self.assertEqual(reply[2], topic[:100])
        # not stored: a push to it is refused the same way, not handled
        client.send_json(["1", "2", topic, "ping", {}])
        self.assertEqual(
            json.loads(client.recv_data()[1])[4]["response"]["reason"],
            "topic too long",
        )
        self.assertEqual(client.heartbeat("3")[4]["status"], "ok")

    def test_topic_option(self) -> None:
        """--max-topic-bytes sets the longest topic."""
        self.server.stop()
        self.server = start_server(self, "--max-topic-bytes", "20")
        client = RawWebSocket.connect(self.server.port)
        self.addCleanup(client.close)
        reply = client.request(["1", "1", "feed:" + "a" * 16, "phx_join", {}])
        self.assertEqual(
            reply[4]["response"], {"reason": "topic too long", "max_topic_bytes": 20}
        )
        reply = client.request(["1", "2", "feed:" + "a" * 15, "phx_join", {}])
        self.assertEqual(reply[4], OK_EMPTY)

    def test_unencodable_ping_answered(self) -> None:
        """A ping nested too deeply to encode is answered with an error reply saying so."""
        client, topic = self.joined()
        client.send_text(f'["1","2","{topic}","ping",{"[" * 1020 + "]" * 1020}]')
        self.assertEqual(
            client.recv_json(),
            [
                "1",
                "2",
                topic,
                "phx_reply",
                {"status": "error", "response": {"reason": "reply cannot be encoded"}},
            ],
        )
        self.assertIn("cannot be encoded", self.server.log())
        deep = "[" * 300 + "]" * 300
        client.send_text(f'["1","3","{topic}","ping",{deep}]')
        self.assertEqual(client.recv_json()[4]["response"], json.loads(deep))

    def test_big_integers_round_trip(self) -> None:
        """Integers beyond 64 bits come back exactly."""
        client, topic = self.joined()
        big = 2**300 + 1
        client.send_text(f'["1","2","{topic}","ping",{{"n":{big},"m":-{big}}}]')
        self.assertEqual(
            client.recv_json()[4], {"status": "ok", "response": {"n": big, "m": -big}}
        )

    def test_not_finite_refused(self) -> None:
        """1e400 and NaN get an error reply on that push; the socket stays open."""
        client, topic = self.joined()
        client.send_text(f'["1","2","{topic}","ping",{{"x":1e400}}]')
        client.send_text(f'["1","3","{topic}","ping",[NaN]]')
        for ref in ("2", "3"):
            self.assertEqual(
                client.recv_json(),
                [
                    "1",
                    ref,
                    topic,
                    "phx_reply",
                    {
                        "status": "error",
                        "response": {"reason": "numbers must be finite"},
                    },
                ],
            )
        self.assertEqual(
            client.request(["1", "4", topic, "ping", {"x": 1.5}])[4]["response"],
            {"x": 1.5},
        )
