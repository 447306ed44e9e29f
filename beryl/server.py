"""
Assemble Beryl's services for one node, for C{twistd beryl} and for
applications that embed Beryl in their own Twisted process.

    server = make_server(app, reactor)
    server.service.setServiceParent(my_multi_service)
    my_site_root.putChild(b"socket", server.socket_resource())
"""

from __future__ import annotations

from typing import Any, Callable

import attrs
from twisted.application.service import MultiService
from twisted.web.resource import Resource

from beryl.app import App
from beryl.coordinator import Coordinator
from beryl.transport.websocket import PhoenixWebSocketFactory
from beryl.web import socket_resource

__all__ = ["Server", "make_server"]


@attrs.frozen
class Server:
    """
    Beryl's services for one node, without a listener.

    @ivar service: start and stop this (or add it to your own
        C{MultiService}); its children are the node's services in
        dependency order.
    @ivar coordinator: the channel system, for broadcasts from
        application code.
    @ivar websocket_factory: the Autobahn factory behind the WebSocket
        endpoint.
    """

    service: MultiService
    coordinator: Coordinator
    websocket_factory: PhoenixWebSocketFactory

    def socket_resource(self) -> Resource:
        """
        A C{twisted.web} resource to mount at your socket prefix (for
        example C{b"socket"}): its C{websocket} child is the Phoenix
        WebSocket endpoint.
        """
        return socket_resource(self.websocket_factory)


def make_server(
    app: App,
    reactor: Any,
    *,
    max_channels: int = 100,
    idle_timeout: float = 60.0,
    check_origin: str | list[str] | Callable[[str], bool] | None = "host",
    max_frame_size: int = 8 * 1024 * 1024,
) -> Server:
    """
    Build the services that serve C{app}.

    @param reactor: the reactor (or, in tests, a fake) used for time.
    @param check_origin: see L{PhoenixWebSocketFactory}.
    """
    service = MultiService()
    coordinator = Coordinator(
        app, clock=reactor, max_channels=max_channels, idle_timeout=idle_timeout
    )
    coordinator.name = "coordinator"
    service.addService(coordinator)
    factory = PhoenixWebSocketFactory(
        coordinator, check_origin=check_origin, max_frame_size=max_frame_size
    )
    return Server(service, coordinator, factory)
