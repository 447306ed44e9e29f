"""
A small application for C{twistd beryl --app}:

    PYTHONPATH=docs/examples twistd -n beryl --app chat_app:app

Sockets must connect with a C{token} parameter naming the user
(C{?token=alice}); channel C{chat:<room>} keeps a per-channel message
count in its typed assigns and answers C{count}.
"""

from __future__ import annotations

from typing import Any, Mapping

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
    NoReply,
    Payload,
    Reply,
    SocketContext,
    extract_topic_id,
)


@attrs.frozen
class Chat:
    user: str
    room: str
    sent: int = 0


def connect(params: Mapping[str, Any], info: ConnectInfo) -> ConnectOk | ConnectError:
    token = params.get("token")
    if not isinstance(token, str) or not token:
        return ConnectError(403)
    return ConnectOk({"user": token})


def join(topic: str, payload: Payload, ctx: JoinContext) -> JoinResult[Chat]:
    room = extract_topic_id("chat:*", topic)
    return JoinOk(
        Chat(user=ctx.socket_assigns["user"], room=room), reply={"room": room}
    )


def handle_in(
    event: str, payload: Payload, ctx: SocketContext[Chat]
) -> HandleResult[Chat]:
    chat = ctx.assigns
    if (
        event == "say"
        and isinstance(payload, dict)
        and isinstance(payload.get("text"), str)
    ):
        ctx.broadcast("said", {"user": chat.user, "text": payload["text"]})
        return NoReply(attrs.evolve(chat, sent=chat.sent + 1))
    if event == "count":
        return Reply("ok", {"sent": chat.sent}, chat)
    return Reply("error", {"reason": "unknown event"}, chat)


app = App(connect=connect).channel(
    "chat:*", Channel.create(join).with_handle_in(handle_in)
)
