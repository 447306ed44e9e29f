"""
The channel API: what application code writes.

A channel is built from a C{join} callback with L{Channel.create} and grows
handlers with C{with_handle_in}, C{with_handle_info} and C{with_terminate}.
The type parameter is the channel's I{assigns}, the per-channel state that
C{join} creates and every handler receives and returns, so mypy rejects a
handler written for other assigns::

    @attrs.frozen
    class Room:
        user: str

    def join(topic: str, payload: Payload, ctx: JoinContext) -> JoinResult[Room]:
        return JoinOk(Room(user=payload["user"]))

    def handle_in(
        event: str, payload: Payload, ctx: SocketContext[Room]
    ) -> HandleResult[Room]:
        return Reply("ok", {}, ctx.assigns)

    room = Channel.create(join).with_handle_in(handle_in)
"""

from __future__ import annotations

from typing import (
    Any,
    Awaitable,
    Callable,
    Generic,
    Mapping,
    Protocol,
    TypeVar,
    Union,
)

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall

from beryl.wire import Payload, PresenceList, PresenceMeta

__all__ = [
    "Channel",
    "HandleResult",
    "InfoResult",
    "JoinContext",
    "JoinError",
    "JoinOk",
    "JoinResult",
    "NoReply",
    "Push",
    "Reply",
    "SocketContext",
    "Stop",
]

A = TypeVar("A")
B = TypeVar("B")


@attrs.frozen
class JoinOk(Generic[A]):
    """
    Accept a join: the channel starts with C{assigns}; C{reply} is the join
    reply's response (an empty object when C{None}).
    """

    assigns: A
    reply: Payload = None


@attrs.frozen
class JoinError:
    """
    Refuse a join; C{payload} is the error reply's response.
    """

    payload: Payload = attrs.field(factory=dict)


@attrs.frozen
class NoReply(Generic[A]):
    """
    Handled; nothing to send back.  The channel goes on with C{assigns}.
    """

    assigns: A


@attrs.frozen
class Reply(Generic[A]):
    """
    Answer the client's push with C{status} (C{"ok"}, C{"error"}, ...) and
    C{payload}.
    """

    status: str
    payload: Payload
    assigns: A


@attrs.frozen
class Push(Generic[A]):
    """
    Push C{event} to this channel's client (not a reply).
    """

    event: str
    payload: Payload
    assigns: A


@attrs.frozen
class Stop:
    """
    End the channel.  C{"normal"} and C{"shutdown"} (or C{"shutdown:..."})
    close it gracefully (the client gets C{phx_close} and does not rejoin);
    any other reason is an error (C{phx_error}, the client rejoins).  A
    C{reply} is sent first when the stop answers a client push.
    """

    reason: str = "normal"
    reply: tuple[str, Payload] | None = None

    @property
    def graceful(self) -> bool:
        """
        Whether this stop closes the channel rather than failing it.
        """
        return self.reason in ("normal", "shutdown") or self.reason.startswith(
            "shutdown:"
        )


JoinResult = Union[JoinOk[A], JoinError]
"""What C{join} returns (possibly through a Deferred or a coroutine)."""

HandleResult = Union[NoReply[A], Reply[A], Push[A], Stop]
"""What C{handle_in} returns (possibly through a Deferred or a coroutine)."""

InfoResult = Union[NoReply[A], Push[A], Stop]
"""What C{handle_info} returns."""

Maybe = Union[A, Deferred[A], Awaitable[A]]


class ChannelRuntime(Protocol):
    """
    What a context asks of the coordinator; implemented by the coordinator's
    per-channel state.
    """

    def push(self, event: str, payload: Payload) -> None: ...

    def broadcast(self, event: str, payload: Payload) -> None: ...

    def broadcast_from(self, event: str, payload: Payload) -> None: ...

    def send_info(self, message: object) -> None: ...

    def send_info_later(self, delay: float, message: object) -> IDelayedCall: ...

    def reply(self, ref: Any, status: str, payload: Payload) -> None: ...

    def track(self, key: str, meta: PresenceMeta) -> str: ...

    def update_presence(self, key: str, meta: PresenceMeta) -> str: ...

    def presence_list(self) -> PresenceList: ...


@attrs.define(eq=False)
class SocketContext(Generic[A]):
    """
    A channel's view of its socket, passed to every callback.

    @ivar socket_id: the socket's id, unique in the cluster.
    @ivar topic: the joined topic.
    @ivar join_ref: the join's reference, as the client sent it.
    @ivar assigns: the channel's current assigns.
    @ivar params: the socket's connect parameters (query string).
    @ivar socket_assigns: what the socket's connect hook assigned.
    @ivar ref: the C{ref} of the client push being handled, if any; keep it
        to answer later with L{SocketContext.reply}.
    """

    socket_id: str
    topic: str
    join_ref: Any
    assigns: A
    params: Mapping[str, Any]
    socket_assigns: Any
    _runtime: ChannelRuntime
    ref: Any = None

    def push(self, event: str, payload: Payload) -> None:
        """
        Send C{event} to this channel's client.
        """
        self._runtime.push(event, payload)

    def broadcast(self, event: str, payload: Payload) -> None:
        """
        Send C{event} to every subscriber of this topic on every node.
        """
        self._runtime.broadcast(event, payload)

    def broadcast_from(self, event: str, payload: Payload) -> None:
        """
        Send C{event} to every subscriber of this topic but this channel.
        """
        self._runtime.broadcast_from(event, payload)

    def send_info(self, message: object) -> None:
        """
        Deliver C{message} to this channel's C{handle_info}, soon (after the
        current callback returns, and after the join reply during a join).
        """
        self._runtime.send_info(message)

    def send_info_later(self, delay: float, message: object) -> IDelayedCall:
        """
        Deliver C{message} to C{handle_info} after C{delay} seconds, unless
        the channel ends first or the returned call is cancelled.
        """
        return self._runtime.send_info_later(delay, message)

    def reply(self, ref: Any, status: str, payload: Payload) -> None:
        """
        Answer the client push whose C{ref} was saved earlier (an
        asynchronous reply).
        """
        self._runtime.reply(ref, status, payload)

    def track(self, key: str, meta: PresenceMeta) -> str:
        """
        Track this channel in the topic's presence under C{key}; it is
        untracked when the channel ends.  Returns the presence's C{phx_ref}.
        """
        return self._runtime.track(key, meta)

    def update_presence(self, key: str, meta: PresenceMeta) -> str:
        """
        Replace the meta this channel tracks under C{key}.
        """
        return self._runtime.update_presence(key, meta)

    def presence_list(self) -> PresenceList:
        """
        Everyone present on this topic, in Phoenix Presence format (what a
        C{presence_state} push carries): a read-only snapshot; copy it to
        add fields.
        """
        return self._runtime.presence_list()


JoinContext = SocketContext[None]
"""The context a join callback gets: the channel has no assigns yet."""

JoinCallback = Callable[[str, Payload, JoinContext], Maybe[JoinResult[A]]]
HandleInCallback = Callable[[str, Payload, SocketContext[A]], Maybe[HandleResult[A]]]
HandleInfoCallback = Callable[[object, SocketContext[A]], Maybe[InfoResult[A]]]
TerminateCallback = Callable[[str, SocketContext[A]], None]


def _no_handle_in(
    event: str, payload: Payload, ctx: SocketContext[Any]
) -> HandleResult[Any]:
    # error replies echo a bounded part of what the client sent
    return Reply("error", {"reason": f"unhandled event {event[:100]!r}"}, ctx.assigns)


def _no_handle_info(message: object, ctx: SocketContext[Any]) -> InfoResult[Any]:
    return NoReply(ctx.assigns)


def _no_terminate(reason: str, ctx: SocketContext[Any]) -> None:
    pass


@attrs.frozen
class Channel(Generic[A]):
    """
    A channel definition: immutable, built with L{Channel.create} and the
    C{with_*} methods, registered on a topic pattern.
    """

    join: JoinCallback[A]
    handle_in: HandleInCallback[A] = _no_handle_in
    handle_info: HandleInfoCallback[A] = _no_handle_info
    terminate: TerminateCallback[A] = _no_terminate

    @staticmethod
    def create(join: JoinCallback[B]) -> Channel[B]:
        """
        A channel whose joins are decided by C{join}.  Without a
        C{handle_in}, client pushes get an error reply naming the event.
        """
        return Channel(join)

    def with_handle_in(self, handle_in: HandleInCallback[A]) -> Channel[A]:
        """
        Handle client pushes with C{handle_in(event, payload, ctx)}.
        """
        return attrs.evolve(self, handle_in=handle_in)

    def with_handle_info(self, handle_info: HandleInfoCallback[A]) -> Channel[A]:
        """
        Handle messages sent with C{ctx.send_info} with
        C{handle_info(message, ctx)}.
        """
        return attrs.evolve(self, handle_info=handle_info)

    def with_terminate(self, terminate: TerminateCallback[A]) -> Channel[A]:
        """
        Call C{terminate(reason, ctx)} when the channel ends: on leave,
        disconnect, stop and after a crash.
        """
        return attrs.evolve(self, terminate=terminate)
