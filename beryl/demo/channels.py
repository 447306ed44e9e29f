"""
The demo's channels.

C{room:*} is a chat room with presence: joining needs C{{"user": name}};
C{new_msg} is broadcast to everyone, C{typing} to everyone but the sender,
C{ping} echoes its payload.  C{feed:*} is the same without presence and
without the join check: a broadcast-only feed for dashboards and fan-out
benchmarks.
"""

from __future__ import annotations

import time

import attrs

from beryl.app import App
from beryl.channel import (
    Channel,
    HandleResult,
    InfoResult,
    JoinContext,
    JoinError,
    JoinOk,
    JoinResult,
    NoReply,
    Reply,
    SocketContext,
)
from beryl.wire import Payload

__all__ = ["demo_app", "feed_channel", "room_channel"]

AFTER_JOIN = "after_join"


@attrs.frozen
class Member:
    """
    A joined socket's assigns: the user it joined as (null on feeds).
    """

    user: str | None


def join_room(topic: str, payload: Payload, ctx: JoinContext) -> JoinResult[Member]:
    """
    Accept a join that names a user, then track it once the reply is out.
    """
    user = payload.get("user") if isinstance(payload, dict) else None
    if not isinstance(user, str) or not user:
        return JoinError({"reason": "user required"})
    ctx.send_info(AFTER_JOIN)
    return JoinOk(Member(user), reply={})


def join_feed(topic: str, payload: Payload, ctx: JoinContext) -> JoinResult[Member]:
    """
    Accept every join; the optional C{user} names the sender of messages.
    """
    user = payload.get("user") if isinstance(payload, dict) else None
    return JoinOk(Member(user if isinstance(user, str) else None), reply={})


def handle_in(
    event: str, payload: Payload, ctx: SocketContext[Member]
) -> HandleResult[Member]:
    """
    C{new_msg}, C{typing} and C{ping}; anything else is answered with an
    error naming the event.
    """
    member = ctx.assigns
    if event == "new_msg":
        body = payload.get("body") if isinstance(payload, dict) else None
        if not isinstance(body, str):
            return Reply("error", {"reason": "body must be a string"}, member)
        ctx.broadcast("new_msg", {"user": member.user, "body": body})
        return Reply("ok", {}, member)
    if event == "typing":
        ctx.broadcast_from("typing", {"user": member.user})
        return NoReply(member)
    if event == "ping":
        return Reply("ok", payload, member)
    return Reply("error", {"reason": f"unknown event {event[:100]!r}"}, member)


def room_info(message: object, ctx: SocketContext[Member]) -> InfoResult[Member]:
    """
    After the join reply, Phoenix's way: track the newcomer, then send it
    the room's presence, itself included (everyone else sees the join as a
    diff).
    """
    member = ctx.assigns
    if message == AFTER_JOIN and member.user is not None:
        ctx.track(member.user, {"online_at": int(time.time() * 1000)})
        ctx.push("presence_state", ctx.presence_list())
    return NoReply(member)


room_channel = (
    Channel.create(join_room).with_handle_in(handle_in).with_handle_info(room_info)
)
feed_channel = Channel.create(join_feed).with_handle_in(handle_in)


def demo_app() -> App:
    """
    A fresh demo application.
    """
    return App().channel("room:*", room_channel).channel("feed:*", feed_channel)
