"""
The HTTP resource tree: the demo page (or nothing) at C{/}, the socket
endpoint under C{/socket}.  Embedders mount L{socket_resource} under their
own C{twisted.web} site instead.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Mapping

from autobahn.twisted.resource import WebSocketResource
from twisted.web.resource import Resource
from twisted.web.static import Data

from beryl.transport.websocket import PhoenixWebSocketFactory

__all__ = ["demo_page", "root_resource", "socket_resource"]


def socket_resource(factory: PhoenixWebSocketFactory) -> Resource:
    """
    The C{/socket} prefix: its C{websocket} child upgrades to the Phoenix
    WebSocket transport.
    """
    socket = Resource()
    socket.putChild(b"websocket", WebSocketResource(factory))
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
) -> Resource:
    """
    The site root: C{/socket/websocket}, the demo page at C{/} when C{demo}
    is true, and C{children} (such as Levee's HTTP routes) by name.
    """
    root = demo_page() if demo else Resource()
    root.putChild(b"socket", socket_resource(factory))
    for name, child in (children or {}).items():
        root.putChild(name, child)
    if demo:
        root.putChild(b"", root)
    return root
