"""
The long-poll transport of a real C{twistd beryl}, over real HTTP on
loopback with a plain HTTP client: V1 sessions, bad input, clients that
never poll, a thousand concurrent sessions, and a cluster without sticky
sessions.
"""

from __future__ import annotations

import base64
import http.client
import json
import time
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.interop.cluster import start_cluster
from tests.interop.harness import BerylServer, start_server, unique_topic

NDJSON = {"Content-Type": "application/x-ndjson"}


class Client:
    """
    One long-poll client on one keep-alive HTTP connection.
    """

    def __init__(self, port: int, query: str = "vsn=2.0.0") -> None:
        self.port = port
        self.query = query
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.token: str | None = None

    def path(self, token: str | None) -> str:
        suffix = f"&token={token}" if token is not None else ""
        return f"/socket/longpoll?{self.query}{suffix}"

    def exchange(
        self,
        method: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        token: str | None = None,
        fresh: bool = False,
    ) -> tuple[int, bytes]:
        """
        One request with C{token} (this client's when not given, none when
        C{fresh}); the HTTP status and the body.
        """
        if not fresh:
            token = token or self.token
        self.connection.request(
            method, self.path(token), body=body, headers=headers or {}
        )
        response = self.connection.getresponse()
        return response.status, response.read()

    def json(self, method: str, body: bytes | None = None, **kwargs: Any) -> Any:
        """
        One request whose answer must be HTTP 200 JSON; the JSON.
        """
        status, data = self.exchange(method, body, **kwargs)
        assert status == 200, (status, data)
        return json.loads(data)

    def open(self) -> str:
        answer = self.json("GET", fresh=True)
        assert answer["status"] == 410, answer
        self.token = answer["token"]
        return answer["token"]  # type: ignore[no-any-return]

    def send(self, *frames: Any) -> Any:
        body = b"\n".join(json.dumps(frame).encode() for frame in frames)
        return self.json("POST", body, headers=NDJSON)

    def poll(self) -> list[Any]:
        """
        One poll; its messages, decoded.
        """
        answer = self.json("GET")
        assert answer["status"] in (200, 204), answer
        return [json.loads(message) for message in answer["messages"]]

    def poll_until(self, predicate: Any, timeout: float = 20.0) -> list[Any]:
        """
        Poll until a message satisfies C{predicate}; every message so far.
        """
        seen: list[Any] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen += self.poll()
            if any(predicate(message) for message in seen):
                return seen
        raise AssertionError(f"no matching message within {timeout} s: {seen}")

    def close(self) -> None:
        self.connection.close()


def heartbeat(ref: str) -> list[Any]:
    return [None, ref, "phoenix", "heartbeat", {}]


class LongPollHTTPTests(SynchronousTestCase):
    server: BerylServer

    def setUp(self) -> None:
        self.server = start_server(
            self,
            "--longpoll-timeout",
            "1",
            "--longpoll-idle-timeout",
            "2",
            "--max-frame-size",
            "65536",
        )

    def client(self, query: str = "vsn=2.0.0") -> Client:
        client = Client(self.server.port, query)
        self.addCleanup(client.close)
        return client

    def assert_serving(self) -> None:
        """
        A new session still opens and its heartbeat is answered.
        """
        client = self.client()
        client.open()
        self.assertEqual(client.send(heartbeat("hb")), {"status": 200})
        self.assertEqual(
            client.poll(),
            [[None, "hb", "phoenix", "phx_reply", {"status": "ok", "response": {}}]],
        )

    def test_envelope(self) -> None:
        """Answers are HTTP 200 JSON with Phoenix's headers; a poll with nothing new is 204."""
        client = self.client()
        client.connection.request("GET", client.path(None))
        response = client.connection.getresponse()
        body = json.loads(response.read())
        self.assertEqual(response.status, 200)
        self.assertEqual(response.getheader("access-control-allow-origin"), "*")
        self.assertEqual(response.getheader("cache-control"), "no-store")
        self.assertEqual(
            response.getheader("content-type"), "application/json; charset=utf-8"
        )
        self.assertEqual((body["status"], body["messages"]), (410, []))
        client.token = body["token"]
        self.assertEqual(
            client.json("GET"), {"status": 204, "token": body["token"], "messages": []}
        )

    def test_v1_session(self) -> None:
        """Without vsn a session speaks V1: object frames in, object frames without join_ref out."""
        client = self.client(query="")
        client.open()
        join = {"topic": "feed:x", "event": "phx_join", "payload": {}, "ref": "1"}
        self.assertEqual(
            client.json("POST", json.dumps(join).encode()), {"status": 200}
        )
        self.assertEqual(
            client.poll(),
            [
                {
                    "topic": "feed:x",
                    "event": "phx_reply",
                    "payload": {"status": "ok", "response": {}},
                    "ref": "1",
                }
            ],
        )

    def test_malformed_bodies(self) -> None:
        """A malformed batch gets HTTP 400 and keeps the session; an undecodable frame ends it (410)."""
        client = self.client()
        client.open()
        status, body = client.exchange(
            "POST", b'[null,"1","phoenix","heartbeat",{}]\n%%%', headers=NDJSON
        )
        self.assertEqual(
            (status, body), (400, b"line 2 is neither a JSON frame nor base64\n")
        )
        self.assertEqual(client.poll(), [])
        status, _ = client.exchange("POST", b"")
        self.assertEqual(status, 400)
        self.assertEqual(
            client.json("POST", b'{"not": "v2"}', headers=NDJSON), {"status": 410}
        )
        self.assertEqual(client.send(heartbeat("1")), {"status": 410})
        self.assertIn("cannot be decoded", self.server.log())
        self.assert_serving()

    def test_binary_push(self) -> None:
        """A base64 line is a binary push (answered as the channel answers it)."""
        client = self.client()
        client.open()
        client.send(["1", "1", "feed:x", "phx_join", {}])
        client.poll()
        frame = bytes([0, 1, 1, 6, 4]) + b"1" + b"2" + b"feed:x" + b"ping" + b"raw"
        self.assertEqual(
            client.json("POST", base64.b64encode(frame), headers=NDJSON),
            {"status": 200},
        )
        # The echo is a binary reply, which long-poll cannot carry: dropped.
        client.send(heartbeat("3"))
        self.assertEqual([m[1] for m in client.poll()], ["3"])
        self.assertIn("binary frame cannot travel over long-poll", self.server.log())

    def test_unknown_tokens(self) -> None:
        """Unknown or forged tokens get 410 (a new session on GET), never an error."""
        client = self.client()
        token = client.open()
        for bad in ("nonsense", token[:-3] + "abc", "", "a.b.c"):
            self.assertEqual(
                client.json("POST", b"[]", headers=NDJSON, token=bad)["status"], 410
            )
            answer = client.json("GET", token=bad)
            self.assertEqual(answer["status"], 410)
            self.assertNotEqual(answer["token"], token)
        self.assert_serving()

    def test_huge_body(self) -> None:
        """A body over --max-frame-size gets HTTP 413 and the session goes on."""
        client = self.client()
        client.open()
        status, _ = client.exchange(
            "POST", b"[" + b" " * 1_000_000 + b"]", headers=NDJSON
        )
        self.assertEqual(status, 413)
        self.assertEqual(client.send(heartbeat("after")), {"status": 200})
        self.assertEqual([m[1] for m in client.poll()], ["after"])

    def test_client_that_never_polls(self) -> None:
        """A session that joins and never polls is ended: the others see its presence leave."""
        topic = unique_topic("room")
        watcher, silent = self.client(), self.client()
        watcher.open()
        watcher.send(["1", "1", topic, "phx_join", {"user": "watcher"}])
        silent.open()
        silent.send(["1", "1", topic, "phx_join", {"user": "silent"}])

        def silent_left(message: Any) -> bool:
            return message[3] == "presence_diff" and "silent" in message[4]["leaves"]

        messages = watcher.poll_until(silent_left)
        joined = [
            m for m in messages if m[3] == "presence_diff" and "silent" in m[4]["joins"]
        ]
        self.assertTrue(joined, messages)
        self.assertEqual(silent.send(heartbeat("late")), {"status": 410})


class ThousandSessionsTests(SynchronousTestCase):
    def test_thousand_concurrent_sessions(self) -> None:
        """A thousand long-poll sessions, each holding a poll on its own connection, all get one broadcast."""
        server = start_server(
            self, "--longpoll-timeout", "60", "--longpoll-idle-timeout", "120"
        )
        topic = unique_topic("feed")
        setup = Client(server.port)
        self.addCleanup(setup.close)
        tokens = []
        for _ in range(1000):
            token = setup.open()
            setup.send(["1", "1", topic, "phx_join", {}])
            self.assertEqual(setup.poll()[0][3], "phx_reply")
            tokens.append(token)
        pollers = []
        for token in tokens:
            poller = Client(server.port)
            self.addCleanup(poller.close)
            poller.token = token
            poller.connection.request("GET", poller.path(token))
            pollers.append(poller)
        sender = Client(server.port)
        self.addCleanup(sender.close)
        sender.token = tokens[0]
        self.assertEqual(
            sender.send(["1", "2", topic, "new_msg", {"body": "all"}]), {"status": 200}
        )
        for poller in pollers:
            response = poller.connection.getresponse()
            answer = json.loads(response.read())
            messages = [json.loads(m) for m in answer["messages"]]
            self.assertIn(
                [None, None, topic, "new_msg", {"user": None, "body": "all"}], messages
            )


class ClusterTests(SynchronousTestCase):
    def test_poll_on_another_node(self) -> None:
        """Without sticky sessions, a token taken to another node gets 410 there and a new session."""
        first, second = start_cluster(self, size=2)
        client = Client(first.port)
        self.addCleanup(client.close)
        token = client.open()
        elsewhere = Client(second.port)
        self.addCleanup(elsewhere.close)
        self.assertEqual(
            elsewhere.json("POST", b"[]", headers=NDJSON, token=token), {"status": 410}
        )
        answer = elsewhere.json("GET", token=token)
        self.assertEqual(answer["status"], 410)
        self.assertNotEqual(answer["token"], token)
        self.assertIn("Put sticky sessions in front", second.log())
        self.assertEqual(client.send(heartbeat("1")), {"status": 200})
