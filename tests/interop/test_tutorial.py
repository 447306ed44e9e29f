"""
Each step of the guide's tutorial (docs/examples/step*.py) does what the
guide says, served by a real C{twistd beryl --app}; step 5 runs step 4 on a
two-node cluster.
"""

from __future__ import annotations

import base64
import time
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.interop.cluster import start_cluster
from tests.interop.harness import (
    RawWebSocket,
    assert_refused,
    start_server,
    unique_topic,
)

AUTH_TOKEN_PREFIX = "base64url.bearer.phx."


def ok(response: Any) -> dict[str, Any]:
    return {"status": "ok", "response": response}


def error(reason: str) -> dict[str, Any]:
    return {"status": "error", "response": {"reason": reason}}


def auth_token(token: str) -> str:
    """
    The subprotocol phoenix.js 1.8 offers for C{authToken: token}.
    """
    return AUTH_TOKEN_PREFIX + base64.b64encode(token.encode("latin-1")).decode(
        "ascii"
    ).rstrip("=")


class StepTestCase(SynchronousTestCase):
    step = ""

    def setUp(self) -> None:
        self.server = start_server(self, "--app", f"docs.examples.{self.step}:app")
        self.topic = unique_topic("room")

    def client(self, query: str = "vsn=2.0.0", **kwargs: Any) -> RawWebSocket:
        client = RawWebSocket.connect(self.server.port, query=query, **kwargs)
        self.addCleanup(client.close)
        return client


class Step1Tests(StepTestCase):
    step = "step1_ping"

    def test_ping(self) -> None:
        """Step 1: anyone joins; ping is answered with its payload, other events with an error."""
        client = self.client()
        self.assertEqual(
            client.request(["1", "1", self.topic, "phx_join", {}])[4], ok({})
        )
        self.assertEqual(
            client.request(["1", "2", self.topic, "ping", {"n": 1}])[4], ok({"n": 1})
        )
        self.assertEqual(
            client.request(["1", "3", self.topic, "pong", {}])[4],
            error("unknown event pong"),
        )


class Step2Tests(StepTestCase):
    step = "step2_chat"

    def test_chat(self) -> None:
        """Step 2: joins need a user; new_msg reaches everyone and counts; bye stops the channel and terminate logs it."""
        alice, bob = self.client(), self.client()
        self.assertEqual(
            alice.request(["1", "1", self.topic, "phx_join", {}])[4],
            error("user required"),
        )
        for ref, (client, user) in enumerate(((alice, "alice"), (bob, "bob")), 2):
            self.assertEqual(
                client.request(
                    [str(ref), str(ref), self.topic, "phx_join", {"user": user}]
                )[4],
                ok({}),
            )
        alice.send_json(["2", "5", self.topic, "new_msg", {"body": "hi"}])
        message = [None, None, self.topic, "new_msg", {"user": "alice", "body": "hi"}]
        self.assertEqual(alice.recv_json(), message)
        self.assertEqual(alice.recv_json()[4], ok({"sent": 1}))
        self.assertEqual(bob.recv_json(), message)
        self.assertEqual(
            alice.request(["2", "6", self.topic, "new_msg", "hi"])[4],
            error("expected new_msg with a body, or bye"),
        )
        self.assertEqual(
            alice.request(["2", "7", self.topic, "bye", {}])[4], ok({"sent": 1})
        )
        self.assertEqual(alice.recv_json(), ["2", "2", self.topic, "phx_close", {}])
        deadline = time.monotonic() + 30
        while f"alice left {self.topic}: normal" not in self.server.log():
            self.assertLess(time.monotonic(), deadline, self.server.log())
            time.sleep(0.05)


class Step3Tests(StepTestCase):
    step = "step3_auth"

    def test_strangers_refused(self) -> None:
        """Step 3: a socket without a known token is refused with 403."""
        self.assertEqual(assert_refused(self, self.server.port).status, 403)
        refused = assert_refused(self, self.server.port, query="token=nope&vsn=2.0.0")
        self.assertEqual(refused.status, 403)

    def test_token_parameter_and_auth_token(self) -> None:
        """Step 3: a token parameter or a phoenix.js authToken identifies the user, whatever the join payload says."""
        by_param = self.client("token=alice-secret&vsn=2.0.0")
        by_auth = self.client(protocols=["phoenix", auth_token("bob-secret")])
        join = ["1", "1", self.topic, "phx_join", {"user": "mallory"}]
        self.assertEqual(by_param.request(join)[4], ok({"user": "alice"}))
        self.assertEqual(by_auth.request(join)[4], ok({"user": "bob"}))
        by_auth.send_json(["1", "2", self.topic, "new_msg", {"body": "hello"}])
        said = [None, None, self.topic, "new_msg", {"user": "bob", "body": "hello"}]
        self.assertEqual(by_param.recv_json(), said)


class Step4Tests(StepTestCase):
    step = "step4_presence"

    def test_presence(self) -> None:
        """Step 4: each joiner sees itself in its first state; the others get diffs for joins, updates and leaves."""
        alice = self.client("token=alice-secret&vsn=2.0.0")
        self.assertEqual(
            alice.request(["1", "1", self.topic, "phx_join", {}])[4], ok({})
        )
        self.assertEqual(list(alice.recv_json()[4]["joins"]), ["alice"])
        state = alice.recv_json()
        self.assertEqual(state[3], "presence_state")
        self.assertEqual(list(state[4]), ["alice"])
        bob = self.client("token=bob-secret&vsn=2.0.0")
        self.assertEqual(bob.request(["1", "1", self.topic, "phx_join", {}])[4], ok({}))
        self.assertEqual(bob.recv_json()[3], "presence_diff")
        self.assertEqual(sorted(bob.recv_json()[4]), ["alice", "bob"])
        self.assertEqual(list(alice.recv_json()[4]["joins"]), ["bob"])
        bob.send_json(["1", "2", self.topic, "status", {"body": "away"}])
        update = alice.recv_json()[4]
        self.assertEqual(update["joins"]["bob"]["metas"][0]["status"], "away")
        self.assertEqual(list(update["leaves"]), ["bob"])
        bob.close()
        self.assertEqual(
            alice.recv_json()[4]["leaves"]["bob"]["metas"][0]["status"], "away"
        )


class Step5Tests(SynchronousTestCase):
    def test_cluster(self) -> None:
        """Step 5: step 4 on two nodes: users on different nodes see each other's presence and messages."""
        first, second = start_cluster(
            self,
            size=2,
            options=["--app", "docs.examples.step4_presence:app"],
        )
        topic = unique_topic("room")
        alice = RawWebSocket.connect(first.port, query="token=alice-secret&vsn=2.0.0")
        bob = RawWebSocket.connect(second.port, query="token=bob-secret&vsn=2.0.0")
        self.addCleanup(alice.close)
        self.addCleanup(bob.close)
        for client in (alice, bob):
            self.assertEqual(
                client.request(["1", "1", topic, "phx_join", {}])[4], ok({})
            )
        # Replication is periodic: wait for each to see the other join.
        for client, other in ((alice, "bob"), (bob, "alice")):
            while True:
                frame = client.recv_json(timeout=30)
                if frame[3] == "presence_diff" and other in frame[4]["joins"]:
                    break
        bob.send_json(["1", "2", topic, "new_msg", {"body": "across"}])
        said = [None, None, topic, "new_msg", {"user": "bob", "body": "across"}]
        while (frame := alice.recv_json(timeout=30))[3] != "new_msg":
            pass
        self.assertEqual(frame, said)
