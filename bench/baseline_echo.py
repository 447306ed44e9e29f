"""
The baseline for bench/ping.py: a minimal Autobahn server that answers
every text message with the same bytes (the least a Phoenix ping reply
could cost on Autobahn).

    python bench/baseline_echo.py PORT
"""

# Autobahn's sendMessage has no annotations.
# mypy: allow-untyped-calls
from __future__ import annotations

import sys

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet import reactor


class EchoProtocol(WebSocketServerProtocol):
    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.sendMessage(payload, isBinary)


def main() -> None:
    factory = WebSocketServerFactory()
    factory.protocol = EchoProtocol
    reactor.listenTCP(int(sys.argv[1]), factory, interface="127.0.0.1", backlog=4096)
    reactor.run()


if __name__ == "__main__":
    main()
