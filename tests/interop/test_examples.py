"""
The runnable examples in docs/examples work as documented, under a real
C{twistd beryl}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.interop.harness import (
    RawWebSocket,
    assert_refused,
    start_server,
    unique_topic,
)


class ChatAppExampleTests(SynchronousTestCase):
    def setUp(self) -> None:
        # docs/examples/chat_app.py, imported as a namespace package from the
        # repository root (the README uses PYTHONPATH=docs/examples instead).
        self.server = start_server(self, "--app", "docs.examples.chat_app:app")

    def test_connect_hook_refuses_without_token(self) -> None:
        """Without a token parameter the connect hook refuses the socket with 403."""
        refusal = assert_refused(self, self.server.port, query="vsn=2.0.0")
        self.assertEqual(refusal.status, 403)

    def test_typed_assigns_count_messages(self) -> None:
        """A socket with a token joins chat:<room>, says things to the room and reads its own count."""
        topic = unique_topic("chat")
        room = topic.split(":", 1)[1]
        alice = RawWebSocket.connect(self.server.port, query="token=alice&vsn=2.0.0")
        bob = RawWebSocket.connect(self.server.port, query="token=bob&vsn=2.0.0")
        self.addCleanup(alice.close)
        self.addCleanup(bob.close)
        for client in (alice, bob):
            self.assertEqual(
                client.request(["1", "1", topic, "phx_join", {}]),
                [
                    "1",
                    "1",
                    topic,
                    "phx_reply",
                    {"status": "ok", "response": {"room": room}},
                ],
            )
        alice.send_json(["1", "2", topic, "say", {"text": "hello"}])
        said = [None, None, topic, "said", {"user": "alice", "text": "hello"}]
        self.assertEqual(alice.recv_json(), said)
        self.assertEqual(bob.recv_json(), said)
        self.assertEqual(
            alice.request(["1", "3", topic, "count", {}]),
            ["1", "3", topic, "phx_reply", {"status": "ok", "response": {"sent": 1}}],
        )
        self.assertEqual(
            bob.request(["1", "2", topic, "count", {}]),
            ["1", "2", topic, "phx_reply", {"status": "ok", "response": {"sent": 0}}],
        )
