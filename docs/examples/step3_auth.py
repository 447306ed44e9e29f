"""
Tutorial step 3: who is connecting.  The connect hook runs once per
socket, before the WebSocket upgrade, and refuses strangers with 403.

    twistd -n beryl --app step3_auth:app     # from this directory

A client proves who it is with phoenix.js 1.8's C{authToken} (or, for
older clients, a C{token} connect parameter); channels read the user from
C{ctx.socket_assigns} instead of trusting the join payload.
"""

from collections.abc import Mapping
from typing import Any

import attrs

from beryl import (
    App,
    Channel,
    ConnectError,
    ConnectInfo,
    ConnectOk,
    HandleResult,
    JoinContext,
    JoinOk,
    JoinResult,
    Payload,
    Reply,
    SocketContext,
)

# Your real check goes here (a database, a signed token...).
TOKENS = {"alice-secret": "alice", "bob-secret": "bob"}


def connect(params: Mapping[str, Any], info: ConnectInfo) -> ConnectOk | ConnectError:
    token = info.auth_token or params.get("token")  # both are str
    user = TOKENS.get(token) if isinstance(token, str) else None
    if user is None:
        return ConnectError(403)
    return ConnectOk({"user": user})


@attrs.frozen
class Member:
    user: str


def join(topic: str, payload: Payload, ctx: JoinContext) -> JoinResult[Member]:
    return JoinOk(
        Member(ctx.socket_assigns["user"]), reply={"user": ctx.socket_assigns["user"]}
    )


def handle_in(
    event: str, payload: Payload, ctx: SocketContext[Member]
) -> HandleResult[Member]:
    body = payload.get("body") if isinstance(payload, dict) else None
    if event == "new_msg" and isinstance(body, str):
        ctx.broadcast("new_msg", {"user": ctx.assigns.user, "body": body})
        return Reply("ok", {}, ctx.assigns)
    return Reply("error", {"reason": "expected new_msg with a body"}, ctx.assigns)


room = Channel.create(join).with_handle_in(handle_in)
app = App(connect=connect).channel("room:*", room)
