"""
Telemetry: what happens inside a node, as events application code can
observe, in the spirit of Phoenix's C{:telemetry}.  Beryl's own metrics
(L{beryl.metrics}) are one observer among others::

    def log_crashes(event: telemetry.ChannelCrashed) -> None:
        print("crashed:", event.topic)

    app = App().channel("room:*", room).on_event(telemetry.ChannelCrashed, log_crashes)

An event is built only when something observes its kind, so an unobserved
kind costs one dictionary lookup.  Observers run on the reactor thread, in
the order they were added; one that raises is logged and the others still
run.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar, Union

import attrs
from twisted.logger import Logger

__all__ = [
    "ChannelCrashed",
    "ChannelJoined",
    "ChannelLeft",
    "Durations",
    "Event",
    "HandlerFinished",
    "HandlerTiming",
    "JoinFailed",
    "PresenceChanged",
    "SocketClosed",
    "SocketConnected",
    "Telemetry",
]


@attrs.frozen
class SocketConnected:
    """
    A client socket was accepted and opened.

    @ivar transport: C{"websocket"}, C{"longpoll"} or C{"bridge"}.
    """

    socket_id: str
    transport: str


@attrs.frozen
class SocketClosed:
    """
    A client socket is gone (closed by either side, or timed out).
    """

    socket_id: str
    transport: str


@attrs.frozen
class ChannelJoined:
    """
    A join succeeded.

    @ivar route: the route pattern that matched (C{"room:*"}), never the
        full topic, so it is safe as a metric label.
    """

    socket_id: str
    topic: str
    route: str


@attrs.frozen
class JoinFailed:
    """
    A join was refused by the channel (C{crashed} false) or its callback
    raised (C{crashed} true).
    """

    socket_id: str
    topic: str
    route: str
    crashed: bool


@attrs.frozen
class ChannelLeft:
    """
    A joined channel ended, for C{reason}: C{"leave"}, C{"closed"},
    C{"duplicate join"}, a L{beryl.Stop} reason, or C{"crash"}.
    """

    socket_id: str
    topic: str
    route: str
    reason: str


@attrs.frozen
class ChannelCrashed:
    """
    A callback of a joined channel raised; the channel ended with
    C{phx_error}.
    """

    socket_id: str
    topic: str
    route: str


@attrs.frozen
class HandlerFinished:
    """
    An application callback returned (or its Deferred fired).

    @ivar callback: C{"join"}, C{"handle_in"} or C{"handle_info"}.
    @ivar seconds: wall time from the call to its result.
    """

    route: str
    callback: str
    seconds: float


@attrs.frozen
class PresenceChanged:
    """
    A presence diff was published on a topic of this node.
    """

    topic: str
    joins: int
    leaves: int


Event = Union[
    SocketConnected,
    SocketClosed,
    ChannelJoined,
    JoinFailed,
    ChannelLeft,
    ChannelCrashed,
    HandlerFinished,
    PresenceChanged,
]

E = TypeVar("E", bound=Event)


HandlerTiming = Callable[[str, str, float], None]
"""
An observer of callback durations called with the fields of a
L{HandlerFinished} (C{route}, C{callback}, C{seconds}) and no event object:
the form Beryl's own metrics use, since a duration is measured for every
message.
"""


class Durations:
    """
    How long callbacks took, counted by powers of two: C{counts[i]} is how
    many took C{d} nanoseconds with C{d.bit_length() == i}, that is
    C{2 ** (i - 1) <= d < 2 ** i} (C{counts[0]}: no time at all).  Finding
    the bucket is one integer operation, so every message can be counted
    (this is what Beryl's own latency histogram reads); any histogram
    whose bounds are powers of two nanoseconds can be read from it.

    @ivar counts: 65 counts, by bit length of the duration in nanoseconds.
    @ivar total_ns: the sum of all durations, in nanoseconds.
    """

    __slots__ = ("counts", "total_ns")

    def __init__(self) -> None:
        self.counts = [0] * 65
        self.total_ns = 0

    def record(self, ns: int) -> None:
        """
        Count one duration of C{ns} nanoseconds.
        """
        ns = min(max(ns, 0), 2**64 - 1)
        self.counts[ns.bit_length()] += 1
        self.total_ns += ns

    def at_most(self, bits: int) -> int:
        """
        How many durations were shorter than C{2 ** bits} nanoseconds.
        """
        return sum(self.counts[: bits + 1])


class Telemetry:
    """
    The observers of one node's events, by event class.

    Emitters ask L{observed} before they build an event, so an event kind
    nobody watches is never built.  L{HandlerFinished}, which comes with
    every callback, reaches its observers through L{handler_observers}:
    an event object is built only for observers that asked for one.  The
    cheapest way to watch callback durations is L{durations}, counts that
    are filled in place without a call per message.

    @ivar handler_observers: the L{HandlerTiming} observers of callback
        durations (replaced, never mutated).
    @ivar durations: the callback durations counted so far, once
        L{measure_durations} asked for them; C{None} before.
    @ivar timing: whether callback durations are measured at all (an
        observer or L{durations} wants them).
    """

    log = Logger()

    def __init__(self) -> None:
        self._observers: dict[type, tuple[Callable[[Any], None], ...]] = {}
        self.handler_observers: tuple[HandlerTiming, ...] = ()
        self.durations: Durations | None = None
        self.timing = False

    def measure_durations(self) -> Durations:
        """
        Count every callback's duration in L{durations} from now on.

        @return: L{durations}, shared by everyone who asks.
        """
        if self.durations is None:
            self.durations = Durations()
            self.timing = True
        return self.durations

    def on(self, kind: type[E], observer: Callable[[E], None]) -> Callable[[], None]:
        """
        Call C{observer} with every event of class C{kind}.

        @return: a function that stops the observation.
        """
        if kind is HandlerFinished:

            def timing(route: str, callback: str, seconds: float) -> None:
                observer(HandlerFinished(route, callback, seconds))  # type: ignore[arg-type]

            return self.on_handler_finished(timing)
        self._observers[kind] = self._observers.get(kind, ()) + (observer,)

        def stop() -> None:
            rest = tuple(o for o in self._observers.get(kind, ()) if o is not observer)
            if rest:
                self._observers[kind] = rest
            else:
                self._observers.pop(kind, None)

        return stop

    def on_handler_finished(self, observer: HandlerTiming) -> Callable[[], None]:
        """
        Call C{observer(route, callback, seconds)} for every callback that
        finishes, without building a L{HandlerFinished}.

        @return: a function that stops the observation.
        """
        self.handler_observers += (observer,)
        self.timing = True

        def stop() -> None:
            self.handler_observers = tuple(
                o for o in self.handler_observers if o is not observer
            )
            self.timing = bool(self.handler_observers) or self.durations is not None

        return stop

    def observed(self, kind: type) -> bool:
        """
        Whether anything observes events of class C{kind}.
        """
        if kind is HandlerFinished:
            return bool(self.handler_observers)
        return kind in self._observers

    def emit(self, event: Event) -> None:
        """
        Hand C{event} to the observers of its class.  An observer that
        raises is logged; the rest still see the event.
        """
        if type(event) is HandlerFinished:
            self.handler_took(event.route, event.callback, round(event.seconds * 1e9))
            return
        for observer in self._observers.get(type(event), ()):
            try:
                observer(event)
            except Exception:
                self.log.failure(
                    "A telemetry observer of {kind} raised.",
                    kind=type(event).__name__,
                )

    def handler_took(self, route: str, callback: str, ns: int) -> None:
        """
        C{callback} of a channel of C{route} took C{ns} nanoseconds: count it
        in L{durations} and tell the observers of callback durations.
        """
        if self.durations is not None:
            self.durations.record(ns)
        if self.handler_observers:
            self.tell_handler_observers(route, callback, ns / 1e9)

    def tell_handler_observers(self, route: str, callback: str, seconds: float) -> None:
        """
        Tell the observers of callback durations (only: not L{durations})
        that C{callback} of a channel of C{route} took C{seconds}.
        """
        for observer in self.handler_observers:
            try:
                observer(route, callback, seconds)
            except Exception:
                self.log.failure("A telemetry observer of HandlerFinished raised.")
