"""
The baseline for bench/abuse.py: a minimal Autobahn server that answers
every text message with the same bytes, except that a message naming
C{phx_join} subscribes its client (and is echoed) and one naming C{new_msg}
is broadcast, framed once, to every subscriber.

    python bench/baseline_abuse.py PORT
"""

from __future__ import annotations

import sys
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet import reactor


class AbuseBaselineProtocol(WebSocketServerProtocol):
    factory: AbuseBaselineFactory

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if b'"new_msg"' in payload:
            prepared = self.factory.prepareMessage(payload, isBinary)
            for client in self.factory.subscribers:
                client.sendPreparedMessage(prepared)
            return
        if b'"phx_join"' in payload and b'"feed:flood"' in payload:
            self.factory.subscribers.append(self)
        self.sendMessage(payload, isBinary)  # type: ignore[no-untyped-call]

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        if self in self.factory.subscribers:
            self.factory.subscribers.remove(self)


class AbuseBaselineFactory(WebSocketServerFactory):
    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.protocol = AbuseBaselineProtocol
        self.subscribers: list[AbuseBaselineProtocol] = []


def main() -> None:
    factory = AbuseBaselineFactory()
    reactor.listenTCP(int(sys.argv[1]), factory, interface="127.0.0.1", backlog=4096)
    reactor.run()


if __name__ == "__main__":
    main()
