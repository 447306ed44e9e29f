"""
The demo application behind a "proxy" that blocks WebSockets: its connect
hook refuses every WebSocket upgrade and accepts everything else, so
phoenix.js 1.8's C{longPollFallbackMs} has to fall back to long-poll.
Its C{bin:*} channel answers a binary push with the bytes it got, as JSON
(long-poll clients cannot receive binary).

    twistd -n beryl --app tests.interop.longpollapp:app
    twistd -n beryl --app tests.interop.longpollapp:open_app   (no refusal)
"""

from __future__ import annotations

from typing import Any, Mapping

from beryl.app import App, ConnectError, ConnectInfo, ConnectOk, ConnectResult
from beryl.channel import Channel, JoinContext, JoinOk, Reply, SocketContext
from beryl.demo import demo_app
from beryl.wire import Binary, Payload

__all__ = ["app", "open_app"]


def refuse_websockets(params: Mapping[str, Any], info: ConnectInfo) -> ConnectResult:
    """
    Refuse WebSocket upgrades (HTTP 403), accept long-poll sessions.
    """
    if info.headers.get("upgrade", "").lower() == "websocket":
        return ConnectError(403)
    return ConnectOk()


def join_bin(topic: str, payload: Payload, ctx: JoinContext) -> JoinOk[None]:
    return JoinOk(None)


def describe(event: str, payload: Payload, ctx: SocketContext[None]) -> Reply[None]:
    """
    Reply with the bytes of a binary push (or say it was not binary).
    """
    if isinstance(payload, Binary):
        return Reply("ok", {"bytes": list(payload.data)}, None)
    return Reply("error", {"reason": "not binary"}, None)


def make_app(refuse: bool) -> App:
    """
    The demo's channels and C{bin:*}, with the refusing connect hook when
    C{refuse}.
    """
    app = demo_app().channel("bin:*", Channel.create(join_bin).with_handle_in(describe))
    if refuse:
        app.connect = refuse_websockets
    return app


app = make_app(refuse=True)
open_app = make_app(refuse=False)
"""The same without refusing WebSockets."""
