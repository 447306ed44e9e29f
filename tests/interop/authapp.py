"""
A small application for the interop suite's auth-token tests: its connect
hook accepts a socket only when the Phoenix 1.8 C{authToken} (sent as the
C{base64url.bearer.phx.} subprotocol) is C{secret-token}.

    twistd -n beryl --app tests.interop.authapp:app
"""

from __future__ import annotations

from typing import Any, Mapping

from beryl.app import App, ConnectError, ConnectInfo, ConnectOk, ConnectResult
from beryl.channel import (
    Channel,
    HandleResult,
    JoinContext,
    JoinOk,
    JoinResult,
    Reply,
    SocketContext,
)
from beryl.wire import Payload

__all__ = ["app"]

SECRET = "secret-token"


def connect(params: Mapping[str, Any], info: ConnectInfo) -> ConnectResult:
    """
    Accept only the right token, and tell channels who it stands for.
    """
    if info.auth_token != SECRET:
        return ConnectError(403)
    return ConnectOk({"user": "token-holder"})


def join_private(topic: str, payload: Payload, ctx: JoinContext) -> JoinResult[None]:
    """
    Every join of an accepted socket succeeds; the reply shows what the
    connect hook assigned.
    """
    return JoinOk(None, reply={"socket_user": ctx.socket_assigns["user"]})


def handle_in(
    event: str, payload: Payload, ctx: SocketContext[None]
) -> HandleResult[None]:
    """
    Echo everything back.
    """
    return Reply("ok", payload, None)


app = App(connect=connect).channel(
    "private:*", Channel.create(join_private).with_handle_in(handle_in)
)
