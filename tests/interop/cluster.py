"""
Several C{twistd beryl} processes forming a cluster on loopback, for the
multi-node interop tests.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

from twisted.trial.unittest import SynchronousTestCase

from tests.interop.harness import BerylServer, free_port

__all__ = ["Node", "start_cluster"]


class Node:
    """
    One cluster node: its process (restartable on the same ports) and its
    name.
    """

    def __init__(
        self,
        testcase: SynchronousTestCase,
        directory: Path,
        name: str,
        peers: Sequence[int],
        options: Sequence[str],
        backplane: str | None = None,
    ) -> None:
        self.testcase = testcase
        self.name = name
        self.port = free_port()
        self.cluster_port = free_port()
        self.directory = directory
        self.options = ["--node-name", name, *options]
        if backplane is not None:
            self.options += ["--backplane", backplane]
        else:
            self.options += [
                "--cluster-port",
                f"tcp:{self.cluster_port}:interface=127.0.0.1",
            ]
        if peers and backplane is None:
            self.options += ["--peers", ",".join(f"127.0.0.1:{p}" for p in peers)]
        self.runs = 0
        self.server = self._new_server()

    def _new_server(self) -> BerylServer:
        self.runs += 1
        server = BerylServer(
            self.directory / f"{self.name}-{self.runs}.log", self.options, self.port
        )
        self.testcase.addCleanup(server.stop)
        return server

    @property
    def url(self) -> str:
        """
        The socket endpoint for phoenix clients.
        """
        return self.server.url

    def start(self) -> None:
        """
        Start this node's process.
        """
        self.server.start()

    def kill(self) -> None:
        """
        kill -9: no graceful leave, no close frames.
        """
        process = self.server.process
        assert process is not None
        process.kill()
        process.wait()
        self.server.process = None

    def restart(self) -> None:
        """
        Start a new process (a new incarnation) on the same ports.
        """
        self.server = self._new_server()
        self.server.start()

    def log(self) -> str:
        """
        This run's log.
        """
        return self.server.log()

    def wait_for_log(self, text: str, count: int = 1, timeout: float = 20.0) -> None:
        """
        Wait until this run's log contains C{text} C{count} times.
        """
        deadline = time.monotonic() + timeout
        while self.log().count(text) < count:
            if time.monotonic() > deadline:
                self.testcase.fail(
                    f"{self.name} never logged {text!r} ({count}x); log:\n{self.log()[-3000:]}"
                )
            time.sleep(0.05)


def start_cluster(
    testcase: SynchronousTestCase,
    size: int = 3,
    options: Sequence[str] = (),
    backplane: str | None = None,
) -> list[Node]:
    """
    Start C{size} nodes named C{n1}, C{n2}, ...: linked by the AMP mesh,
    where every node but the first lists only C{n1} as a peer, so the rest
    of the mesh must be learned; or, given a C{backplane} URL, through
    Redis.  Returns once every node has seen every other node come up.
    """
    directory = Path(testcase.mktemp())
    directory.mkdir(parents=True)
    first = Node(testcase, directory, "n1", [], options, backplane)
    nodes = [first] + [
        Node(testcase, directory, f"n{i}", [first.cluster_port], options, backplane)
        for i in range(2, size + 1)
    ]
    for node in nodes:
        node.start()
    for node in nodes:
        for other in nodes:
            if other is not node:
                node.wait_for_log(f"Cluster node {other.name} is up")
    return nodes
