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


class Telemetry:
    """
    The observers of one node's events, by event class.

    Emitters ask L{observed} before they build an event, so an event kind
    nobody watches is never built.  L{HandlerFinished}, which comes with
    every callback, reaches its observers through L{handler_observers}:
    an event object is built only for observers that asked for one.

    @ivar handler_observers: the L{HandlerTiming} observers of callback
        durations (replaced, never mutated).
    """

    log = Logger()

    def __init__(self) -> None:
        self._observers: dict[type, tuple[Callable[[Any], None], ...]] = {}
        self.handler_observers: tuple[HandlerTiming, ...] = ()

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

        def stop() -> None:
            self.handler_observers = tuple(
                o for o in self.handler_observers if o is not observer
            )

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
            self.handler_finished(event.route, event.callback, event.seconds)
            return
        for observer in self._observers.get(type(event), ()):
            try:
                observer(event)
            except Exception:
                self.log.failure(
                    "A telemetry observer of {kind} raised.",
                    kind=type(event).__name__,
                )

    def handler_finished(self, route: str, callback: str, seconds: float) -> None:
        """
        Tell the observers of callback durations that C{callback} of a
        channel of C{route} took C{seconds}.
        """
        for observer in self.handler_observers:
            try:
                observer(route, callback, seconds)
            except Exception:
                self.log.failure("A telemetry observer of HandlerFinished raised.")
