"""
Three real C{twistd beryl} nodes linked over AMP, or through a Redis
backplane, behave as one server for official phoenix clients connected to
different nodes.
"""

from __future__ import annotations

import time
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.interop.cluster import Node, start_cluster
from tests.interop.harness import unique_topic
from tests.interop.puppet import Puppet
from tests.interop.redis import start_redis


def start_nodes(testcase: SynchronousTestCase, over: str, **options: Any) -> list[Node]:
    """
    Three nodes linked C{over} the AMP mesh (C{"amp"}) or a Redis
    backplane (C{"redis"}, started for the test).
    """
    if over == "redis":
        options["backplane"] = start_redis(testcase).url
    return start_cluster(testcase, **options)


class ClusterBroadcastTests(SynchronousTestCase):
    over = "amp"

    def setUp(self) -> None:
        self.nodes = start_nodes(self, self.over)
        self.puppet = Puppet(self)
        self.topic = unique_topic("room")
        for client, node in zip("abc", self.nodes, strict=True):
            reply = self.puppet.join(client, node.url, self.topic, user=client)
            self.assertEqual(reply, {"status": "ok", "response": {}})

    def test_new_msg_reaches_every_node(self) -> None:
        """new_msg from a client on n3 reaches clients on n1, n2 (learned by gossip only) and n3."""
        reply = self.puppet.push("c", "new_msg", {"body": "from n3"})
        self.assertEqual(reply, {"status": "ok", "response": {}})
        for client in "abc":
            self.assertEqual(
                self.puppet.wait(client, "new_msg"), [{"user": "c", "body": "from n3"}]
            )

    def test_typing_reaches_all_but_sender(self) -> None:
        """typing from n1 reaches the clients on n2 and n3 but not the sender."""
        self.puppet.cast("a", "typing")
        for client in "bc":
            self.assertEqual(self.puppet.wait(client, "typing"), [{"user": "a"}])
        # The sender's own later broadcast arrives after anything earlier.
        self.puppet.push("a", "new_msg", {"body": "after typing"})
        self.puppet.wait("a", "new_msg")
        self.assertEqual(self.puppet.events("a", "typing"), [])

    def test_one_mebibyte_payload(self) -> None:
        """A 1 MiB message body crosses the cluster intact (AMP values are 64 KiB at most)."""
        body = "<" + "x" * (1024 * 1024 - 2) + ">"
        self.assertEqual(
            self.puppet.push("a", "new_msg", {"body": body})["status"], "ok"
        )
        expected = [{"user": "a", "body": "<1048576 chars <xxxxxxx..xxxxxxx>>"}]
        for client in "bc":
            self.assertEqual(self.puppet.wait(client, "new_msg"), expected)

    def test_order_from_one_sender(self) -> None:
        """200 messages from one client on n1 arrive in send order on n2."""
        for n in range(200):
            self.puppet.cast("a", "new_msg", {"body": str(n)})
        received = self.puppet.wait("b", "new_msg", count=200)
        self.assertEqual([m["body"] for m in received], [str(n) for n in range(200)])


class ClusterFailureTests(SynchronousTestCase):
    over = "amp"

    def test_kill_and_restart(self) -> None:
        """After kill -9 of n3 the others log it down and keep serving; restarted, it gets messages again."""
        n1, n2, n3 = start_nodes(self, self.over)
        puppet = Puppet(self)
        topic = unique_topic("room")
        for client, node in zip("abc", (n1, n2, n3), strict=True):
            puppet.join(client, node.url, topic, user=client)

        n3.kill()
        n1.wait_for_log("Cluster node n3 is down")
        n2.wait_for_log("Cluster node n3 is down")
        puppet.push("a", "new_msg", {"body": "while n3 is dead"})
        self.assertEqual(
            puppet.wait("b", "new_msg"), [{"user": "a", "body": "while n3 is dead"}]
        )

        n3.restart()
        n1.wait_for_log("Cluster node n3 is up", count=2)
        n3.wait_for_log("Cluster node n2 is up")
        # The phoenix client on n3 reconnects and rejoins by itself; keep
        # sending until a message reaches it.
        for attempt in range(150):
            puppet.push("a", "new_msg", {"body": f"n3 is back {attempt}"})
            if puppet.events("c", "new_msg"):
                break
            time.sleep(0.1)
        received = puppet.events("c", "new_msg")
        self.assertTrue(received, "no message reached the client on the restarted node")
        self.assertTrue(received[-1]["body"].startswith("n3 is back"))
        # And the restarted node's broadcasts reach the others.
        puppet.push("c", "new_msg", {"body": "from the new n3"})
        puppet.wait_for("b", "new_msg", {"user": "c", "body": "from the new n3"})


class RedisClusterBroadcastTests(ClusterBroadcastTests):
    """
    The broadcast tests, over a Redis backplane.
    """

    over = "redis"


class RedisClusterFailureTests(ClusterFailureTests):
    """
    The failure tests, over a Redis backplane.
    """

    over = "redis"
