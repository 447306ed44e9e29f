"""
The coordinator: one node's channel system.

It owns the table of sockets, the channels they joined with their assigns,
and the topic index that broadcasts fan out through.  Transports hand it
decoded messages and connection events; it answers with encoded frames
written to each socket's L{IConnection}.

Control-plane work (join, leave, client pushes) runs the application's
callbacks in order per socket.  The data plane does not touch channels: a
broadcast is encoded once per serializer, prepared once per kind of
connection, and the same bytes are written to every subscriber
(L{Coordinator.deliver}, the one place local delivery happens, below
PubSub).
"""

from __future__ import annotations

import secrets
from collections import deque
from typing import Any, Callable, Coroutine, Mapping

from twisted.application.service import Service
from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from beryl.app import App, ConnectError, ConnectInfo, ConnectOk, ConnectResult
from beryl.channel import (
    JoinError,
    JoinOk,
    NoReply,
    Push,
    Reply,
    Stop,
)
from beryl.interfaces import (
    IConnection,
    ICoordinator,
    IPresence,
    IPubSub,
    ISubscriber,
)
from beryl.presence.tracker import PresenceTracker
from beryl.pubsub import PubSub
from beryl.sockets import ChannelEnded, ChannelState, PendingInfo, SocketHandle
from beryl.wire import DecodeError, Message, Payload, PresenceList, Serializer

__all__ = ["ChannelEnded", "Coordinator", "SocketHandle"]

CLOSE_GOING_AWAY = 1001
CLOSE_INVALID_DATA = 1007
CLOSE_POLICY = 1008

_EMPTY: dict[str, Any] = {}
_UNPREPARED = object()


def _settle(result: object) -> object:
    """
    Turn a coroutine into a Deferred; leave plain values
    and Deferreds alone.
    """
    if isinstance(result, Deferred):
        return result
    if isinstance(result, Coroutine):
        return ensureDeferred(result)
    return result


@implementer(ICoordinator, ISubscriber)
class Coordinator(Service):
    """
    The channel system of one node.

    @param app: the channel routes and connect hook.
    @param clock: the time source for info timers and idle timeouts.
    @param pubsub: cluster publish/subscribe, which every broadcast goes
        through and which calls L{deliver} on each node; a single-node
        L{PubSub} when not given.
    @param presence: where channels track presences; a single-node
        L{PresenceTracker} when not given.
    @param max_channels: the most channels one socket may join.
    @param idle_timeout: seconds without inbound data after which a socket
        is closed (Phoenix's 60 s); C{0} disables it.
    @param drain_timeout: how long stopping waits for connections to close.
    @param max_queued: the most messages a socket may send while one of its
        callbacks is pending; more closes it with 1008.
    """

    log = Logger()
    # Broadcast payloads may be pre-encoded JSON (orjson.Fragment): the
    # serializers write them as they are.
    accepts_encoded_json = True

    def __init__(
        self,
        app: App,
        clock: IReactorTime,
        pubsub: IPubSub | None = None,
        presence: IPresence | None = None,
        max_channels: int = 100,
        idle_timeout: float = 60.0,
        new_socket_id: Callable[[], str] = lambda: secrets.token_urlsafe(12),
        drain_timeout: float = 2.0,
        max_queued: int = 1000,
    ) -> None:
        self.app = app
        self.clock = clock
        self.pubsub: IPubSub = pubsub if pubsub is not None else PubSub(None)
        self.presence: IPresence = (
            presence if presence is not None else PresenceTracker(None, clock)
        )
        self.max_channels = max_channels
        self.idle_timeout = idle_timeout
        self.drain_timeout = drain_timeout
        self.max_queued = max_queued
        self._new_socket_id = new_socket_id
        self.subscriber_id = f"coordinator:{secrets.token_urlsafe(9)}"
        self._sockets: dict[str, SocketHandle] = {}
        # topic -> socket id -> channel: the fan-out index
        self._subscriptions: dict[str, dict[str, ChannelState]] = {}
        self._stop_presence_diffs: Callable[[], None] | None = None
        self._serial = 0
        self._drained: Deferred[None] | None = None
        self._drain_call: IDelayedCall | None = None

    # Service

    def startService(self) -> None:
        Service.startService(self)
        self._stop_presence_diffs = self.presence.subscribe_diffs(self._presence_diff)
        for callback in self.app.startup:
            try:
                callback(self)
            except Exception:
                self.log.failure("An application startup callback raised.")

    def stopService(self) -> Deferred[None] | None:
        """
        Close every socket with 1001 (the client reconnects, to this node
        once it is back or to another).  The returned Deferred fires when
        every connection has closed, or after C{drain_timeout} seconds, so
        the close frames reach the clients before the process exits.
        """
        Service.stopService(self)
        if self._stop_presence_diffs is not None:
            self._stop_presence_diffs()
            self._stop_presence_diffs = None
        if not self._sockets:
            return None
        self._drained = Deferred()
        self._drain_call = self.clock.callLater(self.drain_timeout, self._drain_expired)
        for socket in list(self._sockets.values()):
            socket.connection.close(CLOSE_GOING_AWAY, "server shutting down")
        return self._drained

    def _drain_expired(self) -> None:
        self._drain_call = None
        for socket in list(self._sockets.values()):
            self.socket_closed(socket)

    # Connection lifecycle, called by transports

    def connect(
        self, params: Mapping[str, Any], info: ConnectInfo
    ) -> Deferred[ConnectResult]:
        """
        Run the application's connect hook; the result says whether to
        accept the socket.
        """
        d: Deferred[Any] = maybeDeferred(
            lambda: _settle(self.app.connect(params, info))
        )

        def check(result: object) -> ConnectResult:
            if isinstance(result, (ConnectOk, ConnectError)):
                return result
            self.log.error(
                "The connect hook returned {result!r}, not ConnectOk or "
                "ConnectError; refusing the socket.",
                result=result,
            )
            return ConnectError(403)

        def crashed(failure: Failure) -> ConnectResult:
            self.log.failure("The connect hook raised; refusing the socket.", failure)
            return ConnectError(403)

        d.addCallbacks(check, crashed)
        return d

    def open_socket(
        self,
        connection: IConnection,
        serializer: Serializer,
        params: Mapping[str, Any],
        connect_info: ConnectInfo,
        assigns: Any = None,
    ) -> SocketHandle:
        """
        Register an accepted connection and return its handle.
        """
        socket = SocketHandle(
            socket_id=self._new_socket_id(),
            connection=connection,
            serializer=serializer,
            params=params,
            connect_info=connect_info,
            assigns=assigns,
            last_seen=self.clock.seconds(),
            on_failure=self._connection_failed,
        )
        if self._drained is not None:
            # Accepted while the node is stopping: tell the client to go
            # elsewhere at once.
            socket.closed = True
            connection.close(CLOSE_GOING_AWAY, "server shutting down")
            return socket
        self._sockets[socket.socket_id] = socket
        if self.idle_timeout > 0:
            socket.idle_call = self.clock.callLater(
                self.idle_timeout, self._check_idle, socket
            )
        return socket

    def socket_closed(self, socket: SocketHandle) -> None:
        """
        The connection is gone: end every channel (no frames are sent) and
        forget the socket.  Safe to call more than once.
        """
        if socket.closed:
            return
        socket.closed = True
        socket.queue = None
        if socket.idle_call is not None and socket.idle_call.active():
            socket.idle_call.cancel()
        socket.idle_call = None
        for state in list(socket.channels.values()):
            self._end(state, "closed")
        self._sockets.pop(socket.socket_id, None)
        if self._drained is not None and not self._sockets:
            drained, self._drained = self._drained, None
            if self._drain_call is not None and self._drain_call.active():
                self._drain_call.cancel()
            self._drain_call = None
            drained.callback(None)

    def receive(self, socket: SocketHandle, message: Message) -> None:
        """
        Handle one decoded inbound message.  Messages are handled in order:
        while a join (or another asynchronous callback) is pending, later
        messages wait.
        """
        socket.last_seen = self.clock.seconds()
        if socket.closed:
            return
        if socket.busy:
            if socket.queue is None:
                socket.queue = deque()
            if len(socket.queue) >= self.max_queued:
                self.log.warn(
                    "Socket {socket_id} sent more than {limit} messages while a "
                    "callback was pending; closing it.",
                    socket_id=socket.socket_id,
                    limit=self.max_queued,
                )
                socket.connection.close(CLOSE_POLICY, "too many pending messages")
                self.socket_closed(socket)
                return
            socket.queue.append(message)
            return
        self._dispatch(socket, message)

    def touch(self, socket: SocketHandle) -> None:
        """
        Note inbound traffic that is not a message (a WebSocket ping).
        """
        socket.last_seen = self.clock.seconds()

    def reject_frame(self, socket: SocketHandle, reason: str) -> None:
        """
        An inbound frame could not be decoded: log it and close this socket
        with 1007 and the reason.  Other sockets are not affected.
        """
        self.log.warn(
            "Socket {socket_id} ({peer}) sent a frame that cannot be decoded "
            "({reason}); closing it with {code}.",
            socket_id=socket.socket_id,
            peer=socket.connect_info.peer,
            reason=reason,
            code=CLOSE_INVALID_DATA,
        )
        socket.connection.close(CLOSE_INVALID_DATA, reason[:120])
        self.socket_closed(socket)

    def receive_data(
        self, socket: SocketHandle, data: bytes | str, is_binary: bool
    ) -> None:
        """
        Handle one inbound frame as it arrived: decode it with the socket's
        serializer, then L{receive} the message, or L{reject_frame} one
        that cannot be decoded.

        @param data: a binary frame's bytes; a text frame's UTF-8 bytes or
            its text.
        """
        serializer = socket.serializer
        if is_binary:
            assert isinstance(data, bytes), "a binary frame is bytes"
            message = serializer.decode_binary(data)
        else:
            message = serializer.decode_text(data)
        if isinstance(message, DecodeError):
            self.reject_frame(socket, message.reason)
        else:
            self.receive(socket, message)

    # ICoordinator and the data plane

    def broadcast(self, topic: str, event: str, payload: Payload) -> None:
        self.pubsub.broadcast(topic, event, payload)

    def broadcast_from(
        self, socket_id: str, topic: str, event: str, payload: Payload
    ) -> None:
        self.pubsub.broadcast_from(socket_id, topic, event, payload)

    def local_broadcast(self, topic: str, event: str, payload: Payload) -> None:
        """
        Send C{event} to the subscribers of C{topic} on this node only.
        """
        self.pubsub.local_broadcast(topic, event, payload)

    def deliver(
        self, topic: str, event: str, payload: Payload, from_id: str | None
    ) -> None:
        """
        Fan a broadcast out to this node's sockets joined to C{topic},
        except socket C{from_id}: encoded once per serializer, prepared
        once per kind of connection, the same bytes written to each.
        """
        subscribers = self._subscriptions.get(topic)
        if not subscribers:
            return
        prepared: dict[object, object] = {}
        for socket_id, state in list(subscribers.items()):
            if socket_id == from_id:
                continue
            socket = state.socket
            data = prepared.get(socket.broadcast_key, _UNPREPARED)
            if data is _UNPREPARED:
                data = prepared[socket.broadcast_key] = self._prepare_broadcast(
                    socket, topic, event, payload
                )
            if data is not None:
                try:
                    socket.connection.send_prepared(data)
                except Exception:
                    self._connection_failed(socket)

    def _prepare_broadcast(
        self, socket: SocketHandle, topic: str, event: str, payload: Payload
    ) -> object | None:
        """
        A broadcast encoded and prepared for sockets like C{socket}, or
        L{None} when their protocol cannot carry it (binary for V1).
        """
        try:
            frame = socket.serializer.encode_broadcast(topic, event, payload)
        except (ValueError, TypeError) as error:
            self.log.warn(
                "Broadcast {event} on {topic} cannot be encoded for {vsn} clients: "
                "{error}",
                event=event,
                topic=topic,
                vsn=socket.serializer.vsn,
                error=error,
            )
            return None
        return socket.connection.prepare(frame)

    def push_to_socket(
        self, socket_id: str, topic: str, event: str, payload: Payload
    ) -> bool:
        socket = self._sockets.get(socket_id)
        state = socket.channels.get(topic) if socket is not None else None
        if state is None:
            return False
        state.push(event, payload)
        return True

    def socket_count(self) -> int:
        return len(self._sockets)

    def local_subscriber_count(self, topic: str) -> int:
        """
        How many of this node's sockets joined C{topic}.
        """
        return len(self._subscriptions.get(topic, _EMPTY))

    # Dispatch

    def _dispatch(self, socket: SocketHandle, message: Message) -> None:
        topic, event = message.topic, message.event
        if topic == "phoenix" and event == "heartbeat":
            socket.reply(None, message.ref, topic, "ok", {})
            return
        if event == "phx_join":
            self._join(socket, message)
            return
        state = socket.channels.get(topic)
        if state is None:
            if event == "phx_leave":
                socket.reply(message.join_ref, message.ref, topic, "ok", {})
            else:
                socket.reply(
                    None,
                    message.ref,
                    topic,
                    "error",
                    {"reason": "unmatched topic"},
                )
            return
        if message.join_ref is not None and message.join_ref != state.join_ref:
            self.log.debug(
                "Socket {socket_id} sent {event} on {topic} with a stale join_ref; "
                "dropped.",
                socket_id=socket.socket_id,
                event=event,
                topic=topic,
            )
            return
        if event == "phx_leave":
            socket.reply(state.join_ref, message.ref, topic, "ok", {})
            state.close_frame()
            self._end(state, "leave")
            return
        self._call(
            state,
            lambda: state.channel.handle_in(
                event, message.payload, state.context(message.ref)
            ),
            message.ref,
        )

    def _join(self, socket: SocketHandle, message: Message) -> None:
        topic = message.topic
        old = socket.channels.get(topic)
        if old is not None:
            # The new join's reply goes first, then the old channel's close.
            self._end(old, "duplicate join")
        elif len(socket.channels) >= self.max_channels:
            socket.reply(
                message.join_ref,
                message.ref,
                topic,
                "error",
                {"reason": "too many channels joined"},
            )
            return
        route = self.app.router.match(topic)
        if route is None:
            socket.reply(
                None, message.ref, topic, "error", {"reason": "unmatched topic"}
            )
            return
        self._serial += 1
        state = ChannelState(
            self,
            socket,
            topic,
            message.join_ref,
            route[1],
            owner=f"{socket.socket_id}/{self._serial}",
        )
        try:
            result = _settle(
                state.channel.join(topic, message.payload, state.context(message.ref))
            )
        except Exception:
            self._join_crashed(state, message, old, Failure())
            return
        if isinstance(result, Deferred):
            socket.busy = True
            result.addCallbacks(
                lambda value: self._joined(state, message, old, value),
                lambda failure: self._join_crashed(state, message, old, failure),
            )
            result.addBoth(lambda _: self._resume(socket))
        else:
            self._joined(state, message, old, result)

    def _joined(
        self,
        state: ChannelState,
        message: Message,
        old: ChannelState | None,
        result: object,
    ) -> None:
        socket = state.socket
        if isinstance(result, JoinOk) and socket.closed:
            # Joined, but the socket went away meanwhile.
            state.assigns = result.assigns
            self._end(state, "closed")
            return
        if socket.closed or state.ended:
            self._discard(state)
            return
        if isinstance(result, JoinOk):
            state.assigns = result.assigns
            socket.channels[state.topic] = state
            self._subscriptions.setdefault(state.topic, {})[socket.socket_id] = state
            if len(self._subscriptions[state.topic]) == 1:
                self.pubsub.subscribe(state.topic, self)
            response = {} if result.reply is None else result.reply
            socket.reply(state.join_ref, message.ref, state.topic, "ok", response)
            if old is not None:
                old.close_frame()
            state.joined = True
            for event, payload in state.pending_frames:
                state.push(event, payload)
            for info in state.pending_infos:
                state.send_info(info)
            state.pending_frames.clear()
            state.pending_infos.clear()
        elif isinstance(result, JoinError):
            self._discard(state)
            socket.reply(
                state.join_ref, message.ref, state.topic, "error", result.payload
            )
            if old is not None:
                old.close_frame()
        else:
            self._join_crashed(
                state,
                message,
                old,
                Failure(
                    TypeError(f"join returned {result!r}, not JoinOk or JoinError")
                ),
            )

    def _join_crashed(
        self,
        state: ChannelState,
        message: Message,
        old: ChannelState | None,
        failure: Failure,
    ) -> None:
        self.log.failure(
            "The join of socket {socket_id} to {topic} crashed.",
            failure,
            socket_id=state.socket.socket_id,
            topic=state.topic,
        )
        self._discard(state)
        if state.socket.closed:
            return
        state.socket.reply(
            state.join_ref,
            message.ref,
            state.topic,
            "error",
            {"reason": "join crashed"},
        )
        if old is not None:
            old.close_frame()

    def _resume(self, socket: SocketHandle) -> None:
        socket.busy = False
        while socket.queue and not socket.busy and not socket.closed:
            item = socket.queue.popleft()
            if isinstance(item, PendingInfo):
                self.deliver_info(item.state, item.message)
            else:
                self._dispatch(socket, item)
        if socket.queue is not None and not socket.queue:
            socket.queue = None

    # Channel callbacks and their results

    def _call(
        self,
        state: ChannelState,
        callback: Callable[[], object],
        ref: Any,
    ) -> None:
        """
        Run a C{handle_in} or C{handle_info} callback and apply its result.
        An asynchronous callback holds the socket's later messages and infos
        back until it is done, so replies keep their order and assigns are
        never updated by two callbacks at once.
        """
        try:
            result = _settle(callback())
        except Exception:
            self._crash(state, Failure())
            return
        if isinstance(result, Deferred):
            socket = state.socket
            socket.busy = True
            result.addCallbacks(
                lambda value: self._apply(state, value, ref),
                lambda failure: self._crash(state, failure),
            )
            result.addBoth(lambda _: self._resume(socket))
        else:
            self._apply(state, result, ref)

    def _apply(self, state: ChannelState, result: object, ref: Any) -> None:
        if state.ended:
            return
        if isinstance(result, NoReply):
            state.assigns = result.assigns
        elif isinstance(result, Reply):
            state.assigns = result.assigns
            if ref is None:
                self.log.warn(
                    "A Reply from handle_info on {topic} has no push to answer; "
                    "use ctx.push or ctx.reply(ref, ...).",
                    topic=state.topic,
                )
            else:
                state.reply(ref, result.status, result.payload)
        elif isinstance(result, Push):
            state.assigns = result.assigns
            state.push(result.event, result.payload)
        elif isinstance(result, Stop):
            if result.reply is not None and ref is not None:
                state.reply(ref, *result.reply)
            if result.graceful:
                state.close_frame()
            else:
                state.error_frame()
            self._end(state, result.reason)
        else:
            self._crash(
                state,
                Failure(
                    TypeError(
                        f"a handler returned {result!r}, not NoReply, Reply, "
                        "Push or Stop"
                    )
                ),
            )

    def deliver_info(self, state: ChannelState, message: object) -> None:
        if state.ended:
            return
        socket = state.socket
        if socket.busy:
            # One callback at a time per socket, so assigns never race.
            if socket.queue is None:
                socket.queue = deque()
            socket.queue.append(PendingInfo(state, message))
            return
        self._call(
            state,
            lambda: state.channel.handle_info(message, state.context()),
            None,
        )

    def _crash(self, state: ChannelState, failure: Failure) -> None:
        """
        A callback raised: this channel alone ends with C{phx_error}; the
        socket and its other channels go on.
        """
        self.log.failure(
            "Channel {topic} of socket {socket_id} crashed.",
            failure,
            socket_id=state.socket.socket_id,
            topic=state.topic,
        )
        if state.ended:
            return
        state.error_frame()
        self._end(state, "crash")

    def _end(self, state: ChannelState, reason: str) -> None:
        """
        Forget a joined channel: unsubscribe it, discard what it holds and
        run its C{terminate}.
        """
        if state.ended:
            return
        socket = state.socket
        if socket.channels.get(state.topic) is state:
            del socket.channels[state.topic]
        subscribers = self._subscriptions.get(state.topic)
        if subscribers is not None and subscribers.get(socket.socket_id) is state:
            del subscribers[socket.socket_id]
            if not subscribers:
                del self._subscriptions[state.topic]
                self.pubsub.unsubscribe(state.topic, self)
        self._discard(state)
        try:
            state.channel.terminate(reason, state.context())
        except Exception:
            self.log.failure(
                "terminate of channel {topic} of socket {socket_id} raised.",
                socket_id=socket.socket_id,
                topic=state.topic,
            )

    def _discard(self, state: ChannelState) -> None:
        """
        A channel that is over, or never started (a refused or crashed
        join): cancel its timers, drop what waited for its join reply and
        untrack its presence.
        """
        state.ended = True
        for call in state.timers or ():
            if call.active():
                call.cancel()
        state.timers = None
        state.pending_frames.clear()
        state.pending_infos.clear()
        if state.tracked:
            state.tracked = False
            self.presence.untrack_all(state.owner)

    def _connection_failed(self, socket: SocketHandle) -> None:
        """
        Writing to a connection raised: log it and drop that socket only.
        """
        self.log.failure(
            "Writing to socket {socket_id} failed; closing it.",
            socket_id=socket.socket_id,
        )
        try:
            socket.connection.close(1011, "internal error")
        except Exception:
            self.log.failure(
                "Closing socket {socket_id} failed too.", socket_id=socket.socket_id
            )
        self.socket_closed(socket)

    # Timers and presence

    def _check_idle(self, socket: SocketHandle) -> None:
        socket.idle_call = None
        if socket.closed:
            return
        idle = self.clock.seconds() - socket.last_seen
        if idle >= self.idle_timeout:
            self.log.info(
                "Socket {socket_id} sent nothing for {idle:.0f} s; closing it.",
                socket_id=socket.socket_id,
                idle=idle,
            )
            socket.connection.close(CLOSE_GOING_AWAY, "idle timeout")
            self.socket_closed(socket)
        else:
            socket.idle_call = self.clock.callLater(
                self.idle_timeout - idle, self._check_idle, socket
            )

    def _presence_diff(self, topic: str, diff: dict[str, PresenceList]) -> None:
        # Every node computes diffs from its own view, so they go to local
        # subscribers only.
        self.local_broadcast(topic, "presence_diff", diff)
