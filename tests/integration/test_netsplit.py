"""
Presence through real netsplits: three C{twistd beryl} nodes whose cluster
traffic runs through L{NetsplitProxy}, which blackholes directions between
nodes while the sockets stay open, watched through the official phoenix
client's C{Presence}.

Timings are short (ticks of 0.3 s, an idle heartbeat every 0.9 s, down
after 3 s, deleted after 9 s).  The times the tests print are for reading,
never asserted.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Iterable

from twisted.trial.unittest import SynchronousTestCase

from tests.integration.netsplit import NetsplitProxy
from tests.interop.harness import BerylServer, free_port, unique_topic
from tests.interop.puppet import Puppet

BROADCAST = 0.3
DOWN = 3.0
PERMDOWN = 9.0
TIMINGS = (
    "--broadcast-period",
    str(BROADCAST),
    "--max-silent-periods",
    "2",
    "--down-period",
    str(DOWN),
    "--permdown-period",
    str(PERMDOWN),
)


def report(what: str, seconds: float) -> None:
    """
    Print a measured time (trial shows it in the test's output).
    """
    sys.stdout.write(f"\n  netsplit: {what}: {seconds:.2f} s")
    sys.stdout.flush()


class NetsplitTests(SynchronousTestCase):
    """
    Partitions between n3 and n1, n2.  Watchers: client C{a} on n1, C{b} on
    n2, C{c} on n3, tracked as alice, bob and carol.
    """

    def setUp(self) -> None:
        self.proxy = NetsplitProxy()
        self.addCleanup(self.proxy.stop)
        directory = Path(self.mktemp())
        directory.mkdir(parents=True)
        names = ["n1", "n2", "n3"]
        cluster_ports = {name: free_port() for name in names}
        fronts = {name: self.proxy.front(name, cluster_ports[name]) for name in names}
        self.servers: dict[str, BerylServer] = {}
        for name in names:
            options = [
                "--node-name",
                name,
                "--cluster-port",
                f"tcp:{cluster_ports[name]}:interface=127.0.0.1",
                "--cluster-advertise",
                f"127.0.0.1:{fronts[name]}",
                *TIMINGS,
            ]
            if name != "n1":
                options += ["--peers", f"127.0.0.1:{fronts['n1']}"]
            server = BerylServer(directory / f"{name}.log", options, free_port())
            self.addCleanup(server.stop)
            self.servers[name] = server
        for server in self.servers.values():
            server.start()
        for name in names:
            for other in names:
                if other != name:
                    self.wait_for_log(name, f"Cluster node {other} is up")
        self.addCleanup(self.assert_no_tracebacks)
        self.puppet = Puppet(self)
        self.topic = unique_topic("room")
        self.join("a", "n1", "alice")
        self.join("b", "n2", "bob")
        self.join("c", "n3", "carol")

    def wait_for_log(self, name: str, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.servers[name].log():
            if time.monotonic() > deadline:
                self.fail(f"{name} never logged {text!r}:\n{self.servers[name].log()}")
            time.sleep(0.05)

    def assert_no_tracebacks(self) -> None:
        for name, server in self.servers.items():
            self.assertNotIn("Traceback", server.log(), name)

    def join(self, client: str, node: str, user: str) -> None:
        reply = self.puppet.join(client, self.servers[node].url, self.topic, user=user)
        self.assertEqual(reply, {"status": "ok", "response": {}})

    def converge(self, clients: Iterable[str], users: Iterable[str]) -> float:
        """
        Wait until every client lists exactly C{users}, one meta each; the
        seconds it took.
        """
        started = time.monotonic()
        expected = {user: 1 for user in users}
        for client in clients:
            self.assertEqual(
                self.puppet.wait_presence(client, expected, timeout=30), expected
            )
        return time.monotonic() - started

    def joins(self, client: str, user: str) -> int:
        """
        How many times C{user} appeared on C{client}'s list (onJoin of a new
        key).
        """
        joined: list[str] = self.puppet.presence(client)["joins"]
        return joined.count(user)

    def diffs(self) -> dict[str, int]:
        """
        How many presence_diffs each watcher has received.
        """
        return {c: len(self.puppet.events(c, "presence_diff")) for c in "abc"}

    def test_long_partition_heals_without_ghosts(self) -> None:
        """A split longer than the down period with leaves and joins on both sides heals to the true set, with no ghost."""
        self.join("b2", "n2", "bert")
        self.join("c2", "n3", "cathy")
        everyone = ["alice", "bob", "bert", "carol", "cathy"]
        self.converge(["a", "b", "c"], everyone)
        split = time.monotonic()
        self.proxy.split(["n3"], ["n1", "n2"])
        report("split to n3's users gone on n1", self.converge("a", everyone[:3]))
        self.converge(["b"], everyone[:3])
        self.converge(["c"], ["carol", "cathy"])
        report("split to remote users gone everywhere", time.monotonic() - split)
        self.puppet.close("b2")
        self.puppet.close("c2")
        self.join("a2", "n1", "erin")
        self.join("c3", "n3", "dave")
        self.converge(["a", "b"], ["alice", "bob", "erin"])
        self.converge(["c"], ["carol", "dave"])
        time.sleep(max(0.0, split + 2 * DOWN - time.monotonic()))
        self.proxy.heal()
        final = ["alice", "bob", "erin", "carol", "dave"]
        report("heal to converged on n3 (c)", self.converge(["c"], final))
        report("heal to converged everywhere", self.converge(["a", "b"], final))
        time.sleep(3 * BROADCAST)
        self.converge(["a", "b", "c"], final)
        self.assertEqual(self.joins("c", "bert"), 1)
        self.assertEqual(self.joins("a", "cathy"), 1)
        self.assertEqual(self.joins("b", "cathy"), 1)

    def test_repeated_heals_no_ghosts(self) -> None:
        """Across repeated splits, users who left during a split never reappear after the heal."""
        self.converge(["a", "b", "c"], ["alice", "bob", "carol"])
        ghosts = 0
        for cycle in range(3):
            left_n1, left_n3 = f"x{cycle}", f"y{cycle}"
            self.join(left_n1, "n1", left_n1)
            self.join(left_n3, "n3", left_n3)
            self.converge(["a", "b", "c"], ["alice", "bob", "carol", left_n1, left_n3])
            self.proxy.split(["n3"], ["n1", "n2"])
            self.converge(["a", "b"], ["alice", "bob", left_n1])
            self.converge(["c"], ["carol", left_n3])
            self.puppet.close(left_n1)
            self.puppet.close(left_n3)
            self.converge(["a", "b"], ["alice", "bob"])
            self.converge(["c"], ["carol"])
            self.proxy.heal()
            took = self.converge(["a", "b", "c"], ["alice", "bob", "carol"])
            report(f"cycle {cycle}: heal to converged", took)
            time.sleep(3 * BROADCAST)
            ghosts += self.joins("c", left_n1) - 1
            ghosts += self.joins("a", left_n3) - 1
            ghosts += self.joins("b", left_n3) - 1
        sys.stdout.write(f"\n  netsplit: ghosts over three heals: {ghosts}")
        self.assertEqual(ghosts, 0)

    def test_short_partition_no_presence_events(self) -> None:
        """A split shorter than the down period less one heartbeat interval causes no presence event at all."""
        self.converge(["a", "b", "c"], ["alice", "bob", "carol"])
        time.sleep(2 * BROADCAST)
        before = self.diffs()
        self.proxy.split(["n3"], ["n1", "n2"])
        time.sleep(1.0)
        self.proxy.heal()
        time.sleep(DOWN + 1.0)
        self.assertEqual(self.diffs(), before)
        self.converge(["a", "b", "c"], ["alice", "bob", "carol"])

    def test_asymmetric_partition_does_not_wedge(self) -> None:
        """With n1's bytes to n3 blackholed one way, nothing wedges: after the heal everyone converges."""
        self.converge(["a", "b", "c"], ["alice", "bob", "carol"])
        self.proxy.block("n1", "n3")
        time.sleep(DOWN)
        self.join("a2", "n1", "erin")
        self.join("c2", "n3", "dave")
        time.sleep(DOWN)
        self.proxy.heal()
        final = ["alice", "bob", "carol", "erin", "dave"]
        report("asymmetric: heal to converged", self.converge(["a", "b", "c"], final))
        # Broadcasts cross both ways again.
        for sender, user, receiver in (("a", "alice", "c"), ("c", "carol", "a")):
            body = {"body": f"after the heal from {user}"}
            self.assertEqual(self.puppet.push(sender, "new_msg", body)["status"], "ok")
            self.puppet.wait_for(receiver, "new_msg", {"user": user, **body})

    def test_partition_longer_than_permdown_rejoins_cleanly(self) -> None:
        """After a split longer than the permdown period the nodes rejoin cleanly: every user once, one meta each."""
        self.converge(["a", "b", "c"], ["alice", "bob", "carol"])
        split = time.monotonic()
        self.proxy.split(["n3"], ["n1", "n2"])
        self.converge(["a", "b"], ["alice", "bob"])
        self.converge(["c"], ["carol"])
        time.sleep(max(0.0, split + PERMDOWN + 2.0 - time.monotonic()))
        self.wait_for_log("n1", "Presence peer n3 is permanently down")
        self.proxy.heal()
        final = ["alice", "bob", "carol"]
        report("permdown: heal to converged", self.converge(["a", "b", "c"], final))
