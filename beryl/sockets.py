"""
What the coordinator keeps for each connected socket and each joined
channel: the socket's connection, serializer and L{Session}, and a
channel's assigns, timers and the application's callbacks.

A L{ChannelRuntime} is what a L{SocketContext} acts through; it asks the
socket's session for effects and hands them to its L{RuntimeHost} (the
coordinator) to perform.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Protocol

import attrs
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from beryl.app import ConnectInfo
from beryl.channel import Channel, SocketContext
from beryl.counters import Counters
from beryl.interfaces import IConnection, IPresence
from beryl.session.effects import Effect, SendClose, SendError, SendPush, SendReply
from beryl.session.state import Session
from beryl.wire import Frame, Payload, PresenceList, PresenceMeta, Serializer

__all__ = ["ChannelRuntime", "InfoTimer", "RuntimeHost", "SocketHandle"]

_log = Logger()
_UNENCODABLE = {"reason": "reply cannot be encoded"}
# Counts what sockets made without a node's counters (in tests) send.
_UNCOUNTED = Counters()


class RuntimeHost(Protocol):
    """
    What a channel's runtime needs from the coordinator.
    """

    clock: IReactorTime
    presence: IPresence

    def perform(self, socket: SocketHandle, effects: tuple[Effect, ...]) -> None:
        """
        Carry out a session's effects for C{socket}.
        """

    def broadcast(self, topic: str, event: str, payload: Payload) -> None:
        """
        Broadcast to every subscriber of C{topic}.
        """

    def broadcast_from(
        self, socket_id: str, topic: str, event: str, payload: Payload
    ) -> None:
        """
        Broadcast to every subscriber of C{topic} but socket C{socket_id}.
        """


@attrs.define(eq=False)
class SocketHandle:
    """
    One connected socket: the handle a transport gets from
    L{ISocketHost.open<beryl.interfaces.ISocketHost.open>} and hands back.
    """

    socket_id: str
    connection: IConnection
    serializer: Serializer
    params: Mapping[str, Any]
    connect_info: ConnectInfo
    assigns: Any
    session: Session
    # the coordinator's side of each live channel, by the session's number
    channels: dict[int, ChannelRuntime] = attrs.field(factory=dict)
    closed: bool = False
    last_seen: float = 0.0
    # When each rate limit's bucket is next empty: the time at which the
    # socket's next message, refused message and join conform (the
    # generic cell rate algorithm, an exact token bucket in one number).
    message_due: float = 0.0
    refused_due: float = 0.0
    join_due: float = 0.0
    idle_call: IDelayedCall | None = None
    # called when writing to the connection raises
    on_failure: Callable[[SocketHandle], None] = lambda socket: None
    # the node's numbers, for metrics
    counters: Counters = _UNCOUNTED
    # sockets with equal keys take the same prepared broadcast frames
    broadcast_key: tuple[Serializer, object] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.broadcast_key = (self.serializer, self.connection.prepare_key)

    def write(self, encode: Callable[[Serializer], Frame]) -> None:
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
        counters = self.counters
        counters.messages_out += 1
        counters.bytes_out += len(frame.data)
        try:
            self.connection.send(frame)
        except Exception:
            self.on_failure(self)

    def reply(
        self, join_ref: Any, ref: Any, topic: str, status: str, response: Payload
    ) -> None:
        """
        Send a C{phx_reply}.  A reply that cannot be encoded (nested too
        deeply, not JSON, binary for a V1 client) is logged, and an error
        reply saying so goes instead: every push is answered.
        """
        if self.closed:
            return
        serializer = self.serializer
        try:
            frame = serializer.encode_reply(join_ref, ref, topic, status, response)
        except (ValueError, TypeError) as error:
            _log.warn(
                "A reply on {topic} for socket {socket_id} cannot be encoded "
                "({error}); sending an error reply instead.",
                socket_id=self.socket_id,
                topic=topic[:100],
                error=str(error)[:200],
            )
            try:
                frame = serializer.encode_reply(
                    join_ref, ref, topic, "error", _UNENCODABLE
                )
            except (ValueError, TypeError):
                return
        counters = self.counters
        counters.messages_out += 1
        counters.bytes_out += len(frame.data)
        try:
            self.connection.send(frame)
        except Exception:
            self.on_failure(self)

    # The session's frame effects

    def send_reply(self, effect: SendReply) -> None:
        """
        Perform L{SendReply}.
        """
        self.reply(
            effect.join_ref, effect.ref, effect.topic, effect.status, effect.response
        )

    def send_push(self, effect: SendPush) -> None:
        """
        Perform L{SendPush}: join_ref set, ref null.
        """
        self.write(
            lambda s: s.encode_push(
                effect.join_ref, effect.topic, effect.event, effect.payload
            )
        )

    def send_close(self, effect: SendClose) -> None:
        """
        Perform L{SendClose}: both refs are the join_ref, as Phoenix sends
        them.
        """
        ref = effect.join_ref
        self.write(lambda s: s.encode(ref, ref, effect.topic, "phx_close", {}))

    def send_error(self, effect: SendError) -> None:
        """
        Perform L{SendError}.
        """
        ref = effect.join_ref
        self.write(
            lambda s: s.encode(
                ref, ref, effect.topic, "phx_error", {"reason": "channel_crash"}
            )
        )


@implementer(IDelayedCall)
class InfoTimer:
    """
    A pending C{send_info_later}: the delayed call, and its place in its
    channel's timers, which it leaves when it fires or is cancelled (so a
    channel that sets and cancels many timers holds only the live ones).
    """

    def __init__(self, runtime: ChannelRuntime, delay: float, message: object) -> None:
        self._runtime = runtime
        self._message = message
        self._call = runtime.host.clock.callLater(delay, self.fire)

    def fire(self) -> None:
        """
        The delay is over: hand the message to the channel's session.
        """
        runtime = self._runtime
        if runtime.timers:
            runtime.timers.discard(self)
        socket = runtime.socket
        runtime.host.perform(
            socket, socket.session.info_due(runtime.channel_id, self._message)
        )

    def getTime(self) -> float:
        return self._call.getTime()

    def cancel(self) -> None:
        self._call.cancel()
        timers = self._runtime.timers
        if timers:
            timers.discard(self)

    def delay(self, secondsLater: float) -> None:
        self._call.delay(secondsLater)

    def reset(self, secondsFromNow: float) -> None:
        self._call.reset(secondsFromNow)

    def active(self) -> bool:
        return self._call.active()


@attrs.define(eq=False)
class ChannelRuntime:
    """
    The coordinator's side of one channel instance: its definition,
    assigns and timers.  Provides what a L{SocketContext} offers to
    callbacks (L{beryl.channel.ChannelRuntime}).
    """

    host: RuntimeHost
    socket: SocketHandle
    channel_id: int
    topic: str
    join_ref: Any
    channel: Channel[Any]
    assigns: Any = None
    ended: bool = False
    # live send_info_later timers; made on the first (most channels set none)
    timers: set[InfoTimer] | None = None
    # the presence owner that stands for this channel instance
    owner: str = ""
    # the route pattern that matched the topic (a metric label)
    route: str = ""
    # whether its join succeeded
    joined: bool = False

    def context(self, ref: Any = None) -> SocketContext[Any]:
        """
        A context for one callback.
        """
        socket = self.socket
        return SocketContext(
            socket_id=socket.socket_id,
            topic=self.topic,
            join_ref=self.join_ref,
            assigns=self.assigns,
            params=socket.params,
            socket_assigns=socket.assigns,
            runtime=self,
            ref=ref,
        )

    def end(self) -> None:
        """
        The channel is over: cancel its timers.
        """
        self.ended = True
        timers, self.timers = self.timers, None
        for timer in timers or ():
            if timer.active():
                timer.cancel()

    # beryl.channel.ChannelRuntime

    def push(self, event: str, payload: Payload) -> None:
        socket = self.socket
        effects = socket.session.push(self.channel_id, event, payload)
        if effects:
            self.host.perform(socket, effects)

    def broadcast(self, event: str, payload: Payload) -> None:
        self.host.broadcast(self.topic, event, payload)

    def broadcast_from(self, event: str, payload: Payload) -> None:
        self.host.broadcast_from(self.socket.socket_id, self.topic, event, payload)

    def send_info(self, message: object) -> None:
        self.send_info_later(0, message)

    def send_info_later(self, delay: float, message: object) -> IDelayedCall:
        timer = InfoTimer(self, delay, message)
        if self.ended:
            timer.cancel()
        elif self.timers is None:
            self.timers = {timer}
        else:
            self.timers.add(timer)
        return timer

    def reply(self, ref: Any, status: str, payload: Payload) -> None:
        socket = self.socket
        effects = socket.session.reply(self.channel_id, ref, status, payload)
        if effects:
            self.host.perform(socket, effects)

    def track(self, key: str, meta: PresenceMeta) -> str:
        track = self.socket.session.track(self.channel_id, key, meta)
        return self.host.presence.track(track.topic, track.key, self.owner, track.meta)

    def update_presence(self, key: str, meta: PresenceMeta) -> str:
        update = self.socket.session.update_presence(self.channel_id, key, meta)
        return self.host.presence.update(
            update.topic, update.key, self.owner, update.meta
        )

    def presence_list(self) -> PresenceList:
        return self.host.presence.list(self.topic)
