"""
Tutorial step 1: the smallest channel.

    twistd -n beryl --app step1_ping:app     # from this directory

Any client may join C{room:<name>}; C{ping} is answered with its payload.
"""

from beryl import (
    App,
    Channel,
    HandleResult,
    JoinContext,
    JoinOk,
    JoinResult,
    Payload,
    Reply,
    SocketContext,
)


def join(topic: str, payload: Payload, ctx: JoinContext) -> JoinResult[None]:
    return JoinOk(None)


def handle_in(
    event: str, payload: Payload, ctx: SocketContext[None]
) -> HandleResult[None]:
    if event == "ping":
        return Reply("ok", payload, None)
    return Reply("error", {"reason": f"unknown event {event}"}, None)


room = Channel.create(join).with_handle_in(handle_in)
app = App().channel("room:*", room)
