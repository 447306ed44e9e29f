"""
The HTTP resource tree: the demo page (or nothing) at C{/}, the socket
endpoint under C{/socket}.  Embedders mount L{socket_resource} under their
own C{twisted.web} site instead.
"""

from __future__ import annotations

import re
from importlib.resources import files
from typing import Any, Mapping

from autobahn.twisted.resource import WebSocketResource
from twisted.web.http import combinedLogFormatter
from twisted.web.resource import Resource
from twisted.web.static import Data

from beryl.health import Readiness, health_resource, ready_resource
from beryl.metrics import NodeMetrics, metrics_resource
from beryl.transport.longpoll import LongPollResource, LongPollTransport
from beryl.transport.websocket import PhoenixWebSocketFactory

__all__ = [
    "access_log_formatter",
    "demo_page",
    "metrics_root",
    "root_resource",
    "socket_resource",
]

_TOKEN_PARAMETER = re.compile(rb"([?&]token=)[^&]*")


class _RedactedRequest:
    """
    A request as the access log sees it: the value of every C{token}
    query parameter (long-poll session tokens, applications' tokens)
    replaced.
    """

    def __init__(self, request: Any) -> None:
        self._request = request
        self.uri = _TOKEN_PARAMETER.sub(rb"\1[redacted]", request.uri)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._request, name)


def access_log_formatter(timestamp: str, request: Any) -> str:
    """
    Twisted's combined access log line, without the values of C{token}
    query parameters: they are credentials (a long-poll session token lets
    its holder read the session's messages).
    """
    line: str = combinedLogFormatter(timestamp, _RedactedRequest(request))
    return line


def socket_resource(
    factory: PhoenixWebSocketFactory, longpoll: LongPollTransport | None = None
) -> Resource:
    """
    The C{/socket} prefix: its C{websocket} child upgrades to the Phoenix
    WebSocket transport; its C{longpoll} child, when C{longpoll} is given,
    serves the long-poll transport.
    """
    socket = Resource()
    socket.putChild(b"websocket", WebSocketResource(factory))
    if longpoll is not None:
        socket.putChild(b"longpoll", LongPollResource(longpoll))
    return socket


def demo_page() -> Resource:
    """
    The demo chat page, with its favicon at C{/favicon.ico}.
    """
    static = files("beryl.demo").joinpath("static")
    page = Data(static.joinpath("index.html").read_bytes(), "text/html; charset=utf-8")
    icon = Data(static.joinpath("favicon.svg").read_bytes(), "image/svg+xml")
    page.putChild(b"favicon.ico", icon)
    return page


def root_resource(
    factory: PhoenixWebSocketFactory,
    demo: bool,
    children: Mapping[bytes, Resource] | None = None,
    longpoll: LongPollTransport | None = None,
    readiness: Readiness | None = None,
    metrics: NodeMetrics | None = None,
) -> Resource:
    """
    The site root: C{/socket/websocket} (and C{/socket/longpoll} when
    C{longpoll} is given), the demo page at C{/} when C{demo} is true,
    C{/health} and C{/ready} given a C{readiness}, C{/metrics} given
    C{metrics}, and C{children} (such as Levee's HTTP routes) by name.
    """
    root = demo_page() if demo else Resource()
    root.putChild(b"socket", socket_resource(factory, longpoll))
    if readiness is not None:
        root.putChild(b"health", health_resource())
        root.putChild(b"ready", ready_resource(readiness))
    if metrics is not None:
        root.putChild(b"metrics", metrics_resource(metrics))
    for name, child in (children or {}).items():
        root.putChild(name, child)
    if demo:
        root.putChild(b"", root)
    return root


def metrics_root(metrics: NodeMetrics) -> Resource:
    """
    The root of a site of its own for metrics (C{--metrics-port}):
    C{/metrics}.
    """
    root = Resource()
    root.putChild(b"metrics", metrics_resource(metrics))
    return root
