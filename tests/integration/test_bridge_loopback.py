"""
Tests for L{beryl.embed}: the bridge that puts Beryl's channels behind
connections a host application owns, with fake host connections and, end
to end, with the line-over-TCP host of C{docs/examples/bridge.py}.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import connectionDone
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from docs.examples import bridge as bridge_example


class LineClient(LineReceiver):
    """A test client of the example's line protocol: each line is one frame."""

    delimiter = b"\n"

    def __init__(self) -> None:
        self.lines: list[Any] = []
        self.waiting: list[tuple[int, Deferred[list[Any]]]] = []

    def lineReceived(self, line: bytes) -> None:
        if line.startswith(b"="):
            self.lines.append(base64.b64decode(line[1:]))
        else:
            self.lines.append(json.loads(line))
        self._check()

    def _check(self) -> None:
        for entry in list(self.waiting):
            count, waiter = entry
            if len(self.lines) >= count:
                self.waiting.remove(entry)
                taken, self.lines = self.lines[:count], self.lines[count:]
                waiter.callback(taken)

    def frames(self, count: int) -> Deferred[list[Any]]:
        """The next C{count} frames received."""
        waiter: Deferred[list[Any]] = Deferred()
        self.waiting.append((count, waiter))
        self._check()
        return waiter

    def send(self, frame: Any) -> None:
        """Send one JSON frame as a line."""
        assert self.transport is not None
        self.transport.write(json.dumps(frame).encode() + b"\n")

    def send_binary(self, data: bytes) -> None:
        """Send one binary frame as a base64 line."""
        assert self.transport is not None
        self.transport.write(b"=" + base64.b64encode(data) + b"\n")

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        for _, waiter in self.waiting:
            waiter.errback(reason)
        self.waiting.clear()


class LoopbackTests(TestCase):
    """The example host, a LineReceiver over real loopback TCP, in front of the bridge."""

    def test_join_reply_broadcast(self) -> Deferred[None]:
        """Two TCP clients join a room through the host; replies and broadcasts arrive as lines."""
        from twisted.internet import reactor

        return ensureDeferred(self._exchange(reactor))

    async def _exchange(self, reactor: Any) -> None:
        example = bridge_example
        bridge, listening = example.serve(reactor, "tcp:0:interface=127.0.0.1")
        self.addCleanup(bridge.stop)
        port = await listening
        self.addCleanup(port.stopListening)
        address = port.getHost()
        assert isinstance(address, IPv4Address)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", address.port)
        alice: LineClient = await connectProtocol(endpoint, LineClient())
        bob: LineClient = await connectProtocol(endpoint, LineClient())
        for client in (alice, bob):
            assert client.transport is not None
            self.addCleanup(client.transport.loseConnection)

        for client in (alice, bob):
            client.send(["1", "1", "room:lobby", "phx_join", {}])
            [reply] = await client.frames(1)
            self.assertEqual(
                reply,
                ["1", "1", "room:lobby", "phx_reply", {"status": "ok", "response": {}}],
            )
        alice.send(["1", "2", "room:lobby", "shout", {"body": "hi"}])
        self.assertEqual(
            await alice.frames(2),
            [
                [None, None, "room:lobby", "shout", {"body": "hi"}],
                ["1", "2", "room:lobby", "phx_reply", {"status": "ok", "response": {}}],
            ],
        )
        self.assertEqual(
            await bob.frames(1), [[None, None, "room:lobby", "shout", {"body": "hi"}]]
        )
        bridge.get_coordinator().broadcast("room:lobby", "news", {"n": 1})
        for client in (alice, bob):
            self.assertEqual(
                await client.frames(1), [[None, None, "room:lobby", "news", {"n": 1}]]
            )
        alice.send_binary(bytes([0, 1, 1, 10, 4]) + b"13room:lobbyping" + b"\x01\x02")
        self.assertEqual(
            await alice.frames(1), [bytes([1, 1, 1, 10, 2]) + b"13room:lobbyok\x01\x02"]
        )
        self.assertEqual(bridge.get_coordinator().socket_count(), 2)
