"""
The baseline for bench/fanout.py: a minimal Autobahn broadcast server.
Every text message a client sends is broadcast to every connected client
as one prepared message (framed once), which is the stock Autobahn way.

    python bench/baseline_autobahn.py PORT
"""

# Autobahn's factory constructor has no annotations.
# mypy: allow-untyped-calls
from __future__ import annotations

import sys
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet import reactor


class BroadcastFactory(WebSocketServerFactory):
    """
    Keeps the open connections.
    """

    clients: list[BroadcastProtocol]


class BroadcastProtocol(WebSocketServerProtocol):
    factory: BroadcastFactory

    def onOpen(self) -> None:
        self.factory.clients.append(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        prepared = self.factory.prepareMessage(payload, isBinary)
        for client in self.factory.clients:
            client.sendPreparedMessage(prepared)

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        if self in self.factory.clients:
            self.factory.clients.remove(self)


def main() -> None:
    factory = BroadcastFactory()
    factory.protocol = BroadcastProtocol
    factory.clients = []
    reactor.listenTCP(int(sys.argv[1]), factory, interface="127.0.0.1", backlog=4096)
    reactor.run()


if __name__ == "__main__":
    main()
