"""
Embedding Beryl in an existing Twisted application.

The application owns its process, its MultiService and its twisted.web
site; Beryl contributes its services (added under the application's
MultiService) and a resource mounted at /socket in the application's own
resource tree.  Run it with

    python docs/examples/embed.py 8080

then connect a Phoenix client to ws://localhost:8080/socket, or fetch
http://localhost:8080/status.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.application import strports
from twisted.application.internet import TimerService
from twisted.application.service import MultiService
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import Data

from beryl import App, Channel, JoinContext, JoinOk, JoinResult, Payload
from beryl.server import make_server


def join_ticker(topic: str, payload: Payload, ctx: JoinContext) -> JoinResult[None]:
    """
    Anyone may watch the ticker.
    """
    return JoinOk(None)


def build(reactor: Any, listen: str) -> MultiService:
    """
    The host application: its own status page, its own periodic job, and
    Beryl's channels, all under one MultiService.
    """
    application = MultiService()

    beryl = make_server(App().channel("ticker", Channel.create(join_ticker)), reactor)
    beryl.service.setServiceParent(application)

    ticks = {"n": 0}

    def tick() -> None:
        ticks["n"] += 1
        beryl.coordinator.broadcast("ticker", "tick", {"n": ticks["n"]})

    job = TimerService(1.0, tick)
    job.clock = reactor
    job.setServiceParent(application)

    root = Resource()
    root.putChild(b"status", Data(b"ok", "text/plain"))
    root.putChild(b"socket", beryl.socket_resource())
    strports.service(listen, Site(root), reactor=reactor).setServiceParent(application)
    return application


def main(argv: list[str]) -> None:
    from twisted.internet import reactor

    port = argv[1] if len(argv) > 1 else "8080"
    application = build(reactor, f"tcp:{port}")
    application.startService()
    reactor.addSystemEventTrigger("before", "shutdown", application.stopService)
    reactor.run()


if __name__ == "__main__":
    main(sys.argv)
