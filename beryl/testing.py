"""
Test doubles for code that uses Beryl: a connection that records what the
coordinator writes, and a helper that drives a coordinator the way a
transport does.
"""

from __future__ import annotations

from typing import Any

import attrs
import orjson
from zope.interface import implementer

from beryl.app import ConnectInfo
from beryl.coordinator import Coordinator, SocketHandle
from beryl.interfaces import IConnection
from beryl.wire import V2_JSON, Frame, Message, Serializer

__all__ = ["FakeConnection", "FakeClient"]


@implementer(IConnection)
@attrs.define
class FakeConnection:
    """
    An L{IConnection} that keeps every frame written to it and the close
    code it was closed with.
    """

    frames: list[Frame] = attrs.field(factory=list)
    closed: tuple[int, str] | None = None
    prepare_key: object = "fake"

    def send(self, frame: Frame) -> None:
        self.frames.append(frame)

    def prepare(self, frame: Frame) -> object:
        return frame

    def send_prepared(self, prepared: object) -> None:
        assert isinstance(prepared, Frame)
        self.frames.append(prepared)

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


@attrs.define
class FakeClient:
    """
    One socket of a coordinator, driven as a transport would drive it,
    with what it receives decoded for assertions.
    """

    coordinator: Coordinator
    serializer: Serializer = V2_JSON
    params: dict[str, Any] = attrs.field(factory=dict)
    connection: FakeConnection = attrs.field(factory=FakeConnection)
    socket: SocketHandle = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.socket = self.coordinator.open(
            self.connection, self.serializer, self.params, ConnectInfo()
        )

    def send(
        self, join_ref: Any, ref: Any, topic: str, event: str, payload: Any
    ) -> None:
        """
        Deliver one inbound message to the coordinator.
        """
        self.coordinator.receive(
            self.socket, Message(join_ref, ref, topic, event, payload)
        )

    def received(self) -> list[Any]:
        """
        Every text frame received so far, decoded from JSON; binary frames
        as their raw bytes.
        """
        return [
            frame.data if frame.is_binary else orjson.loads(frame.data)
            for frame in self.connection.frames
        ]

    def take(self) -> list[Any]:
        """
        L{received}, then forget those frames.
        """
        result = self.received()
        self.connection.frames.clear()
        return result

    def disconnect(self) -> None:
        """
        The connection drops without a close handshake.
        """
        self.coordinator.closed(self.socket)
