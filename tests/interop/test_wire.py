"""
Byte-level Phoenix protocol conformance of a real C{twistd beryl}, checked
with a raw WebSocket client (no phoenix.js in between).
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.interop.harness import (
    OP_BINARY,
    RawWebSocket,
    assert_refused,
    start_server,
    unique_topic,
)


def reply(join_ref: Any, ref: Any, topic: str, status: str, response: Any) -> list[Any]:
    """
    A V2 C{phx_reply}.
    """
    return [join_ref, ref, topic, "phx_reply", {"status": status, "response": response}]


def unmatched(ref: Any, topic: str) -> list[Any]:
    """
    The reply to a message for a topic this socket has not joined.
    """
    return reply(None, ref, topic, "error", {"reason": "unmatched topic"})


class HandshakeTests(SynchronousTestCase):
    """
    The upgrade request.
    """

    def setUp(self) -> None:
        self.server = start_server(self)

    def test_subprotocol_echoed(self) -> None:
        """
        A client offering C{phoenix} gets it back in C{Sec-WebSocket-Protocol};
        one offering nothing gets no such header.
        """
        offered = RawWebSocket.connect(self.server.port, protocols=["phoenix"])
        self.addCleanup(offered.close)
        self.assertEqual(offered.headers.get("sec-websocket-protocol"), "phoenix")
        plain = RawWebSocket.connect(self.server.port)
        self.addCleanup(plain.close)
        self.assertNotIn("sec-websocket-protocol", plain.headers)

    def test_unknown_subprotocol_refused(self) -> None:
        """
        Offering subprotocols without C{phoenix} is refused with HTTP 403 and
        no upgrade.
        """
        assert_refused(self, self.server.port, protocols=["mqtt", "wamp.2.json"])


class HeartbeatTests(SynchronousTestCase):
    """
    Heartbeats (FR-1, FR-2).
    """

    def test_heartbeat(self) -> None:
        """
        A heartbeat is answered with an ok reply, null join_ref, on a socket
        without channels; the ref comes back with its JSON type.
        """
        server = start_server(self)
        client = RawWebSocket.connect(server.port)
        self.addCleanup(client.close)
        self.assertEqual(client.heartbeat("1"), reply(None, "1", "phoenix", "ok", {}))
        self.assertEqual(
            client.request([None, 5, "phoenix", "heartbeat", {}]),
            reply(None, 5, "phoenix", "ok", {}),
        )
        self.assertEqual(
            client.request(["j", "6", "phoenix", "heartbeat", {}, "extra"]),
            reply(None, "6", "phoenix", "ok", {}),
        )


class JoinLeaveTests(SynchronousTestCase):
    """
    Joins, leaves and join_ref rules (§5).
    """

    def setUp(self) -> None:
        self.server = start_server(self)
        self.client = RawWebSocket.connect(self.server.port)
        self.addCleanup(self.client.close)
        self.topic = unique_topic("feed")

    def join(self, join_ref: Any = "1") -> None:
        self.assertEqual(
            self.client.request([join_ref, join_ref, self.topic, "phx_join", {}]),
            reply(join_ref, join_ref, self.topic, "ok", {}),
        )

    def test_duplicate_join(self) -> None:
        """
        A second join of a joined topic is answered first, then the old
        channel is closed with its own join_ref; the new channel works.
        """
        self.join("1")
        self.client.send_json(["2", "2", self.topic, "phx_join", {}])
        self.assertEqual(self.client.recv_json(), reply("2", "2", self.topic, "ok", {}))
        self.assertEqual(
            self.client.recv_json(), ["1", "1", self.topic, "phx_close", {}]
        )
        self.assertEqual(
            self.client.request(["2", "3", self.topic, "ping", {"n": 1}]),
            reply("2", "3", self.topic, "ok", {"n": 1}),
        )

    def test_duplicate_join_room(self) -> None:
        """
        On a presence room the same order holds for the frames addressed to
        the socket: reply to join 2, C{phx_close} of join 1, then join 2's
        C{presence_state}, which holds the new join (tracked first).
        """
        topic = unique_topic("room")
        self.client.send_json(["1", "1", topic, "phx_join", {"user": "dup"}])
        self.assertEqual(self.client.recv_json(), reply("1", "1", topic, "ok", {}))
        self.assertEqual(self.client.recv_json()[3], "presence_diff")
        first_state = self.client.recv_json()
        self.assertEqual(first_state[:4], ["1", None, topic, "presence_state"])
        self.assertEqual(list(first_state[4]), ["dup"])
        self.client.send_json(["2", "2", topic, "phx_join", {"user": "dup"}])
        frames = []
        while True:
            frame = self.client.recv_json()
            if frame[3] == "presence_diff":
                self.assertEqual(frame[:2], [None, None])
                continue
            frames.append(frame)
            if frame[3] == "presence_state":
                break
        self.assertEqual(
            frames,
            [
                reply("2", "2", topic, "ok", {}),
                ["1", "1", topic, "phx_close", {}],
                ["2", None, topic, "presence_state", frames[2][4]],
            ],
        )
        [meta] = frames[2][4]["dup"]["metas"]
        self.assertNotIn(meta, first_state[4]["dup"]["metas"])

    def test_leave(self) -> None:
        """
        A leave is answered ok with the channel's join_ref, then
        C{phx_close} carries join_ref as both refs; the topic is then
        unjoined.
        """
        self.join("1")
        self.client.send_json(["1", "2", self.topic, "phx_leave", {}])
        self.assertEqual(self.client.recv_json(), reply("1", "2", self.topic, "ok", {}))
        self.assertEqual(
            self.client.recv_json(), ["1", "1", self.topic, "phx_close", {}]
        )
        self.assertEqual(
            self.client.request(["1", "3", self.topic, "ping", {}]),
            unmatched("3", self.topic),
        )

    def test_leave_null_join_ref(self) -> None:
        """
        A leave with a null join_ref leaves the channel like a matching one.
        """
        self.join("4")
        self.client.send_json([None, "5", self.topic, "phx_leave", {}])
        self.assertEqual(self.client.recv_json(), reply("4", "5", self.topic, "ok", {}))
        self.assertEqual(
            self.client.recv_json(), ["4", "4", self.topic, "phx_close", {}]
        )

    def test_leave_unjoined(self) -> None:
        """
        Leaving a topic that is not joined is answered ok, echoing both refs,
        and no C{phx_close} follows.
        """
        self.assertEqual(
            self.client.request(["7", "8", self.topic, "phx_leave", {}]),
            reply("7", "8", self.topic, "ok", {}),
        )
        self.assertEqual(
            self.client.heartbeat("9"), reply(None, "9", "phoenix", "ok", {})
        )

    def test_unmatched_topic(self) -> None:
        """
        Joining a topic no route matches, or pushing to a topic not joined,
        is answered with C{unmatched topic} and a null join_ref.
        """
        self.assertEqual(
            self.client.request(["1", "1", "nowhere:1", "phx_join", {}]),
            unmatched("1", "nowhere:1"),
        )
        self.assertEqual(
            self.client.request(["3", "2", self.topic, "new_msg", {"body": "x"}]),
            unmatched("2", self.topic),
        )

    def test_stale_join_ref(self) -> None:
        """
        A push whose join_ref is not the channel's is dropped without a
        reply; with a null join_ref it is handled.
        """
        self.join("1")
        self.client.send_json(["99", "2", self.topic, "ping", {"stale": True}])
        self.assertEqual(
            self.client.heartbeat("3"), reply(None, "3", "phoenix", "ok", {})
        )
        self.assertEqual(
            self.client.request([None, "4", self.topic, "ping", {"a": 1}]),
            reply("1", "4", self.topic, "ok", {"a": 1}),
        )

    def test_pipelined_join_and_push(self) -> None:
        """
        A push sent right behind its join, without waiting, is handled by
        the new channel after the join reply.
        """
        self.client.send_json(["1", "1", self.topic, "phx_join", {}])
        self.client.send_json(["1", "2", self.topic, "ping", {"fast": True}])
        self.assertEqual(self.client.recv_json(), reply("1", "1", self.topic, "ok", {}))
        self.assertEqual(
            self.client.recv_json(), reply("1", "2", self.topic, "ok", {"fast": True})
        )

    def test_broadcast_frame(self) -> None:
        """
        Broadcasts carry null join_ref and ref (fastlane); replies carry
        the channel's join_ref and the push's ref.
        """
        self.join("1")
        self.client.send_json(["1", "2", self.topic, "new_msg", {"body": "hi"}])
        frames = [self.client.recv_json(), self.client.recv_json()]
        self.assertEqual(
            sorted(frames, key=lambda f: f[3]),
            [
                [None, None, self.topic, "new_msg", {"user": None, "body": "hi"}],
                reply("1", "2", self.topic, "ok", {}),
            ],
        )

    def test_binary_push(self) -> None:
        """
        A binary ping (kind 0) is answered with a kind 1 binary reply laid
        out as in the Phoenix serializer tests.
        """
        self.join("12")
        topic = self.topic.encode()
        self.client.send_binary(
            bytes([0, 2, 3, len(topic), 4]) + b"12" + b"123" + topic + b"ping" + b"ABC"
        )
        self.assertEqual(
            self.client.recv_data(),
            (
                OP_BINARY,
                bytes([1, 2, 3, len(topic), 2])
                + b"12"
                + b"123"
                + topic
                + b"ok"
                + b"ABC",
            ),
        )


class V1Tests(SynchronousTestCase):
    """
    Clients that send no C{vsn} speak V1: JSON objects (WS-2).
    """

    def test_v1_objects(self) -> None:
        """
        Every server message to a V1 client is an object with exactly
        C{topic}, C{event}, C{payload} and C{ref}: no C{join_ref} key.
        """
        server = start_server(self)
        client = RawWebSocket.connect(server.port, query=None)
        self.addCleanup(client.close)
        topic = unique_topic("room")

        def send(event: str, payload: Any, ref: Any, join_ref: Any = "1") -> None:
            message = {"topic": topic, "event": event, "payload": payload, "ref": ref}
            if join_ref is not None:
                message["join_ref"] = join_ref
            client.send_json(message)

        send("phx_join", {"user": "old"}, "1")
        frames = [client.recv_json() for _ in range(3)]
        send("new_msg", {"body": "v1"}, "2")
        frames += [client.recv_json() for _ in range(2)]
        client.send_json(
            {"topic": "phoenix", "event": "heartbeat", "payload": {}, "ref": "3"}
        )
        frames.append(client.recv_json())
        send("phx_leave", {}, "4", join_ref=None)
        frames += [client.recv_json() for _ in range(2)]
        for frame in frames:
            self.assertEqual(sorted(frame), ["event", "payload", "ref", "topic"], frame)
        diff = frames[1]
        self.assertEqual((diff["event"], diff["ref"]), ("presence_diff", None))
        self.assertEqual(list(diff["payload"]["joins"]), ["old"])
        del frames[1]
        self.assertEqual(frames[1]["payload"], diff["payload"]["joins"])
        self.assertEqual(
            frames,
            [
                {
                    "topic": topic,
                    "event": "phx_reply",
                    "ref": "1",
                    "payload": {"status": "ok", "response": {}},
                },
                {
                    "topic": topic,
                    "event": "presence_state",
                    "ref": None,
                    "payload": frames[1]["payload"],
                },
                {
                    "topic": topic,
                    "event": "new_msg",
                    "ref": None,
                    "payload": {"user": "old", "body": "v1"},
                },
                {
                    "topic": topic,
                    "event": "phx_reply",
                    "ref": "2",
                    "payload": {"status": "ok", "response": {}},
                },
                {
                    "topic": "phoenix",
                    "event": "phx_reply",
                    "ref": "3",
                    "payload": {"status": "ok", "response": {}},
                },
                {
                    "topic": topic,
                    "event": "phx_reply",
                    "ref": "4",
                    "payload": {"status": "ok", "response": {}},
                },
                {"topic": topic, "event": "phx_close", "ref": "1", "payload": {}},
            ],
        )
