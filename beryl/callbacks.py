"""
Running a channel's application callbacks (C{join}, C{handle_in},
C{handle_info}) and turning what they return into the inputs of the
socket's L{Session}.

Callbacks may return a value, a Deferred or a coroutine.  A result that is
ready gives the session's next effects at once, for the caller's effect
loop; a pending one keeps the session busy (later messages wait) and its
effects are performed when it fires.
"""

from __future__ import annotations

from time import perf_counter_ns
from typing import Any, Callable, Coroutine, TypeGuard

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from beryl import telemetry
from beryl.channel import JoinError, JoinOk, NoReply, Push, Reply, Stop
from beryl.session.effects import Effect, RunHandleIn, RunHandleInfo
from beryl.sockets import ChannelRuntime, SocketHandle
from beryl.wire import Message, Payload

__all__ = ["Callbacks", "settle"]

Effects = tuple[Effect, ...]
_NONE: Effects = ()
_RESULTS = (NoReply, Reply, Push, Stop)
# Results that are ready, by exact type: telling them apart from a Deferred
# or a coroutine with isinstance goes through ABCMeta.__instancecheck__, a
# Python-level call, and this is every message's path.
_READY = frozenset({NoReply, Reply, Push, Stop, JoinOk, JoinError, type(None)})


def _pending(result: object) -> TypeGuard[Deferred[Any]]:
    """
    Whether C{result} is a Deferred: known ready types first, since
    C{isinstance} against Deferred (an ABC) is a Python-level call.
    """
    return type(result) not in _READY and isinstance(result, Deferred)


def settle(result: object) -> object:
    """
    Turn a coroutine into a Deferred; leave plain values and Deferreds
    alone.
    """
    if type(result) in _READY or isinstance(result, Deferred):
        return result
    if isinstance(result, Coroutine):
        return ensureDeferred(result)
    return result


class Callbacks:
    """
    Runs application callbacks for the coordinator.

    @param perform: carries out a session's effects; used when a pending
        result fires.
    @param events: where joins, crashes and handler durations are told
        (only when something observes them).
    """

    log = Logger()

    def __init__(
        self,
        perform: Callable[[SocketHandle, Effects], None],
        events: telemetry.Telemetry | None = None,
    ) -> None:
        self._perform = perform
        self._events = events if events is not None else telemetry.Telemetry()

    def _timed(
        self, runtime: ChannelRuntime, callback: str, started: int, result: object
    ) -> object:
        """
        Report how long a callback that started at C{started} took, once
        its result is ready: now, or when its Deferred fires.
        """
        events = self._events
        if not _pending(result):
            events.handler_took(runtime.route, callback, perf_counter_ns() - started)
            return result

        def finished(value: object) -> object:
            events.handler_took(runtime.route, callback, perf_counter_ns() - started)
            return value

        return result.addBoth(finished)

    def run_join(
        self, socket: SocketHandle, runtime: ChannelRuntime, payload: Payload, ref: Any
    ) -> Effects:
        """
        Run the join callback of a new channel instance.
        """
        timed = self._events.timing
        started = perf_counter_ns() if timed else 0
        try:
            result = settle(
                runtime.channel.join(runtime.topic, payload, runtime.context(ref))
            )
        except Exception:
            if timed:
                self._timed(runtime, "join", started, None)
            return self._join_crashed(socket, runtime, Failure())
        if timed:
            result = self._timed(runtime, "join", started, result)
        if _pending(result):
            result.addCallbacks(
                lambda value: self._perform(
                    socket, self._join_result(socket, runtime, value)
                ),
                lambda failure: self._perform(
                    socket, self._join_crashed(socket, runtime, failure)
                ),
            )
            result.addErrback(self._performing_failed)
            return _NONE
        return self._join_result(socket, runtime, result)

    def run_handle_in(self, socket: SocketHandle, run: RunHandleIn) -> Effects:
        """
        Run C{handle_in} for a client push.
        """
        runtime = socket.channels.get(run.channel)
        if runtime is None:
            # ended by a failed write earlier in the same batch
            return socket.session.crashed(run.channel)
        timed = self._events.timing
        started = perf_counter_ns() if timed else 0
        try:
            result = settle(
                runtime.channel.handle_in(
                    run.event, run.payload, runtime.context(run.ref)
                )
            )
        except Exception:
            if timed:
                self._timed(runtime, "handle_in", started, None)
            return self._crashed(socket, runtime, Failure())
        if timed:
            result = self._timed(runtime, "handle_in", started, result)
        return self._result(socket, runtime, run.ref, result)

    def run_handle_info(self, socket: SocketHandle, run: RunHandleInfo) -> Effects:
        """
        Run C{handle_info} for an info that fell due.
        """
        runtime = socket.channels.get(run.channel)
        if runtime is None:
            return socket.session.crashed(run.channel)
        timed = self._events.timing
        started = perf_counter_ns() if timed else 0
        try:
            result = settle(runtime.channel.handle_info(run.message, runtime.context()))
        except Exception:
            if timed:
                self._timed(runtime, "handle_info", started, None)
            return self._crashed(socket, runtime, Failure())
        if timed:
            result = self._timed(runtime, "handle_info", started, result)
        return self._result(socket, runtime, None, result)

    def handle_push(self, socket: SocketHandle, channel: int, message: Message) -> None:
        """
        The inbound fast path (L{Session.accept_push}): run C{handle_in}
        for a client push and, when it answers at once with a L{Reply} or
        L{NoReply} and nothing waits, write the reply without effects.
        """
        runtime = socket.channels[channel]
        ref = message.ref
        events = self._events
        timed = events.timing
        started = perf_counter_ns() if timed else 0
        try:
            result = settle(
                runtime.channel.handle_in(
                    message.event, message.payload, runtime.context(ref)
                )
            )
        except Exception:
            if timed:
                self._timed(runtime, "handle_in", started, None)
            self._perform(socket, self._crashed(socket, runtime, Failure()))
            return
        if timed:
            if type(result) in _READY or not isinstance(result, Deferred):
                # not _pending(result) and Telemetry.handler_took, inline:
                # this is every push's path
                elapsed = perf_counter_ns() - started
                durations = events.durations
                if durations is not None:
                    durations.counts[elapsed.bit_length()] += 1
                    durations.total_ns += elapsed
                if events.handler_observers:
                    events.tell_handler_observers(
                        runtime.route, "handle_in", elapsed / 1e9
                    )
            else:
                result = self._timed(runtime, "handle_in", started, result)
        if type(result) is Reply:
            if ref is not None and socket.session.finish_quietly(channel):
                runtime.assigns = result.assigns
                socket.reply(
                    runtime.join_ref, ref, runtime.topic, result.status, result.payload
                )
                return
        elif type(result) is NoReply:
            if socket.session.finish_quietly(channel):
                runtime.assigns = result.assigns
                return
        effects = self._result(socket, runtime, ref, result)
        if effects:
            self._perform(socket, effects)

    def _join_result(
        self, socket: SocketHandle, runtime: ChannelRuntime, result: object
    ) -> Effects:
        session = socket.session
        if isinstance(result, JoinOk):
            runtime.assigns = result.assigns
            runtime.joined = True
            if self._events.observed(telemetry.ChannelJoined):
                self._events.emit(
                    telemetry.ChannelJoined(
                        socket.socket_id, runtime.topic, runtime.route
                    )
                )
            return session.joined(runtime.channel_id, result.reply)
        if isinstance(result, JoinError):
            self._join_failed(socket, runtime, crashed=False)
            return session.join_refused(runtime.channel_id, result.payload)
        return self._join_crashed(
            socket,
            runtime,
            Failure(TypeError(f"join returned {result!r}, not JoinOk or JoinError")),
        )

    def _join_crashed(
        self, socket: SocketHandle, runtime: ChannelRuntime, failure: Failure
    ) -> Effects:
        self.log.failure(
            "The join of socket {socket_id} to {topic} crashed.",
            failure,
            socket_id=socket.socket_id,
            topic=runtime.topic,
        )
        self._join_failed(socket, runtime, crashed=True)
        return socket.session.join_crashed(runtime.channel_id)

    def _join_failed(
        self, socket: SocketHandle, runtime: ChannelRuntime, crashed: bool
    ) -> None:
        if self._events.observed(telemetry.JoinFailed):
            self._events.emit(
                telemetry.JoinFailed(
                    socket.socket_id, runtime.topic, runtime.route, crashed
                )
            )

    def _result(
        self, socket: SocketHandle, runtime: ChannelRuntime, ref: Any, result: object
    ) -> Effects:
        """
        The effects of a handler's result; an asynchronous result holds the
        socket's later messages and infos back until it is done, so replies
        keep their order and assigns are never updated by two callbacks at
        once.
        """
        if _pending(result):
            result.addCallbacks(
                lambda value: self._perform(
                    socket, self._handled(socket, runtime, ref, value)
                ),
                lambda failure: self._perform(
                    socket, self._crashed(socket, runtime, failure)
                ),
            )
            result.addErrback(self._performing_failed)
            return _NONE
        return self._handled(socket, runtime, ref, result)

    def _handled(
        self, socket: SocketHandle, runtime: ChannelRuntime, ref: Any, result: object
    ) -> Effects:
        if not isinstance(result, _RESULTS):
            return self._crashed(
                socket,
                runtime,
                Failure(
                    TypeError(
                        f"a handler returned {result!r}, not NoReply, Reply, "
                        "Push or Stop"
                    )
                ),
            )
        if not isinstance(result, Stop):
            runtime.assigns = result.assigns
            if ref is None and isinstance(result, Reply):
                self.log.warn(
                    "A Reply from handle_info on {topic} has no push to answer; "
                    "use ctx.push or ctx.reply(ref, ...).",
                    topic=runtime.topic,
                )
        return socket.session.handled(runtime.channel_id, ref, result)

    def _crashed(
        self, socket: SocketHandle, runtime: ChannelRuntime, failure: Failure
    ) -> Effects:
        """
        A callback raised: this channel alone ends with C{phx_error}; the
        socket and its other channels go on.
        """
        self.log.failure(
            "Channel {topic} of socket {socket_id} crashed.",
            failure,
            socket_id=socket.socket_id,
            topic=runtime.topic,
        )
        if self._events.observed(telemetry.ChannelCrashed):
            self._events.emit(
                telemetry.ChannelCrashed(socket.socket_id, runtime.topic, runtime.route)
            )
        return socket.session.crashed(runtime.channel_id)

    def _performing_failed(self, failure: Failure) -> None:
        self.log.failure("Performing a callback's effects failed.", failure)
