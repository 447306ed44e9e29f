"""
Bad input (DESIGN.md, "Bad input, faults and limits"): the offending socket
gets a clear error, and the server and every other socket keep working.
Each test ends with that proof: a bystander socket joined beforehand still
gets a C{new_msg} round trip, and so does a fresh phoenix client.
"""

from __future__ import annotations

import json
import re
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.interop.harness import (
    OK_EMPTY,
    BerylServer,
    RawWebSocket,
    assert_refused,
    node_executable,
    run_scenario,
    start_server,
    unique_topic,
)

CLOSE_GOING_AWAY = 1001
CLOSE_INVALID_DATA = 1007
CLOSE_TOO_BIG = 1009

UNDECODABLE_LOG = re.compile(
    r"Socket \S+ \(\S+\) sent a frame that cannot be decoded \((.+)\); closing it with 1007\."
)


class Bystander:
    """
    A raw V2 socket joined to a feed before the bad input arrives.
    """

    def __init__(self, testcase: SynchronousTestCase, server: BerylServer) -> None:
        self.testcase = testcase
        self.topic = unique_topic("feed")
        self.client = RawWebSocket.connect(server.port)
        testcase.addCleanup(self.client.close)
        testcase.assertEqual(
            self.client.request(
                ["1", "1", self.topic, "phx_join", {"user": "bystander"}]
            ),
            ["1", "1", self.topic, "phx_reply", OK_EMPTY],
        )
        self.count = 0

    def round_trip(self) -> None:
        """
        Send a C{new_msg} and get both its broadcast and its reply.
        """
        self.count += 1
        ref = f"m{self.count}"
        self.client.send_json(["1", ref, self.topic, "new_msg", {"body": ref}])
        frames = sorted(
            [self.client.recv_json(), self.client.recv_json()], key=json.dumps
        )
        self.testcase.assertEqual(
            frames,
            sorted(
                [
                    [
                        None,
                        None,
                        self.topic,
                        "new_msg",
                        {"user": "bystander", "body": ref},
                    ],
                    ["1", ref, self.topic, "phx_reply", OK_EMPTY],
                ],
                key=json.dumps,
            ),
        )


class BadInputTestCase(SynchronousTestCase):
    """
    A server, a bystander, and the checks that follow every bad input.
    """

    options: tuple[str, ...] = ()

    def setUp(self) -> None:
        node_executable(self)  # the proof needs a phoenix client: skip early
        self.server = start_server(self, *self.options)
        self.bystander = Bystander(self, self.server)

    def assertStillServes(self) -> None:
        """
        The bystander and a new phoenix client both get a C{new_msg} round
        trip.
        """
        self.bystander.round_trip()
        result = run_scenario(
            self, "roundtrip", self.server, topic=unique_topic("room")
        )
        self.assertEqual(
            result,
            {
                "joined": OK_EMPTY,
                "reply": OK_EMPTY,
                "messages": [{"user": "witness", "body": "still serving"}],
            },
        )

    def offender(self, join: bool = True, **kwargs: Any) -> RawWebSocket:
        """
        The socket that will misbehave, joined to a feed unless told not.
        """
        client = RawWebSocket.connect(self.server.port, **kwargs)
        self.addCleanup(client.close)
        if join:
            self.topic = unique_topic("feed")
            self.assertEqual(
                client.request(["1", "1", self.topic, "phx_join", {}]),
                ["1", "1", self.topic, "phx_reply", OK_EMPTY],
            )
        return client

    def assertClosed(self, client: RawWebSocket, code: int) -> str:
        """
        The server closes C{client} with C{code} and a non-empty reason,
        sending nothing else first; returns the reason.
        """
        closed_code, reason, before = client.recv_close()
        self.assertEqual((closed_code, before), (code, []))
        self.assertTrue(reason, "the close frame has no reason")
        return reason

    def assertRefused(self, **kwargs: Any) -> None:
        """
        The handshake is answered with HTTP 403 and no upgrade.
        """
        assert_refused(self, self.server.port, **kwargs)

    def assertUndecodable(self, send: Any, reason_part: str) -> None:
        """
        Sending an undecodable frame closes that socket with 1007, a reason
        and a log line naming the socket; the server goes on.
        """
        client = self.offender()
        send(client)
        reason = self.assertClosed(client, CLOSE_INVALID_DATA)
        self.assertIn(reason_part, reason)
        self.assertStillServes()
        logged = UNDECODABLE_LOG.findall(self.server.log())
        self.assertEqual(len(logged), 1, self.server.log())
        self.assertIn(reason_part, logged[0])


class UndecodableFrameTests(BadInputTestCase):
    """
    Frames that do not decode to a Phoenix message close their socket with
    1007.
    """

    def test_malformed_json(self) -> None:
        """
        Text that is not JSON.
        """
        self.assertUndecodable(lambda c: c.send_text('["1","2","feed:x","ping",{'), "")

    def test_wrong_arity(self) -> None:
        """
        A V2 array of four elements.
        """
        self.assertUndecodable(
            lambda c: c.send_json(["1", "2", self.topic, "ping"]),
            "[join_ref, ref, topic, event, payload]",
        )

    def test_object_under_v2(self) -> None:
        """
        A V1-style object on a V2 socket.
        """
        self.assertUndecodable(
            lambda c: c.send_json(
                {"topic": self.topic, "event": "ping", "payload": {}, "ref": "2"}
            ),
            "expected a JSON array",
        )

    def test_wrong_topic_type(self) -> None:
        """
        A number where the topic should be.
        """
        self.assertUndecodable(
            lambda c: c.send_json(["1", "2", 42, "ping", {}]), "topic must be a string"
        )

    def test_wrong_event_type(self) -> None:
        """
        Null where the event should be.
        """
        self.assertUndecodable(
            lambda c: c.send_json(["1", "2", self.topic, None, {}]),
            "event must be a string",
        )

    def test_wrong_ref_type(self) -> None:
        """
        An object where the ref should be.
        """
        self.assertUndecodable(
            lambda c: c.send_json(["1", {"r": 2}, self.topic, "ping", {}]),
            "ref must be",
        )

    def test_binary_garbage(self) -> None:
        """
        A binary frame of an unknown kind.
        """
        self.assertUndecodable(
            lambda c: c.send_binary(b"\x07\xff\xfe garbage"),
            "unsupported binary frame kind",
        )

    def test_truncated_binary(self) -> None:
        """
        A kind 0 binary frame whose header promises more than it holds.
        """
        self.assertUndecodable(
            lambda c: c.send_binary(b"\x00\x05\x05\x40\x40abc"), "truncated"
        )

    def test_empty_binary(self) -> None:
        """
        An empty binary frame.
        """
        self.assertUndecodable(lambda c: c.send_binary(b""), "empty binary frame")


class OtherBadInputTests(BadInputTestCase):
    """
    Unknown events, invalid UTF-8.
    """

    def test_unknown_event(self) -> None:
        """
        An event the demo does not know gets an error reply naming it; the
        socket stays open and its channel keeps working.
        """
        client = self.offender()
        self.assertEqual(
            client.request(["1", "2", self.topic, "frobnicate", {"x": 1}]),
            [
                "1",
                "2",
                self.topic,
                "phx_reply",
                {
                    "status": "error",
                    "response": {"reason": "unknown event 'frobnicate'"},
                },
            ],
        )
        self.assertEqual(
            client.request(["1", "3", self.topic, "ping", {"after": True}]),
            [
                "1",
                "3",
                self.topic,
                "phx_reply",
                {"status": "ok", "response": {"after": True}},
            ],
        )
        self.assertStillServes()

    def test_invalid_utf8(self) -> None:
        """
        A text frame that is not UTF-8 closes the socket with 1007.
        """
        client = self.offender()
        client.send_text(
            b'["1","2","' + self.topic.encode() + b'","ping",{"b":"\xff\xfe"}]'
        )
        self.assertClosed(client, CLOSE_INVALID_DATA)
        self.assertStillServes()


class ProtocolErrorLogTests(BadInputTestCase):
    """
    Closes decided by the WebSocket layer (invalid UTF-8, oversized
    messages) are logged naming the socket, like undecodable frames are.
    """

    options = ("--max-frame-size", "1024")

    def assertLoggedWithPeer(self, client: RawWebSocket, code: int) -> None:
        """
        Some server log line names C{client}'s address together with the
        close code it was sent.
        """
        peer = f"127.0.0.1:{client.sock.getsockname()[1]}"
        lines = [
            line
            for line in self.server.log().splitlines()
            if peer in line and str(code) in line
        ]
        self.assertTrue(
            lines,
            f"no log line names the socket from {peer} and close code {code}:\n"
            + self.server.log(),
        )

    def test_invalid_utf8_logged(self) -> None:
        """
        Invalid UTF-8 (1007): a log line names the offending socket.
        """
        client = self.offender()
        client.send_text(
            b'["1","2","' + self.topic.encode() + b'","ping",{"b":"\xff"}]'
        )
        self.assertClosed(client, CLOSE_INVALID_DATA)
        self.assertStillServes()
        self.assertLoggedWithPeer(client, CLOSE_INVALID_DATA)

    def test_oversized_logged(self) -> None:
        """
        An oversized message (1009): a log line names the offending socket.
        """
        client = self.offender()
        client.send_json(["1", "3", self.topic, "ping", {"body": "x" * 2000}])
        self.assertClosed(client, CLOSE_TOO_BIG)
        self.assertStillServes()
        self.assertLoggedWithPeer(client, CLOSE_TOO_BIG)


class FrameSizeTests(BadInputTestCase):
    """
    C{--max-frame-size 1024}.
    """

    options = ("--max-frame-size", "1024")

    def test_oversized_frame(self) -> None:
        """
        A message under the limit is served; one over it closes the socket
        with 1009.
        """
        client = self.offender()
        small = {"body": "x" * 900}
        self.assertEqual(
            client.request(["1", "2", self.topic, "ping", small]),
            ["1", "2", self.topic, "phx_reply", {"status": "ok", "response": small}],
        )
        client.send_json(["1", "3", self.topic, "ping", {"body": "x" * 2000}])
        self.assertClosed(client, CLOSE_TOO_BIG)
        self.assertStillServes()


class RefusedHandshakeTests(BadInputTestCase):
    """
    Handshakes refused with HTTP 403 before any upgrade.
    """

    def test_bad_vsn(self) -> None:
        """
        Versions other than 1.0.x and 2.0.x, and a non-string vsn, are
        refused.
        """
        for query in [
            "vsn=3.0.0",
            "vsn=2.0",
            "vsn=2.1.0",
            "vsn=abc",
            "vsn=2.0.%C2%B2",
            "vsn=",
            "vsn[]=2.0.0",
            "vsn[a]=2.0.0",
        ]:
            self.assertRefused(query=query)
        self.offender(query="vsn=2.0.7")
        self.offender(query="vsn=1.0.0", join=False)
        self.assertStillServes()

    def test_disallowed_origin(self) -> None:
        """
        With the default origin check, a foreign C{Origin} is refused; the
        server's own host, and no C{Origin} at all, are accepted.
        """
        self.assertRefused(headers={"Origin": "http://evil.example"})
        self.assertRefused(headers={"Origin": "http://127.0.0.1.evil.example"})
        self.offender(headers={"Origin": f"http://127.0.0.1:{self.server.port}"})
        self.offender(headers={"Origin": "https://127.0.0.1"})
        self.assertStillServes()


class OriginListTests(BadInputTestCase):
    """
    C{--check-origin} with a list of allowed origins.
    """

    options = ("--check-origin", "https://good.example,//*.trusted.example")

    def test_origin_list(self) -> None:
        """
        Only listed origins pass: scheme compared when given, C{*.} matching
        the bare domain and its subdomains.
        """
        self.assertRefused(headers={"Origin": "http://good.example"})
        self.assertRefused(headers={"Origin": f"http://127.0.0.1:{self.server.port}"})
        self.assertRefused(headers={"Origin": "https://nottrusted.example"})
        self.offender(headers={"Origin": "https://good.example"})
        self.offender(headers={"Origin": "http://trusted.example"})
        self.offender(headers={"Origin": "https://a.b.trusted.example:8443"})
        self.assertStillServes()
