"""
TRANSITIONAL (longpoll branch): L{ISocketHost} over today's coordinator.

The core work makes L{beryl.coordinator.Coordinator} provide
L{ISocketHost} itself; L{socket_host} then returns the coordinator as it
is, and this module can go (replace C{socket_host(coordinator)} with
C{coordinator}).
"""

from __future__ import annotations

from typing import Any, Mapping, cast

from twisted.internet.defer import Deferred
from zope.interface import implementer

from beryl.app import ConnectInfo, ConnectResult
from beryl.coordinator import Coordinator, SocketHandle
from beryl.interfaces import IConnection, ISocketHost
from beryl.wire import Serializer

__all__ = ["CoordinatorSocketHost", "socket_host"]


@implementer(ISocketHost)
class CoordinatorSocketHost:
    """
    L{ISocketHost} by delegation to a coordinator's C{connect},
    C{open_socket}, C{receive_data}, C{touch} and C{socket_closed}.
    """

    def __init__(self, coordinator: Coordinator) -> None:
        self.coordinator = coordinator

    def connect(
        self, params: Mapping[str, Any], info: ConnectInfo
    ) -> Deferred[ConnectResult]:
        return self.coordinator.connect(params, info)

    def open(
        self,
        connection: IConnection,
        serializer: Serializer,
        params: Mapping[str, Any],
        info: ConnectInfo,
        assigns: Any,
    ) -> object:
        return self.coordinator.open_socket(
            connection, serializer, params, info, assigns
        )

    def receive_data(self, socket: object, data: bytes | str, is_binary: bool) -> None:
        assert isinstance(socket, SocketHandle)
        self.coordinator.receive_data(socket, data, is_binary)

    def touch(self, socket: object) -> None:
        assert isinstance(socket, SocketHandle)
        self.coordinator.touch(socket)

    def closed(self, socket: object) -> None:
        assert isinstance(socket, SocketHandle)
        self.coordinator.socket_closed(socket)


def socket_host(coordinator: Coordinator) -> ISocketHost:
    """
    The coordinator as an L{ISocketHost}: itself once it provides the
    interface, else wrapped in L{CoordinatorSocketHost}.
    """
    if ISocketHost.providedBy(coordinator):
        return cast(ISocketHost, coordinator)
    return CoordinatorSocketHost(coordinator)
