"""
The demo application behind a "proxy" that blocks WebSockets: its connect
hook refuses every WebSocket upgrade and accepts everything else, so
phoenix.js 1.8's C{longPollFallbackMs} has to fall back to long-poll.

    twistd -n beryl --app tests.interop.longpollapp:app
"""

from __future__ import annotations

from typing import Any, Mapping

from beryl.app import App, ConnectError, ConnectInfo, ConnectOk, ConnectResult
from beryl.demo import demo_app

__all__ = ["app"]


def refuse_websockets(params: Mapping[str, Any], info: ConnectInfo) -> ConnectResult:
    """
    Refuse WebSocket upgrades (HTTP 403), accept long-poll sessions.
    """
    if info.headers.get("upgrade", "").lower() == "websocket":
        return ConnectError(403)
    return ConnectOk()


def make_app() -> App:
    """
    The demo's channels with the refusing connect hook.
    """
    app = demo_app()
    app.connect = refuse_websockets
    return app


app = make_app()
