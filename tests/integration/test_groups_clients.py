"""
Tests for L{beryl.groups}: the table of groups, and group broadcasts
through a coordinator, a cluster, and (end to end) to real C{phoenix}
clients.
"""

from __future__ import annotations

import json
import os
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.server import Site

from beryl.groups import Groups
from beryl.server import make_server
from beryl.web import root_resource
from tests.interop.harness import INTEROP_DIR, node_executable
from tests.test_groups import rooms_app


class NodeLines(ProcessProtocol):
    """
    A node process whose stdout is read as JSON lines, one Deferred per
    line asked for with L{next_line}.
    """

    def __init__(self) -> None:
        self.buffer = b""
        self.lines: list[Any] = []
        self.waiting: list[Deferred[Any]] = []
        self.stderr = b""
        self.ended: Deferred[None] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\n" in self.buffer:
            line, _, self.buffer = self.buffer.partition(b"\n")
            self.lines.append(json.loads(line))
            self._feed()

    def errReceived(self, data: bytes) -> None:
        self.stderr += data

    def processEnded(self, reason: Failure) -> None:
        for waiter in self.waiting:
            waiter.errback(
                AssertionError(f"node exited early; stderr:\n{self.stderr.decode()}")
            )
        self.waiting.clear()
        self.ended.callback(None)

    def _feed(self) -> None:
        while self.lines and self.waiting:
            self.waiting.pop(0).callback(self.lines.pop(0))

    def next_line(self) -> Deferred[Any]:
        """The next JSON line the process prints."""
        waiter: Deferred[Any] = Deferred()
        self.waiting.append(waiter)
        self._feed()
        return waiter


class EndToEndTests(TestCase):
    """Group broadcasts to the official phoenix client over real WebSockets."""

    def test_phoenix_clients_in_two_rooms(self) -> Deferred[None]:
        """Two phoenix clients in two rooms of a group both get a group broadcast; an outsider does not."""
        from twisted.internet import reactor

        return ensureDeferred(self._two_rooms(reactor))

    async def _two_rooms(self, reactor: Any) -> None:
        node = node_executable(self)
        server = make_server(rooms_app(), reactor, check_origin=None)
        server.service.startService()
        self.addCleanup(server.service.stopService)
        port = reactor.listenTCP(
            0,
            Site(root_resource(server.websocket_factory, demo=False)),
            interface="127.0.0.1",
        )
        self.addCleanup(port.stopListening)
        groups = Groups(server.coordinator)
        groups.create("team")
        groups.add("team", "room:a")
        groups.add("team", "room:b")

        clients = NodeLines()
        url = f"ws://127.0.0.1:{port.getHost().port}/socket"
        process = reactor.spawnProcess(
            clients,
            node,
            [node, "groups_clients.js", json.dumps({"url": url})],
            env=dict(os.environ),
            path=str(INTEROP_DIR),
        )

        def kill() -> Deferred[None]:
            if process.pid is not None:
                process.signalProcess("KILL")
            return clients.ended

        self.addCleanup(kill)
        ready = await clients.next_line().addTimeout(60, reactor)
        self.assertEqual(ready, {"stage": "ready"})
        self.assertEqual(groups.broadcast("team", "news", {"body": "hello"}), 2)
        server.coordinator.broadcast("room:c", "done", {})
        result = await clients.next_line().addTimeout(60, reactor)
        self.assertNotIn("error", result)
        self.assertEqual(
            result["result"],
            {
                "alice": [
                    {"topic": "room:a", "event": "news", "payload": {"body": "hello"}}
                ],
                "bob": [
                    {"topic": "room:b", "event": "news", "payload": {"body": "hello"}}
                ],
                "carol": [{"topic": "room:c", "event": "done", "payload": {}}],
            },
        )
        await clients.ended
