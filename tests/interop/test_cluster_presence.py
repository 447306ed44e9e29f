"""
Presence across three real C{twistd beryl} nodes, seen through the official
phoenix client's C{Presence}: lists converge, leaves travel, a killed node's
users leave after the down period and come back with it.
"""

from __future__ import annotations

from typing import Iterable

from twisted.trial.unittest import SynchronousTestCase

from tests.interop.cluster import start_cluster
from tests.interop.harness import unique_topic
from tests.interop.puppet import Puppet
from tests.interop.redis import start_redis

# Short replication timings, so that "down" happens within a test.
FAST_PRESENCE = (
    "--broadcast-period",
    "0.2",
    "--max-silent-periods",
    "2",
    "--down-period",
    "1.0",
    "--permdown-period",
    "3.0",
)


class ClusterPresenceTests(SynchronousTestCase):
    over = "amp"

    def setUp(self) -> None:
        backplane = start_redis(self).url if self.over == "redis" else None
        self.nodes = start_cluster(self, options=FAST_PRESENCE, backplane=backplane)
        self.puppet = Puppet(self)
        self.topic = unique_topic("room")

    def join(self, client: str, node: int, user: str) -> None:
        reply = self.puppet.join(client, self.nodes[node].url, self.topic, user=user)
        self.assertEqual(reply, {"status": "ok", "response": {}})

    def converge(self, clients: Iterable[str], expected: dict[str, int]) -> None:
        for client in clients:
            self.assertEqual(self.puppet.wait_presence(client, expected), expected)

    def test_lists_converge_and_leaves_travel(self) -> None:
        """Users on three nodes see the same list; a disconnect on n3 leaves everywhere."""
        self.join("a", 0, "alice")
        self.join("b", 1, "bob")
        self.join("c", 2, "carol")
        self.converge("abc", {"alice": 1, "bob": 1, "carol": 1})
        self.puppet.close("c")
        self.converge("ab", {"alice": 1, "bob": 1})
        for client in "ab":
            self.assertIn("carol", self.puppet.presence(client)["leaves"])

    def test_two_tabs_one_key(self) -> None:
        """Two sockets of one user on two nodes are one key with two metas; closing one keeps the key."""
        self.join("a", 0, "alice")
        self.join("a2", 1, "alice")
        self.join("c", 2, "carol")
        self.converge(["a", "a2", "c"], {"alice": 2, "carol": 1})
        self.puppet.close("a2")
        self.converge("ac", {"alice": 1, "carol": 1})
        for client in "ac":
            self.assertNotIn("alice", self.puppet.presence(client)["leaves"])

    def test_killed_node_users_leave_and_return(self) -> None:
        """kill -9 of n3: its users leave on n1 and n2 after the down period; restarted, they are back."""
        self.join("a", 0, "alice")
        self.join("b", 1, "bob")
        self.join("c", 2, "carol")
        self.converge("abc", {"alice": 1, "bob": 1, "carol": 1})
        self.nodes[2].kill()
        self.converge("ab", {"alice": 1, "bob": 1})
        self.nodes[2].restart()
        # carol's phoenix client reconnects to the restarted node and rejoins.
        self.converge("abc", {"alice": 1, "bob": 1, "carol": 1})


class RedisClusterPresenceTests(ClusterPresenceTests):
    """
    The presence tests, over a Redis backplane.
    """

    over = "redis"
