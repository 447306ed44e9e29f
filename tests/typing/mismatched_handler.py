"""
A deliberate type error: a handler written for one channel's assigns
attached to a channel with other assigns.  tests/test_typing.py runs mypy
on this file and expects exactly this error.
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


@attrs.frozen
class Game:
    score: int


def join(topic: str, payload: Payload, ctx: JoinContext) -> JoinResult[Room]:
    return JoinOk(Room("alice"))


def handle_game(event: str, payload: Payload, ctx: SocketContext[Game]) -> HandleResult[Game]:
    return NoReply(ctx.assigns)


room = Channel.create(join).with_handle_in(handle_game)
