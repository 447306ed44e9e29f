"""
An application: the channel routes of a socket endpoint and its connect
hook (Phoenix's C{UserSocket}).  This is what C{twistd beryl --app
package.module:attribute} loads.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Mapping, Union

import attrs
from twisted.internet.defer import Deferred

from beryl.channel import Channel
from beryl.telemetry import E, Telemetry
from beryl.topics import Router

__all__ = ["App", "ConnectError", "ConnectInfo", "ConnectOk"]


@attrs.frozen
class ConnectInfo:
    """
    What the transport knows about a connecting client.

    @ivar auth_token: the Phoenix 1.8 C{authToken}, decoded from the
        C{base64url.bearer.phx.} subprotocol: the very string the client
        gave phoenix.js, or C{None}.
    @ivar origin: the C{Origin} header, or C{None}.
    @ivar peer: the client's address as C{"host:port"}.
    @ivar headers: the request headers, names in lower case.
    """

    auth_token: str | None = None
    origin: str | None = None
    peer: str = ""
    headers: Mapping[str, str] = attrs.field(factory=dict)


@attrs.frozen
class ConnectOk:
    """
    Accept a socket; C{assigns} is socket-level data every channel sees as
    C{ctx.socket_assigns}.
    """

    assigns: Any = None


@attrs.frozen
class ConnectError:
    """
    Refuse a socket: the WebSocket handshake is answered with HTTP
    C{status} (403 unless told otherwise) and no upgrade happens.
    """

    status: int = 403


ConnectResult = Union[ConnectOk, ConnectError]
ConnectHook = Callable[
    [Mapping[str, Any], ConnectInfo],
    Union[ConnectResult, Deferred[ConnectResult], Awaitable[ConnectResult]],
]


def accept_all(params: Mapping[str, Any], info: ConnectInfo) -> ConnectResult:
    """
    The default connect hook: every socket is accepted.
    """
    return ConnectOk()


@attrs.define
class App:
    """
    Channel routes plus a connect hook::

        app = App().channel("room:*", room).channel("feed:*", feed)
    """

    connect: ConnectHook = accept_all
    router: Router[Channel[Any]] = attrs.field(factory=Router)
    startup: list[Callable[[Any], None]] = attrs.field(factory=list)
    telemetry: Telemetry = attrs.field(factory=Telemetry)

    def channel(self, pattern: str, channel: Channel[Any]) -> App:
        """
        Route topics matching C{pattern} (C{"room:lobby"} or C{"room:*"}) to
        C{channel}; the first registered match wins.  Returns this app.
        """
        self.router.add(pattern, channel)
        return self

    def on_start(self, callback: Callable[[Any], None]) -> App:
        """
        Call C{callback(coordinator)} when the node starts, so application
        code can broadcast, use groups or subscribe to PubSub (the
        coordinator's C{pubsub}) without a channel.  Returns this app.
        """
        self.startup.append(callback)
        return self

    def on_event(self, kind: type[E], observer: Callable[[E], None]) -> App:
        """
        Call C{observer} with every telemetry event of class C{kind} (see
        L{beryl.telemetry}: sockets connecting and closing, joins, leaves,
        crashes, handler durations, presence diffs).  Returns this app.
        """
        self.telemetry.on(kind, observer)
        return self
