"""
Tutorial step 4: who is online, with Phoenix Presence.

    twistd -n beryl --app step4_presence:app     # from this directory

After the join reply the channel tracks its user, then pushes the room's
C{presence_state} (the user included, as in Phoenix); every change reaches
the room as a C{presence_diff}, which phoenix.js's C{Presence} applies.
The presence leaves by itself when the channel ends.  Run two nodes with
C{--cluster-port} and C{--peers} (step 5) and nothing here changes.
"""

import time
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
    InfoResult,
    JoinContext,
    JoinOk,
    JoinResult,
    NoReply,
    Payload,
    Reply,
    SocketContext,
)

TOKENS = {"alice-secret": "alice", "bob-secret": "bob", "carol-secret": "carol"}
AFTER_JOIN = "after_join"


def connect(params: Mapping[str, Any], info: ConnectInfo) -> ConnectOk | ConnectError:
    token = info.auth_token or params.get("token")
    user = TOKENS.get(token) if isinstance(token, str) else None
    return ConnectError(403) if user is None else ConnectOk({"user": user})


@attrs.frozen
class Member:
    user: str


def join(topic: str, payload: Payload, ctx: JoinContext) -> JoinResult[Member]:
    ctx.send_info(AFTER_JOIN)  # handled after the join reply is out
    return JoinOk(Member(ctx.socket_assigns["user"]))


def handle_info(message: object, ctx: SocketContext[Member]) -> InfoResult[Member]:
    if message == AFTER_JOIN:
        ctx.track(ctx.assigns.user, {"online_at": int(time.time() * 1000)})
        ctx.push("presence_state", ctx.presence_list())
    return NoReply(ctx.assigns)


def handle_in(
    event: str, payload: Payload, ctx: SocketContext[Member]
) -> HandleResult[Member]:
    body = payload.get("body") if isinstance(payload, dict) else None
    if event == "new_msg" and isinstance(body, str):
        ctx.broadcast("new_msg", {"user": ctx.assigns.user, "body": body})
        return Reply("ok", {}, ctx.assigns)
    if event == "status" and isinstance(body, str):
        ctx.update_presence(
            ctx.assigns.user, {"online_at": int(time.time() * 1000), "status": body}
        )
        return Reply("ok", {}, ctx.assigns)
    return Reply(
        "error", {"reason": "expected new_msg or status with a body"}, ctx.assigns
    )


room = Channel.create(join).with_handle_in(handle_in).with_handle_info(handle_info)
app = App(connect=connect).channel("room:*", room)
