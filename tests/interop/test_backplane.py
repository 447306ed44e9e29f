"""
Faults of the Redis backplane with real processes: Redis stopping and
coming back under two running C{twistd beryl} nodes.
"""

from __future__ import annotations

import time

from twisted.trial.unittest import SynchronousTestCase

from tests.interop.cluster import start_cluster
from tests.interop.harness import unique_topic
from tests.interop.puppet import Puppet
from tests.interop.redis import start_redis
from tests.interop.test_cluster_presence import FAST_PRESENCE

UNREACHABLE = "is unreachable: this node keeps serving its own clients"


class RedisOutageTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.redis = start_redis(self)
        self.n1, self.n2 = start_cluster(
            self, size=2, options=FAST_PRESENCE, backplane=self.redis.url
        )
        self.puppet = Puppet(self)
        self.topic = unique_topic("room")
        for client, node, user in (
            ("a1", self.n1, "alice"),
            ("a2", self.n1, "ann"),
            ("b", self.n2, "bob"),
        ):
            reply = self.puppet.join(client, node.url, self.topic, user=user)
            self.assertEqual(reply["status"], "ok")
        everyone = {"alice": 1, "ann": 1, "bob": 1}
        for client in ("a1", "a2", "b"):
            self.assertEqual(self.puppet.wait_presence(client, everyone), everyone)

    def test_outage_and_return(self) -> None:
        """Without Redis each node serves its own clients, logs once and drops remote presence; when Redis returns, broadcasts and presence come back with no restart."""
        self.redis.stop()
        for node in (self.n1, self.n2):
            node.wait_for_log(UNREACHABLE)
        # Local broadcasts still work.
        self.puppet.push("a1", "new_msg", {"body": "local only"})
        self.assertEqual(
            self.puppet.wait("a2", "new_msg"), [{"user": "alice", "body": "local only"}]
        )
        # Remote users leave after the down period, as in a partition.
        self.assertEqual(
            self.puppet.wait_presence("a1", {"alice": 1, "ann": 1}),
            {"alice": 1, "ann": 1},
        )
        self.assertEqual(self.puppet.wait_presence("b", {"bob": 1}), {"bob": 1})
        self.n1.wait_for_log("Cluster node n2 is down")
        # Some reconnection attempts later, the outage is still logged once.
        time.sleep(3)
        self.assertEqual(self.n1.log().count(UNREACHABLE), 1)

        self.redis.start()
        for node in (self.n1, self.n2):
            node.wait_for_log("is reachable again", timeout=40)
        self.n1.wait_for_log("Cluster node n2 is up", count=2)
        self.n2.wait_for_log("Cluster node n1 is up", count=2)
        everyone = {"alice": 1, "ann": 1, "bob": 1}
        for client in ("a1", "a2", "b"):
            self.assertEqual(self.puppet.wait_presence(client, everyone), everyone)
        for attempt in range(100):
            self.puppet.push("b", "new_msg", {"body": f"back {attempt}"})
            if any(m["user"] == "bob" for m in self.puppet.events("a1", "new_msg")):
                break
            time.sleep(0.1)
        received = [
            m for m in self.puppet.events("a1", "new_msg") if m["user"] == "bob"
        ]
        self.assertTrue(received, "no broadcast crossed after Redis came back")
        self.assertTrue(received[0]["body"].startswith("back "))


class RedisSecurityTests(SynchronousTestCase):
    def test_password_and_tls(self) -> None:
        """Nodes reach a password-protected Redis over rediss:// and broadcast through it; no log shows the password."""
        redis = start_redis(self, password="s3cret-pw", tls=True)
        n1, n2 = start_cluster(self, size=2, backplane=redis.url)
        puppet = Puppet(self)
        topic = unique_topic("room")
        for client, node in (("a", n1), ("b", n2)):
            self.assertEqual(
                puppet.join(client, node.url, topic, user=client)["status"], "ok"
            )
        puppet.push("a", "new_msg", {"body": "over TLS"})
        self.assertEqual(
            puppet.wait("b", "new_msg"), [{"user": "a", "body": "over TLS"}]
        )
        for node in (n1, n2):
            log = node.log()
            self.assertIn(f"rediss://127.0.0.1:{redis.port}/0", log)
            self.assertNotIn("s3cret-pw", log.split("\n", 1)[1])
