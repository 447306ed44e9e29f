"""
The official phoenix clients (1.7 and 1.8) over Beryl's long-poll
transport, against a real C{twistd beryl}, side by side with WebSocket
clients.

phoenix.js always speaks V2 over long-poll (it ignores custom encoders
there), so V1 long-poll sessions are tested with a raw HTTP client in
C{tests/integration/test_longpoll_http.py}; here a V1 WebSocket client
shares a room with long-poll clients.
"""

from __future__ import annotations

import subprocess
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.interop.harness import (
    OK_EMPTY,
    BerylServer,
    node_executable,
    start_server,
    unique_topic,
)
from tests.interop.puppet import Puppet

LONGPOLL = {"transport": "longpoll"}


class LongPollClientMixin:
    """
    The scenarios, for one client package (C{package}).
    """

    package: str
    server: BerylServer
    puppet: Puppet

    def join_longpoll(self, client: str, topic: str, **options: Any) -> Any:
        return self.puppet.join_with(
            client,
            self.server.url,
            topic,
            {"user": client},
            package=self.package,
            **LONGPOLL,
            **options,
        )

    options = (
        "--app",
        "tests.interop.longpollapp:open_app",
        "--longpoll-timeout",
        "2",
        "--longpoll-idle-timeout",
        "3",
    )

    def setUp(self) -> None:
        self.server = start_server(self, *self.options)  # type: ignore[arg-type]
        self.puppet = Puppet(self)  # type: ignore[arg-type]
        self.topic = unique_topic("room")

    def test_join_push_reply(self) -> None:
        """A long-poll client joins, and its pushes are answered."""
        test: SynchronousTestCase = self  # type: ignore[assignment]
        test.assertEqual(self.join_longpoll("lp", self.topic), OK_EMPTY)
        test.assertEqual(self.puppet.transport("lp"), "LongPoll")
        test.assertEqual(
            self.puppet.push("lp", "ping", {"n": [1, "two"]}),
            {"status": "ok", "response": {"n": [1, "two"]}},
        )
        test.assertEqual(
            self.puppet.push("lp", "nope"),
            {"status": "error", "response": {"reason": "unknown event 'nope'"}},
        )

    def test_binary_push(self) -> None:
        """A binary push travels base64 in the POST, as phoenix.js sends it, and reaches the channel as bytes."""
        test: SynchronousTestCase = self  # type: ignore[assignment]
        topic = unique_topic("bin")
        test.assertEqual(self.join_longpoll("lp", topic), OK_EMPTY)
        test.assertEqual(
            self.puppet.push_binary("lp", "blob", bytes([0, 1, 2, 250, 255])),
            {"status": "ok", "response": {"bytes": [0, 1, 2, 250, 255]}},
        )

    def test_presence_and_broadcasts_with_a_websocket_client(self) -> None:
        """Presence list and diffs, and broadcasts both ways, between a long-poll and a WebSocket client."""
        test: SynchronousTestCase = self  # type: ignore[assignment]
        test.assertEqual(self.join_longpoll("lp", self.topic), OK_EMPTY)
        test.assertEqual(
            self.puppet.join("ws", self.server.url, self.topic, user="ws"), OK_EMPTY
        )
        for client in ("lp", "ws"):
            self.puppet.wait_presence(client, {"lp": 1, "ws": 1})
        self.puppet.push("ws", "new_msg", {"body": "from ws"})
        self.puppet.wait_for("lp", "new_msg", {"user": "ws", "body": "from ws"})
        self.puppet.push("lp", "new_msg", {"body": "from lp"})
        self.puppet.wait_for("ws", "new_msg", {"user": "lp", "body": "from lp"})
        self.puppet.close("ws")
        self.puppet.wait_presence("lp", {"lp": 1})
        test.assertIn("ws", self.puppet.presence("lp")["leaves"])

    def test_with_a_v1_websocket_client(self) -> None:
        """A long-poll (V2) client and a V1 WebSocket client exchange broadcasts, each in its own format."""
        test: SynchronousTestCase = self  # type: ignore[assignment]
        test.assertEqual(self.join_longpoll("lp", self.topic), OK_EMPTY)
        reply = self.puppet.join_with(
            "v1", self.server.url, self.topic, {"user": "v1"}, serializer="v1"
        )
        test.assertEqual(reply, OK_EMPTY)
        self.puppet.wait_presence("lp", {"lp": 1, "v1": 1})
        self.puppet.push("v1", "new_msg", {"body": "from v1"})
        self.puppet.wait_for("lp", "new_msg", {"user": "v1", "body": "from v1"})
        self.puppet.push("lp", "new_msg", {"body": "from lp"})
        self.puppet.wait_for("v1", "new_msg", {"user": "lp", "body": "from lp"})

    def test_rejoin_after_restart(self) -> None:
        """After a server restart the long-poll client gets a new session, rejoins and works again."""
        test: SynchronousTestCase = self  # type: ignore[assignment]
        test.assertEqual(self.join_longpoll("lp", self.topic), OK_EMPTY)
        self.puppet.wait("lp", "presence_state")
        self.server.stop()
        start_server(test, *self.options, port=self.server.port)
        self.puppet.wait("lp", "presence_state", count=2, timeout=40)
        test.assertEqual(self.puppet.push("lp", "new_msg", {"body": "after"}), OK_EMPTY)
        self.puppet.wait_for("lp", "new_msg", {"user": "lp", "body": "after"})

    def test_leave(self) -> None:
        """A long-poll client leaves its channel; the others see its presence go."""
        test: SynchronousTestCase = self  # type: ignore[assignment]
        self.join_longpoll("lp", self.topic)
        self.puppet.join("ws", self.server.url, self.topic, user="ws")
        self.puppet.wait_presence("ws", {"lp": 1, "ws": 1})
        test.assertEqual(self.puppet.leave("lp"), OK_EMPTY)
        self.puppet.wait_presence("ws", {"ws": 1})

    def test_session_expiry_untracks_presence(self) -> None:
        """A long-poll client that vanishes is ended after the idle timeout; its presence leaves."""
        vanishing = Puppet(self)  # type: ignore[arg-type]
        vanishing.join_with(
            "lp",
            self.server.url,
            self.topic,
            {"user": "lp"},
            package=self.package,
            **LONGPOLL,
        )
        self.puppet.join("ws", self.server.url, self.topic, user="ws")
        self.puppet.wait_presence("ws", {"lp": 1, "ws": 1})
        vanishing.stop()
        self.puppet.wait_presence("ws", {"ws": 1})
        test: SynchronousTestCase = self  # type: ignore[assignment]
        test.assertIn("lp", self.puppet.presence("ws")["leaves"])


class Phoenix18LongPollTests(LongPollClientMixin, SynchronousTestCase):
    package = "phoenix"


class Phoenix17LongPollTests(LongPollClientMixin, SynchronousTestCase):
    package = "phoenix17"


class FallbackTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.server = start_server(self, "--app", "tests.interop.longpollapp:app")
        self.puppet = Puppet(self)
        self.topic = unique_topic("room")

    def test_fallback_to_longpoll(self) -> None:
        """phoenix.js 1.8 with longPollFallbackMs falls back to long-poll when WebSockets are refused, and works."""
        reply = self.puppet.join_with(
            "c",
            self.server.url,
            self.topic,
            {"user": "c"},
            socketOptions={"longPollFallbackMs": 500},
        )
        self.assertEqual(reply, OK_EMPTY)
        self.assertEqual(self.puppet.transport("c"), "LongPoll")
        self.assertEqual(
            self.puppet.push("c", "ping", {"x": 1}),
            {"status": "ok", "response": {"x": 1}},
        )
        self.puppet.wait_presence("c", {"c": 1})


class DefaultTransportTests(SynchronousTestCase):
    def test_readme_example_without_global_websocket(self) -> None:
        """The README's client with no transport option works on Node 20 (no global WebSocket: long-poll)."""
        server = start_server(self)
        puppet = Puppet(self)
        topic = unique_topic("room")
        reply = puppet.join_with(
            "c", server.url, topic, {"user": "alice"}, transport="default"
        )
        self.assertEqual(reply, OK_EMPTY)
        version = subprocess.run(
            [node_executable(self), "--version"], capture_output=True, text=True
        ).stdout
        if int(version.strip().lstrip("v").split(".")[0]) < 22:
            self.assertEqual(puppet.transport("c"), "LongPoll")
        self.assertEqual(puppet.push("c", "new_msg", {"body": "hello"}), OK_EMPTY)
        puppet.wait_for("c", "new_msg", {"user": "alice", "body": "hello"})


class AuthTokenTests(SynchronousTestCase):
    def test_auth_token_over_longpoll(self) -> None:
        """phoenix.js 1.8's authToken reaches the connect hook over long-poll."""
        server = start_server(self, "--app", "tests.interop.authapp:app")
        puppet = Puppet(self)
        reply = puppet.join_with(
            "c",
            server.url,
            unique_topic("private"),
            transport="longpoll",
            socketOptions={"authToken": "secret-token"},
        )
        self.assertEqual(
            reply, {"status": "ok", "response": {"socket_user": "token-holder"}}
        )
