"""
The state of connected sockets and their joined channels, and the
operations a channel's callbacks reach through their context.  The
L{beryl.coordinator.Coordinator} drives them.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Mapping

import attrs
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from beryl.app import ConnectInfo
from beryl.channel import Channel, SocketContext
from beryl.interfaces import IConnection
from beryl.wire import Frame, Message, Payload, PresenceList, PresenceMeta, Serializer

if TYPE_CHECKING:
    from beryl.coordinator import Coordinator

__all__ = ["ChannelEnded", "ChannelState", "PendingInfo", "SocketHandle"]

_log = Logger()


class ChannelEnded(RuntimeError):
    """
    A callback that finished after its channel ended tried to act on it
    (track a presence, say).
    """


@attrs.frozen
class PendingInfo:
    """
    A C{handle_info} delivery waiting for its socket's pending callback.
    """

    state: ChannelState
    message: object


@attrs.define(eq=False)
class SocketHandle:
    """
    One connected socket: what a transport holds to talk to the
    coordinator.
    """

    socket_id: str
    connection: IConnection
    serializer: Serializer
    params: Mapping[str, Any]
    connect_info: ConnectInfo
    assigns: Any
    channels: dict[str, ChannelState] = attrs.field(factory=dict)
    # messages and infos that arrived while a callback was pending
    # (created when needed)
    queue: deque[Message | PendingInfo] | None = None
    busy: bool = False
    closed: bool = False
    last_seen: float = 0.0
    idle_call: IDelayedCall | None = None
    # called when writing to the connection raises
    on_failure: Callable[[SocketHandle], None] = lambda socket: None
    # sockets with equal keys take the same prepared broadcast frames
    broadcast_key: tuple[Serializer, object] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.broadcast_key = (self.serializer, self.connection.prepare_key)

    def send(self, encode: Callable[[Serializer], Frame]) -> None:
        """
        Encode a frame with this socket's serializer and write it.  A
        message that cannot be encoded (binary for a V1 client) is logged
        and dropped; a connection that fails is reported to C{on_failure}.
        """
        if self.closed:
            return
        try:
            frame = encode(self.serializer)
        except (ValueError, TypeError) as error:
            _log.warn(
                "A message for socket {socket_id} cannot be encoded ({error}); "
                "not sent.",
                socket_id=self.socket_id,
                error=error,
            )
            return
        try:
            self.connection.send(frame)
        except Exception:
            self.on_failure(self)

    def reply(
        self, join_ref: Any, ref: Any, topic: str, status: str, response: Payload
    ) -> None:
        """
        Send a C{phx_reply}.
        """
        self.send(lambda s: s.encode_reply(join_ref, ref, topic, status, response))


@attrs.define(eq=False)
class ChannelState:
    """
    A joined channel: its definition, assigns and timers.  Provides the
    operations a L{SocketContext} offers to callbacks.
    """

    coordinator: Coordinator
    socket: SocketHandle
    topic: str
    join_ref: Any
    channel: Channel[Any]
    assigns: Any = None
    joined: bool = False
    ended: bool = False
    # pushes and infos made during the join wait for its reply
    pending_frames: list[tuple[str, Payload]] = attrs.field(factory=list)
    pending_infos: list[object] = attrs.field(factory=list)
    timers: set[IDelayedCall] | None = None
    tracked: bool = False
    # the presence owner that stands for this channel instance
    owner: str = ""

    def context(self, ref: Any = None) -> SocketContext[Any]:
        """
        A context for one callback.
        """
        return SocketContext(
            socket_id=self.socket.socket_id,
            topic=self.topic,
            join_ref=self.join_ref,
            assigns=self.assigns,
            params=self.socket.params,
            socket_assigns=self.socket.assigns,
            runtime=self,
            ref=ref,
        )

    # ChannelRuntime

    def push(self, event: str, payload: Payload) -> None:
        if self.ended:
            return
        if not self.joined:
            self.pending_frames.append((event, payload))
            return
        self.socket.send(
            lambda s: s.encode_push(self.join_ref, self.topic, event, payload)
        )

    def broadcast(self, event: str, payload: Payload) -> None:
        self.coordinator.broadcast(self.topic, event, payload)

    def broadcast_from(self, event: str, payload: Payload) -> None:
        self.coordinator.broadcast_from(
            self.socket.socket_id, self.topic, event, payload
        )

    def send_info(self, message: object) -> None:
        if self.ended:
            return
        if not self.joined:
            self.pending_infos.append(message)
            return
        self.send_info_later(0, message)

    def send_info_later(self, delay: float, message: object) -> IDelayedCall:
        def fire() -> None:
            if self.timers is not None:
                self.timers.discard(call)
            if not self.joined:
                self.pending_infos.append(message)
                return
            self.coordinator.deliver_info(self, message)

        call = self.coordinator.clock.callLater(delay, fire)
        if self.ended:
            call.cancel()
        else:
            if self.timers is None:
                self.timers = set()
            self.timers.add(call)
        return call

    def reply(self, ref: Any, status: str, payload: Payload) -> None:
        if self.ended:
            return
        self.socket.reply(self.join_ref, ref, self.topic, status, payload)

    def track(self, key: str, meta: PresenceMeta) -> str:
        self._check_alive("track")
        self.tracked = True
        return self.coordinator.presence.track(self.topic, key, self.owner, meta)

    def update_presence(self, key: str, meta: PresenceMeta) -> str:
        self._check_alive("update_presence")
        self.tracked = True
        return self.coordinator.presence.update(self.topic, key, self.owner, meta)

    def _check_alive(self, what: str) -> None:
        if self.ended:
            raise ChannelEnded(f"{what} on {self.topic} after the channel ended")

    def presence_list(self) -> PresenceList:
        return self.coordinator.presence.list(self.topic)

    # Frames that end the channel on the client

    def close_frame(self) -> None:
        """
        Send C{phx_close}: the channel ended gracefully (the client does not
        rejoin).  Both refs are the join ref, as Phoenix sends them.
        """
        ref = self.join_ref
        self.socket.send(lambda s: s.encode(ref, ref, self.topic, "phx_close", {}))

    def error_frame(self) -> None:
        """
        Send C{phx_error}: the channel crashed (the client rejoins).
        """
        ref = self.join_ref
        self.socket.send(
            lambda s: s.encode(
                ref, ref, self.topic, "phx_error", {"reason": "channel_crash"}
            )
        )
