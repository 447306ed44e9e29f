"""
C{twistd beryl --workers 2}: one port, two worker processes clustered with
each other, seen by official phoenix clients that the kernel spreads over
both workers.
"""

from __future__ import annotations

import os
import signal
import socket
import time

from twisted.trial.unittest import SynchronousTestCase

from beryl.testing import connections_per_worker, worker_pids
from tests.interop.harness import (
    OK_EMPTY,
    BerylServer,
    RawWebSocket,
    free_port,
    start_server,
    unique_topic,
)
from tests.interop.puppet import Puppet
from tests.interop.redis import start_redis
from tests.interop.test_cluster_presence import FAST_PRESENCE

NO_PROC = (
    None
    if os.path.isdir("/proc/self/fd")
    else "finding which worker serves a client reads Linux's /proc"
)


def wait_for_log(
    testcase: SynchronousTestCase,
    server: BerylServer,
    text: str,
    count: int = 1,
    timeout: float = 30.0,
) -> None:
    """
    Wait until the server's log holds C{text} C{count} times.
    """
    deadline = time.monotonic() + timeout
    while server.log().count(text) < count:
        if time.monotonic() > deadline:
            testcase.fail(
                f"never logged {text!r} ({count}x); log:\n{server.log()[-3000:]}"
            )
        time.sleep(0.05)


def start_workers(
    testcase: SynchronousTestCase,
    *options: str,
    worker_names: tuple[str, str] = ("beryl-w1", "beryl-w2"),
) -> BerylServer:
    """
    A C{--workers 2} server whose two workers have linked up.
    """
    server = start_server(testcase, "--workers", "2", *FAST_PRESENCE, *options)
    for name in worker_names:
        wait_for_log(testcase, server, f"Cluster node {name} is up")
    return server


class WorkersTestCase(SynchronousTestCase):
    """
    A two-worker server, and clients placed on known workers.
    """

    skip = NO_PROC

    def setUp(self) -> None:
        self.server = start_workers(self)
        self.puppet = Puppet(self)
        self.topic = unique_topic("room")
        self.joined = 0

    def counts(self) -> dict[int, int]:
        """
        Established connections per worker number.
        """
        pids = worker_pids(self.server.log())
        by_pid = connections_per_worker(self.server.port, pids.values())
        return {index: by_pid[pid] for index, pid in pids.items()}

    def place(self, user_of: dict[int, str]) -> dict[int, str]:
        """
        Join clients (closing the surplus) until each worker in C{user_of}
        serves one, joined as that worker's user; return the client per
        worker.
        """
        placed: dict[int, str] = {}
        for _ in range(60):
            if len(placed) == len(user_of):
                return placed
            client = f"c{self.joined}"
            self.joined += 1
            before = self.counts()
            # A client joins as a throwaway user until its worker is known.
            reply = self.puppet.join(
                client, self.server.url, unique_topic("room"), user=client
            )
            self.assertEqual(reply["status"], "ok")
            after = self.counts()
            gained = [i for i in after if after[i] > before.get(i, 0)]
            self.assertEqual(len(gained), 1, (before, after))
            self.puppet.close(client)
            worker = gained[0]
            if worker in placed or worker not in user_of:
                continue
            # The same client id reconnects; the kernel may put it anywhere,
            # so check again after joining the real topic.
            before = self.counts()
            named = f"{client}w"
            self.puppet.join(named, self.server.url, self.topic, user=user_of[worker])
            after = self.counts()
            gained = [i for i in after if after[i] > before.get(i, 0)]
            if gained == [worker]:
                placed[worker] = named
            else:
                self.puppet.close(named)
        self.fail(f"clients never reached every worker: {placed}, {self.counts()}")


class WorkerBroadcastTests(WorkersTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.clients = self.place({1: "alice", 2: "bob"})

    def test_both_workers_serve_clients(self) -> None:
        """The kernel spreads clients over both workers: each serves one of ours."""
        counts = self.counts()
        self.assertEqual(sorted(counts), [1, 2])
        self.assertTrue(all(count >= 1 for count in counts.values()), counts)

    def test_broadcast_reaches_both_workers(self) -> None:
        """new_msg from a client on worker 2 reaches the clients on workers 1 and 2."""
        reply = self.puppet.push(self.clients[2], "new_msg", {"body": "from w2"})
        self.assertEqual(reply, {"status": "ok", "response": {}})
        for client in self.clients.values():
            self.assertEqual(
                self.puppet.wait(client, "new_msg"),
                [{"user": "bob", "body": "from w2"}],
            )

    def test_broadcast_from_skips_sender(self) -> None:
        """typing on worker 1 reaches worker 2's client but not the sender."""
        sender, other = self.clients[1], self.clients[2]
        self.puppet.cast(sender, "typing")
        self.assertEqual(self.puppet.wait(other, "typing"), [{"user": "alice"}])
        self.puppet.push(sender, "new_msg", {"body": "after typing"})
        self.puppet.wait(sender, "new_msg")
        self.assertEqual(self.puppet.events(sender, "typing"), [])

    def test_order_from_one_sender(self) -> None:
        """200 messages from a client on worker 1 arrive in send order on worker 2."""
        for n in range(200):
            self.puppet.cast(self.clients[1], "new_msg", {"body": str(n)})
        received = self.puppet.wait(self.clients[2], "new_msg", count=200)
        self.assertEqual([m["body"] for m in received], [str(n) for n in range(200)])

    def test_presence_is_one_list(self) -> None:
        """Users on both workers see one presence list; a disconnect leaves everywhere."""
        expected = {"alice": 1, "bob": 1}
        for client in self.clients.values():
            self.assertEqual(self.puppet.wait_presence(client, expected), expected)
        self.puppet.close(self.clients[2])
        self.assertEqual(
            self.puppet.wait_presence(self.clients[1], {"alice": 1}), {"alice": 1}
        )
        self.assertIn("bob", self.puppet.presence(self.clients[1])["leaves"])


class WorkerFailureTests(WorkersTestCase):
    def test_killed_worker_restarts_and_its_users_leave(self) -> None:
        """kill -9 of worker 2: the parent restarts it, its users leave after the down period, and both workers serve again."""
        clients = self.place({1: "alice", 2: "bob"})
        expected = {"alice": 1, "bob": 1}
        self.assertEqual(self.puppet.wait_presence(clients[1], expected), expected)
        old_pid = worker_pids(self.server.log())[2]
        os.kill(old_pid, signal.SIGKILL)
        # bob's client would reconnect (to either worker); stop it, so that
        # only the dead worker's presence can keep bob listed.
        self.puppet.close(clients[2])
        wait_for_log(self, self.server, f"Worker 2 (pid {old_pid}) died")
        self.assertEqual(
            self.puppet.wait_presence(clients[1], {"alice": 1}), {"alice": 1}
        )
        self.assertIn("bob", self.puppet.presence(clients[1])["leaves"])
        wait_for_log(self, self.server, "Cluster node beryl-w2 is up", count=2)
        self.assertNotEqual(worker_pids(self.server.log())[2], old_pid)
        # The restarted worker serves clients and is in the cluster again.
        again = self.place({2: "carol"})
        reply = self.puppet.push(again[2], "new_msg", {"body": "from the new w2"})
        self.assertEqual(reply["status"], "ok")
        self.puppet.wait_for(
            clients[1], "new_msg", {"user": "carol", "body": "from the new w2"}
        )
        expected = {"alice": 1, "carol": 1}
        for client in (clients[1], again[2]):
            self.assertEqual(self.puppet.wait_presence(client, expected), expected)


class WorkerStopTests(SynchronousTestCase):
    skip = NO_PROC

    def test_sigterm_drains_every_worker(self) -> None:
        """SIGTERM to the parent makes both workers close their sockets with 1001 and shut down cleanly, then the parent."""
        server = start_workers(self)
        pids = worker_pids(server.log())
        clients = []
        topic = unique_topic("feed")
        for _ in range(40):
            client = RawWebSocket.connect(server.port)
            self.addCleanup(client.close)
            self.assertEqual(
                client.request(["1", "1", topic, "phx_join", {}]),
                ["1", "1", topic, "phx_reply", OK_EMPTY],
            )
            clients.append(client)
            by_pid = connections_per_worker(server.port, pids.values())
            if len(clients) >= 2 and all(by_pid.values()):
                break
        self.assertTrue(all(by_pid.values()), by_pid)
        # twistd exits by the signal that stopped it; a hung worker would
        # have made the harness kill the parent (-9).
        self.assertIn(server.stop(), (0, -signal.SIGTERM))
        for client in clients:
            self.assertEqual(client.recv_close(), (1001, "server shutting down", []))
        log = server.log()
        for index, pid in pids.items():
            self.assertIn(f"Worker {index} (pid {pid}) stopped", log)
            self.assertIn(f"[worker {index}] Main loop terminated.", log)
            self.assertFalse(_alive(pid))


def _alive(pid: int) -> bool:
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _two_free_ports() -> int:
    """
    A port P such that P and P + 1 are free on loopback.
    """
    for _ in range(50):
        port = free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise AssertionError("no two consecutive free ports")


class OtherNodeTestCase(WorkersTestCase):
    """
    Two workers (node names m-w1, m-w2) and another node, b, on the same
    cluster or backplane; C{setUp} starts them as C{self.server} and
    C{self.other}, then calls L{meet}.
    """

    other: BerylServer

    def meet(self) -> None:
        """
        Wait until node b and both workers see each other.
        """
        for name in ("m-w1", "m-w2"):
            wait_for_log(self, self.other, f"Cluster node {name} is up")
        wait_for_log(self, self.server, "Cluster node b is up", count=2)
        self.puppet = Puppet(self)
        self.topic = unique_topic("room")
        self.joined = 0

    def assert_other_node_reaches_both_workers(self) -> None:
        """
        A broadcast from node b reaches clients on both workers, and
        presence agrees everywhere.
        """
        clients = self.place({1: "alice", 2: "bob"})
        reply = self.puppet.join("x", self.other.url, self.topic, user="xavier")
        self.assertEqual(reply["status"], "ok")
        self.puppet.push("x", "new_msg", {"body": "from b"})
        for client in clients.values():
            self.assertEqual(
                self.puppet.wait(client, "new_msg"),
                [{"user": "xavier", "body": "from b"}],
            )
        expected = {"alice": 1, "bob": 1, "xavier": 1}
        for client in (*clients.values(), "x"):
            self.assertEqual(self.puppet.wait_presence(client, expected), expected)


class WorkersInWiderClusterTests(OtherNodeTestCase):
    def setUp(self) -> None:
        cluster_port = _two_free_ports()
        self.server = start_workers(
            self,
            "--node-name",
            "m",
            "--cluster-port",
            f"tcp:{cluster_port}:interface=127.0.0.1",
            worker_names=("m-w1", "m-w2"),
        )
        self.other = start_server(
            self,
            "--node-name",
            "b",
            "--cluster-port",
            f"tcp:{free_port()}:interface=127.0.0.1",
            "--peers",
            f"127.0.0.1:{cluster_port}",
        )
        self.meet()

    def test_other_node_reaches_both_workers(self) -> None:
        """With --cluster-port, a broadcast from another node reaches clients on both workers of the machine."""
        self.assert_other_node_reaches_both_workers()


class WorkersOverBackplaneTests(OtherNodeTestCase):
    def setUp(self) -> None:
        redis = start_redis(self)
        self.server = start_workers(
            self,
            "--node-name",
            "m",
            "--backplane",
            redis.url,
            worker_names=("m-w1", "m-w2"),
        )
        self.other = start_server(
            self, "--node-name", "b", "--backplane", redis.url, *FAST_PRESENCE
        )
        self.meet()

    def test_other_node_reaches_both_workers(self) -> None:
        """With --backplane, each worker is a node of the backplane: another node's broadcast and presence reach both."""
        self.assert_other_node_reaches_both_workers()
