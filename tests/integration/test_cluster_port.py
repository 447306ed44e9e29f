"""
Attacks on the cluster port of real C{twistd beryl} processes, on loopback:
what a stranger or a misconfigured node can make a node hold, log or
believe.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

from twisted.protocols import amp
from twisted.trial.unittest import SynchronousTestCase

from beryl.cluster.commands import PROTOCOL_VERSION, prove_secret
from tests.interop.cluster import Node

SECRET = ("--cluster-secret", "s3cret")


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _hello(name: str) -> bytes:
    return amp.AmpBox(
        {
            b"_command": b"Hello",
            b"_ask": b"1",
            b"version": str(PROTOCOL_VERSION).encode(),
            b"node_name": name.encode(),
            b"nonce": b"n" * 16,
        }
    ).serialize()


def _read_box(sock: socket.socket) -> dict[bytes, bytes]:
    """Read one AMP box from C{sock}."""

    def exactly(count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = sock.recv(count - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    box: dict[bytes, bytes] = {}
    while True:
        key = exactly(int.from_bytes(exactly(2), "big"))
        if not key:
            return box
        box[key] = exactly(int.from_bytes(exactly(2), "big"))


class ClusterPortTests(SynchronousTestCase):
    """
    A secret-protected node, attacked through its cluster port.
    """

    def setUp(self) -> None:
        self.directory = Path(self.mktemp())
        self.directory.mkdir(parents=True)
        self.node = Node(self, self.directory, "n1", [], SECRET)
        self.node.start()
        self.node.wait_for_log("Cluster node n1 listening")

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.node.cluster_port), 5)
        self.addCleanup(sock.close)
        return sock

    def flood(self, sock: socket.socket, value_size: int, limit: int) -> int:
        """
        Send key/value pairs of a box that never ends (distinct 255-byte
        keys, values of C{value_size}) until the node closes the
        connection; bytes sent.
        """
        sent = 0
        value = value_size.to_bytes(2, "big") + b"v" * value_size
        try:
            while sent < limit:
                key = b"%0255d" % sent
                piece = len(key).to_bytes(2, "big") + key + value
                sock.sendall(piece)
                sent += len(piece)
            sock.settimeout(10)
            while sock.recv(65536):
                pass
        except OSError:
            pass
        return sent

    def test_endless_box(self) -> None:
        """A never-ending AMP box before the proof is cut off and memory stays flat."""
        process = self.node.server.process
        assert process is not None
        before = _rss_kib(process.pid)
        for value_size in (65535, 1000):
            sent = self.flood(self.connect(), value_size, 200 * 1024 * 1024)
            self.assertLess(sent, 200 * 1024 * 1024)
            print(f"\nendless box before the proof: cut off after {sent} bytes sent")
        self.node.wait_for_log("Closed the cluster link")
        grown = _rss_kib(process.pid) - before
        print(f"the node's RSS grew by {grown} KiB")
        self.assertLess(grown, 64 * 1024, f"the node grew by {grown} KiB")
        # The second attack, from the same address, is summarised.
        self.assertEqual(self.node.log().count("Closed the cluster link"), 1)
        self.assertNotIn("Traceback", self.node.log())

    def test_endless_box_after_proof(self) -> None:
        """A peer that proved the secret and then sends a never-ending box is cut off."""
        process = self.node.server.process
        assert process is not None
        before = _rss_kib(process.pid)
        sock = self.connect()
        sock.sendall(_hello("mallory"))
        answer = _read_box(sock)
        proof = prove_secret(b"s3cret", b"connect", answer[b"nonce"], b"n" * 16)
        sock.sendall(
            amp.AmpBox(
                {
                    b"_command": b"Authenticate",
                    b"_ask": b"2",
                    b"proof": proof,
                    b"incarnation": b"i",
                    b"advertise": b"",
                }
            ).serialize()
        )
        self.node.wait_for_log("Cluster node mallory is up")
        sent = self.flood(sock, 65535, 200 * 1024 * 1024)
        self.assertLess(sent, 200 * 1024 * 1024)
        print(f"\nendless box after the proof: cut off after {sent} bytes sent")
        self.node.wait_for_log("sent an AMP box of more than")
        grown = _rss_kib(process.pid) - before
        print(f"the node's RSS grew by {grown} KiB")
        self.assertLess(grown, 64 * 1024, f"the node grew by {grown} KiB")
        self.assertNotIn("Traceback", self.node.log())

    def test_unauthenticated_commands(self) -> None:
        """Two hundred Pings and bad Hellos before the proof: a few short lines, no traceback."""
        ping = amp.AmpBox({b"_command": b"Ping", b"_ask": b"1"}).serialize()
        lines_before = len(self.node.log().splitlines())
        bad_hello = amp.AmpBox(
            {
                b"_command": b"Hello",
                b"_ask": b"1",
                b"version": b"two",
                b"node_name": b"x",
                b"nonce": b"",
            }
        ).serialize()
        for index in range(200):
            sock = self.connect()
            sock.sendall(ping if index % 2 else bad_hello)
            sock.settimeout(10)
            try:
                while sock.recv(65536):
                    pass
            except OSError:
                pass
            sock.close()
        self.node.wait_for_log("Closed the cluster link")
        time.sleep(1)
        log = self.node.log()
        self.assertNotIn("Traceback", log)
        self.assertLessEqual(log.count("Closed the cluster link"), 2)
        # Not a line per connection.
        self.assertLess(len(log.splitlines()) - lines_before, 10)

    def test_wrong_secret_node(self) -> None:
        """A node with the wrong secret retrying for 10 s: one line on each side, not one per try."""
        other = Node(
            self,
            self.directory,
            "n2",
            [self.node.cluster_port],
            ("--cluster-secret", "wrong"),
        )
        other.start()
        self.node.wait_for_log("Refused cluster link")
        other.wait_for_log("Refused cluster link")
        time.sleep(10)
        self.assertEqual(self.node.log().count("Refused cluster link"), 1)
        self.assertEqual(other.log().count("Refused cluster link"), 1)

    def test_stranger_cannot_delay_node_down(self) -> None:
        """A stranger giving a killed node's name every second does not hold back its "down"."""
        second = Node(self, self.directory, "n2", [self.node.cluster_port], SECRET)
        second.start()
        self.node.wait_for_log("Cluster node n2 is up")
        second.kill()
        deadline = time.monotonic() + 30
        while "Cluster node n2 is down" not in self.node.log():
            self.assertLess(time.monotonic(), deadline, "n2 was never reported down")
            sock = self.connect()
            sock.sendall(_hello("n2"))
            time.sleep(0.5)
            sock.close()
        self.assertNotIn("Traceback", self.node.log())
