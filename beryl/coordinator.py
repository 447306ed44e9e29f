"""
The coordinator: one node's channel system, as a service.

It owns the table of sockets, runs the application's connect hook, closes
idle sockets and drains them on shutdown.  Transports reach it through
L{ISocketHost}.  What a socket's messages mean is decided by the socket's
pure L{Session}; the coordinator performs the session's effects: it writes
frames, runs the application's callbacks (plain values, Deferreds or
coroutines) and reports their results back, and keeps the local fan-out
index (L{FanOut}) and presence in step.

The data plane does not pass through here: broadcasts go from PubSub to
the L{FanOut}, which writes the same prepared bytes to every subscriber.
"""

from __future__ import annotations

import secrets
from typing import Any, Callable, Mapping

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from beryl import telemetry
from beryl.app import App, ConnectError, ConnectInfo, ConnectOk, ConnectResult
from beryl.callbacks import Callbacks, settle
from beryl.counters import Counters
from beryl.fanout import FanOut
from beryl.interfaces import (
    IConnection,
    ICoordinator,
    IPresence,
    IPubSub,
    ISocketHost,
)
from beryl.presence.tracker import PresenceTracker
from beryl.pubsub import PubSub
from beryl.session.effects import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL_ERROR,
    CLOSE_INVALID_DATA,
    CLOSE_POLICY,
    CloseSocket,
    Effect,
    EndChannel,
    RunHandleIn,
    RunHandleInfo,
    RunJoin,
    ScheduleInfo,
    SendClose,
    SendError,
    SendPush,
    SendReply,
    Subscribe,
    Unsubscribe,
    UntrackAll,
)
from beryl.session.state import ChannelEnded, Session
from beryl.sockets import ChannelRuntime, SocketHandle
from beryl.wire import (
    DecodeError,
    Message,
    Payload,
    PresenceList,
    Serializer,
    Unacceptable,
)

__all__ = [
    "CLOSE_GOING_AWAY",
    "CLOSE_INVALID_DATA",
    "CLOSE_POLICY",
    "ChannelEnded",
    "Coordinator",
    "SocketHandle",
]

Effects = tuple[Effect, ...]
_NONE: Effects = ()
_RATE_LIMITED = {"reason": "rate limited"}
_JOIN_RATE_LIMITED = {"reason": "join rate limited"}
# A socket is closed once its refused messages alone pass this many times
# its message limit (rate and burst).
REFUSED_FACTOR = 10


def _bucket(rate: float, burst: float) -> tuple[float, float]:
    """
    A token bucket of C{rate} per second and C{burst} as the generic cell
    rate algorithm's two numbers: the seconds one event takes from the
    bucket, and how far ahead of now the bucket may be drawn.  A rate of
    C{0} is no limit.
    """
    if rate <= 0:
        return 0.0, float("inf")
    # Half an event of slack, so rounding never refuses the last of a burst.
    return 1.0 / rate, (burst + 0.5) / rate


@implementer(ICoordinator, ISocketHost)
class Coordinator(Service):
    """
    The channel system of one node.

    @param app: the channel routes and connect hook.
    @param clock: the time source for info timers and idle timeouts.
    @param pubsub: cluster publish/subscribe, which every broadcast goes
        through and which delivers to this node's L{FanOut}; a single-node
        L{PubSub} when not given.
    @param presence: where channels track presences; a single-node
        L{PresenceTracker} when not given.
    @param max_channels: the most channels one socket may join.
    @param idle_timeout: seconds without inbound data after which a socket
        is closed (Phoenix's 60 s); C{0} disables it.
    @param drain_timeout: how long stopping waits for connections to close.
    @param max_queued: the most messages a socket may send while one of its
        callbacks is pending; more closes it with 1008.
    @param max_message_rate: inbound events (messages, heartbeats,
        WebSocket pings) per second each socket may send, on average;
        C{0} is no limit.  A message past it gets the error reply
        C{{"reason": "rate limited"}} and nothing else; a socket whose
        refused messages pass C{REFUSED_FACTOR} times the limit is closed
        with 1008.
    @param message_burst: how many events a socket may send at once
        beyond the rate.
    @param max_join_rate: joins per second each socket may send; C{0} is
        no limit.  A join past it gets C{{"reason": "join rate limited"}}.
    @param join_burst: how many joins a socket may send at once.
    @param max_topic_bytes: the longest topic a message may name.
    @param counters: where the hot paths count messages and bytes, for
        metrics; telemetry events go to C{app.telemetry}.

    @ivar fanout: this node's subscription index, PubSub's subscriber for
        all of its sockets.
    """

    log = Logger()

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
        max_message_rate: float = 100.0,
        message_burst: float = 200.0,
        max_join_rate: float = 10.0,
        join_burst: float = 100.0,
        max_topic_bytes: int = 1024,
        counters: Counters | None = None,
    ) -> None:
        self.app = app
        self.counters = counters if counters is not None else Counters()
        self.telemetry = app.telemetry
        self.refusing = False
        self.clock = clock
        self.pubsub: IPubSub = pubsub if pubsub is not None else PubSub(None)
        self.presence: IPresence = (
            presence if presence is not None else PresenceTracker(None, clock)
        )
        self.max_channels = max_channels
        self.idle_timeout = idle_timeout
        self.drain_timeout = drain_timeout
        self.max_queued = max_queued
        self.max_topic_bytes = max_topic_bytes
        self._message_interval, self._message_window = _bucket(
            max_message_rate, message_burst
        )
        self._refused_interval, self._refused_window = _bucket(
            max_message_rate * REFUSED_FACTOR, message_burst * REFUSED_FACTOR
        )
        self._join_interval, self._join_window = _bucket(max_join_rate, join_burst)
        self.fanout = FanOut(self._connection_failed, self.counters)
        self._callbacks = Callbacks(self.perform, self.telemetry)
        self._new_socket_id = new_socket_id
        self._sockets: dict[str, SocketHandle] = {}
        self._stop_presence_diffs: Callable[[], None] | None = None
        self._drained: Deferred[None] | None = None
        self._drain_call: IDelayedCall | None = None
        self._perform_effect: dict[type, Callable[[SocketHandle, Any], Any]] = {
            SendReply: SocketHandle.send_reply,
            SendPush: SocketHandle.send_push,
            SendClose: SocketHandle.send_close,
            SendError: SocketHandle.send_error,
            RunJoin: self._run_join,
            RunHandleIn: self._callbacks.run_handle_in,
            RunHandleInfo: self._callbacks.run_handle_info,
            ScheduleInfo: self._schedule_info,
            Subscribe: self._subscribe,
            Unsubscribe: self._unsubscribe,
            UntrackAll: self._untrack_all,
            EndChannel: self._end_channel,
            CloseSocket: self._close_socket,
        }

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

    def refuse_new_sockets(self) -> None:
        """
        From now on every new client is refused with HTTP 503 without
        running the connect hook: the node is draining before it stops.
        """
        self.refusing = True

    def _drain_expired(self) -> None:
        self._drain_call = None
        for socket in list(self._sockets.values()):
            self.closed(socket)

    # ISocketHost: what transports call

    def connect(
        self, params: Mapping[str, Any], info: ConnectInfo
    ) -> Deferred[ConnectResult]:
        """
        Run the application's connect hook; the result says whether to
        accept the socket.  While draining (L{refuse_new_sockets}) every
        client is refused with 503.
        """
        if self.refusing:
            return succeed(ConnectError(503))
        d: Deferred[Any] = maybeDeferred(lambda: settle(self.app.connect(params, info)))

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

    def open(
        self,
        connection: IConnection,
        serializer: Serializer,
        params: Mapping[str, Any],
        info: ConnectInfo,
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
            connect_info=info,
            assigns=assigns,
            session=Session(
                self._route, self.max_channels, self.max_queued, self.max_topic_bytes
            ),
            on_failure=self._connection_failed,
            last_seen=self.clock.seconds(),
            counters=self.counters,
        )
        if self._drained is not None:
            # Accepted while the node is stopping: tell the client to go
            # elsewhere at once.
            socket.closed = True
            connection.close(CLOSE_GOING_AWAY, "server shutting down")
            return socket
        self._sockets[socket.socket_id] = socket
        if self.telemetry.observed(telemetry.SocketConnected):
            self.telemetry.emit(
                telemetry.SocketConnected(socket.socket_id, _transport(connection))
            )
        if self.idle_timeout > 0:
            socket.idle_call = self.clock.callLater(
                self.idle_timeout, self._check_idle, socket
            )
        return socket

    def receive_data(self, socket: object, data: bytes | str, is_binary: bool) -> None:
        """
        Handle one inbound frame as it arrived: decode it with the socket's
        serializer and L{receive} the message; a frame that cannot be
        decoded closes this socket (only) with 1007 and the reason, and one
        whose payload is refused (a number that is not finite) gets an
        error reply.

        @param data: a binary frame's bytes; a text frame's UTF-8 bytes or
            its text.
        """
        assert isinstance(socket, SocketHandle), "a handle from open"
        self.counters.messages_in += 1
        serializer = socket.serializer
        message: Message | DecodeError | Unacceptable
        if is_binary:
            assert isinstance(data, bytes), "a binary frame is bytes"
            message = serializer.decode_binary(data)
        else:
            message = serializer.decode_text(data)
        if type(message) is Message:
            self.receive(socket, message)
        elif type(message) is Unacceptable:
            now = self.clock.seconds()
            socket.last_seen = now
            if self._charge(socket, now):
                socket.send_reply(
                    socket.session.refuse(message.message, {"reason": message.reason})
                )
        else:
            assert isinstance(message, DecodeError)
            self.log.warn(
                "Socket {socket_id} ({peer}) sent a frame that cannot be decoded "
                "({reason}); closing it with {code}.",
                socket_id=socket.socket_id,
                peer=socket.connect_info.peer,
                reason=message.reason,
                code=CLOSE_INVALID_DATA,
            )
            socket.last_seen = self.clock.seconds()
            self.perform(socket, socket.session.bad_frame(message.reason))

    def receive(self, socket: SocketHandle, message: Message) -> None:
        """
        Handle one decoded inbound message.  Messages are handled in order:
        while a join (or another asynchronous callback) is pending, later
        messages wait.
        """
        now = socket.last_seen = self.clock.seconds()
        # The message rate limit, inline: this is every message's path.
        due = socket.message_due
        if due < now:
            due = now
        due += self._message_interval
        if due - now > self._message_window:
            self._rate_limited(socket, message, now)
            return
        socket.message_due = due
        session = socket.session
        channel = session.accept_push(message)
        if channel:
            self._callbacks.handle_push(socket, channel, message)
            return
        if message.event == "phx_join":
            due = max(socket.join_due, now) + self._join_interval
            if due - now > self._join_window:
                self.counters.limit_hit("join_rate")
                socket.send_reply(session.refuse(message, _JOIN_RATE_LIMITED))
                return
            socket.join_due = due
        effects = session.receive(message)
        if effects:
            self.perform(socket, effects)

    def received_ping(self, socket: object) -> None:
        """
        A WebSocket ping arrived: it counts against the socket's message
        rate like a message (too many close the socket with 1008), but
        does not reset the idle timeout.
        """
        assert isinstance(socket, SocketHandle), "a handle from open"
        self._charge(socket, self.clock.seconds())

    def _charge(self, socket: SocketHandle, now: float) -> bool:
        """
        Count one event against C{socket}'s message rate; C{False} when it
        is refused (and the socket perhaps closed).
        """
        due = max(socket.message_due, now) + self._message_interval
        if due - now > self._message_window:
            self._refused(socket, now)
            return False
        socket.message_due = due
        return True

    def _refused(self, socket: SocketHandle, now: float) -> bool:
        """
        Count a refused event; past C{REFUSED_FACTOR} times the limit the
        socket is closed with 1008 and C{False} returned.
        """
        self.counters.limit_hit("message_rate")
        due = max(socket.refused_due, now) + self._refused_interval
        if due - now > self._refused_window:
            self.perform(
                socket, socket.session.limit_exceeded("message rate limit exceeded")
            )
            return False
        socket.refused_due = due
        return True

    def _rate_limited(self, socket: SocketHandle, message: Message, now: float) -> None:
        if self._refused(socket, now):
            socket.send_reply(socket.session.refuse(message, _RATE_LIMITED))

    def touch(self, socket: object) -> None:
        """
        Note client activity that is not a message (a long-poll request):
        it resets the idle timeout.
        """
        assert isinstance(socket, SocketHandle), "a handle from open"
        socket.last_seen = self.clock.seconds()

    def closed(
        self,
        socket: object,
        local_code: int | None = None,
        local_reason: str = "",
    ) -> None:
        """
        The connection is gone: end every channel (no frames are sent) and
        forget the socket.  Safe to call more than once.

        @param local_code: the close code the transport itself sent, if it
            closed the connection (invalid UTF-8, an oversized message, a
            protocol violation): logged with the socket's id.
        """
        assert isinstance(socket, SocketHandle), "a handle from open"
        if socket.closed:
            return
        if local_code not in (None, 1000, CLOSE_GOING_AWAY):
            self.log.warn(
                "Socket {socket_id} ({peer}) closed with {code}: {reason}",
                socket_id=socket.socket_id,
                peer=socket.connect_info.peer,
                code=local_code,
                reason=local_reason,
            )
        self._forget(socket, socket.session.closed_by_peer())

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

    def push_to_socket(
        self, socket_id: str, topic: str, event: str, payload: Payload
    ) -> bool:
        socket = self._sockets.get(socket_id)
        if socket is None:
            return False
        channel = socket.session.channel(topic)
        if channel is None:
            return False
        self.perform(socket, socket.session.push(channel, event, payload))
        return True

    def socket_count(self) -> int:
        return len(self._sockets)

    def local_subscriber_count(self, topic: str) -> int:
        """
        How many of this node's sockets joined C{topic}.
        """
        return self.fanout.count(topic)

    # The effect interpreter

    def perform(self, socket: SocketHandle, effects: Effects) -> None:
        """
        Carry out a session's effects in order.  Running a callback whose
        result is ready gives the session's next effects at once; they are
        performed in this loop, not by recursion, however long the queue
        of waiting messages.
        """
        perform = self._perform_effect
        while effects:
            follow: Effects = _NONE
            for effect in effects:
                more = perform[type(effect)](socket, effect)
                if more:
                    follow = more
            effects = follow

    def _route(self, topic: str) -> object | None:
        # The session passes this on, unread, to RunJoin: (pattern, channel).
        return self.app.router.match(topic)

    def _subscribe(self, socket: SocketHandle, effect: Subscribe) -> None:
        if self.fanout.add(effect.topic, socket):
            self.pubsub.subscribe(effect.topic, self.fanout)

    def _unsubscribe(self, socket: SocketHandle, effect: Unsubscribe) -> None:
        if self.fanout.remove(effect.topic, socket):
            self.pubsub.unsubscribe(effect.topic, self.fanout)

    def _untrack_all(self, socket: SocketHandle, effect: UntrackAll) -> None:
        self.presence.untrack_all(f"{socket.socket_id}/{effect.channel}")

    def _schedule_info(self, socket: SocketHandle, effect: ScheduleInfo) -> None:
        runtime = socket.channels.get(effect.channel)
        if runtime is not None:
            runtime.send_info_later(effect.delay, effect.message)

    def _end_channel(self, socket: SocketHandle, effect: EndChannel) -> None:
        runtime = socket.channels.pop(effect.channel, None)
        if runtime is None:
            return
        runtime.end()
        if runtime.joined and self.telemetry.observed(telemetry.ChannelLeft):
            self.telemetry.emit(
                telemetry.ChannelLeft(
                    socket.socket_id, runtime.topic, runtime.route, effect.reason
                )
            )
        if not effect.terminate:
            return
        try:
            runtime.channel.terminate(effect.reason, runtime.context())
        except Exception:
            self.log.failure(
                "terminate of channel {topic} of socket {socket_id} raised.",
                socket_id=socket.socket_id,
                topic=runtime.topic,
            )

    def _close_socket(self, socket: SocketHandle, effect: CloseSocket) -> None:
        if effect.code == CLOSE_POLICY:
            self.counters.limit_hit(effect.reason)
            self.log.warn(
                "Socket {socket_id} broke a limit ({reason}); closing it.",
                socket_id=socket.socket_id,
                reason=effect.reason,
            )
        socket.connection.close(effect.code, effect.reason)
        self._forget(socket, _NONE)

    # Running the application's callbacks

    def _run_join(self, socket: SocketHandle, run: RunJoin) -> Effects:
        pattern, channel = run.definition
        runtime = ChannelRuntime(
            self,
            socket,
            run.channel,
            run.topic,
            run.join_ref,
            channel,
            owner=f"{socket.socket_id}/{run.channel}",
            route=pattern,
        )
        socket.channels[run.channel] = runtime
        return self._callbacks.run_join(socket, runtime, run.payload, run.ref)

    # Closing sockets

    def _forget(self, socket: SocketHandle, effects: Effects) -> None:
        """
        Perform the effects that end a socket's channels, then drop it from
        the table (and finish a drain that waited for it).
        """
        if socket.closed:
            return
        socket.closed = True
        if socket.idle_call is not None and socket.idle_call.active():
            socket.idle_call.cancel()
        socket.idle_call = None
        self.perform(socket, effects)
        if self._sockets.pop(
            socket.socket_id, None
        ) is not None and self.telemetry.observed(telemetry.SocketClosed):
            self.telemetry.emit(
                telemetry.SocketClosed(socket.socket_id, _transport(socket.connection))
            )
        if self._drained is not None and not self._sockets:
            drained, self._drained = self._drained, None
            if self._drain_call is not None and self._drain_call.active():
                self._drain_call.cancel()
            self._drain_call = None
            drained.callback(None)

    def _connection_failed(self, socket: SocketHandle) -> None:
        """
        Writing to a connection raised: log it and drop that socket only.
        """
        self.log.failure(
            "Writing to socket {socket_id} failed; closing it.",
            socket_id=socket.socket_id,
        )
        try:
            socket.connection.close(CLOSE_INTERNAL_ERROR, "internal error")
        except Exception:
            self.log.failure(
                "Closing socket {socket_id} failed too.", socket_id=socket.socket_id
            )
        self.closed(socket)

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
            self.closed(socket)
        else:
            socket.idle_call = self.clock.callLater(
                self.idle_timeout - idle, self._check_idle, socket
            )

    def _presence_diff(self, topic: str, diff: dict[str, PresenceList]) -> None:
        # Every node computes diffs from its own view, so they go to local
        # subscribers only.
        self.local_broadcast(topic, "presence_diff", diff)
        if self.telemetry.observed(telemetry.PresenceChanged):
            self.telemetry.emit(
                telemetry.PresenceChanged(
                    topic, len(diff.get("joins", ())), len(diff.get("leaves", ()))
                )
            )


def _transport(connection: IConnection) -> str:
    """
    The name of a connection's transport (its C{prepare_key}), for
    telemetry.
    """
    key = connection.prepare_key
    return key if isinstance(key, str) else "other"
