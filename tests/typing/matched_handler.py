"""
The well-typed twin of mismatched_handler.py: mypy accepts it.
"""

import attrs

from beryl import (
    Channel,
    HandleResult,
    JoinContext,
    JoinOk,
    JoinResult,
    NoReply,
    Payload,
    SocketContext,
)


@attrs.frozen
class Room:
    user: str


def join(topic: str, payload: Payload, ctx: JoinContext) -> JoinResult[Room]:
    return JoinOk(Room("alice"))


def handle_room(event: str, payload: Payload, ctx: SocketContext[Room]) -> HandleResult[Room]:
    return NoReply(ctx.assigns)


room = Channel.create(join).with_handle_in(handle_room)
