"""
Embedding: Beryl's services and resource mounted inside a host Twisted
application (docs/examples/embed.py), exercised over real sockets.
"""

from __future__ import annotations

from typing import Any

import orjson
from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
    connectWS,
)
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, readBody

from docs.examples import embed as embed_example
from tests.interop.harness import free_port


class TickerClient(WebSocketClientProtocol):
    """
    Joins the ticker and fires C{factory.done} with the join reply and
    the first tick.
    """

    def onOpen(self) -> None:
        self.seen: list[Any] = []
        self.sendMessage(orjson.dumps(["1", "1", "ticker", "phx_join", {}]))

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.seen.append(orjson.loads(payload))
        if len(self.seen) == 2:
            self.factory.done.callback(self.seen)
            self.sendClose(1000)


class TickerFactory(WebSocketClientFactory):
    """
    Builds L{TickerClient}s; C{done} fires with what the client saw.
    """

    protocol = TickerClient

    def __init__(self, url: str) -> None:
        WebSocketClientFactory.__init__(self, url)
        self.done: Deferred[list[Any]] = Deferred()


class EmbeddingTests(TestCase):
    def test_embedded_in_host_application(self) -> Deferred[Any]:
        """The host's own page and Beryl's channels are served from one site and one MultiService."""
        port = free_port()
        application = embed_example.build(reactor, f"tcp:{port}:interface=127.0.0.1")
        application.startService()
        self.addCleanup(application.stopService)

        factory = TickerFactory(f"ws://127.0.0.1:{port}/socket/websocket?vsn=2.0.0")
        connectWS(factory)

        def check(seen: list[Any]) -> Deferred[bytes]:
            reply, tick = seen
            self.assertEqual(
                reply,
                ["1", "1", "ticker", "phx_reply", {"status": "ok", "response": {}}],
            )
            self.assertEqual(tick[:4], [None, None, "ticker", "tick"])
            self.assertIsInstance(tick[4]["n"], int)
            agent = Agent(reactor)
            return agent.request(
                b"GET", f"http://127.0.0.1:{port}/status".encode()
            ).addCallback(readBody)

        factory.done.addCallback(check)
        factory.done.addCallback(self.assertEqual, b"ok")
        return factory.done
