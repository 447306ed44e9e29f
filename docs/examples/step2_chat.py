"""
Tutorial step 2: a chat room with typed assigns.

    twistd -n beryl --app step2_chat:app     # from this directory

Joining C{room:<name>} needs C{{"user": name}}; C{new_msg} is broadcast to
everyone in the room, C{bye} ends the channel, and C{terminate} sees every
ending.
"""

import attrs
from twisted.logger import Logger

from beryl import (
    App,
    Channel,
    HandleResult,
    JoinContext,
    JoinError,
    JoinOk,
    JoinResult,
    Payload,
    Reply,
    SocketContext,
    Stop,
)

log = Logger()


@attrs.frozen
class Member:
    user: str
    sent: int = 0


def join(topic: str, payload: Payload, ctx: JoinContext) -> JoinResult[Member]:
    user = payload.get("user") if isinstance(payload, dict) else None
    if not isinstance(user, str) or not user:
        return JoinError({"reason": "user required"})
    return JoinOk(Member(user))


def handle_in(
    event: str, payload: Payload, ctx: SocketContext[Member]
) -> HandleResult[Member]:
    member = ctx.assigns
    body = payload.get("body") if isinstance(payload, dict) else None
    if event == "new_msg" and isinstance(body, str):
        ctx.broadcast("new_msg", {"user": member.user, "body": body})
        return Reply(
            "ok", {"sent": member.sent + 1}, attrs.evolve(member, sent=member.sent + 1)
        )
    if event == "bye":
        return Stop("normal", reply=("ok", {"sent": member.sent}))
    return Reply("error", {"reason": "expected new_msg with a body, or bye"}, member)


def terminate(reason: str, ctx: SocketContext[Member]) -> None:
    log.info(
        "{user} left {topic}: {reason}",
        user=ctx.assigns.user,
        topic=ctx.topic,
        reason=reason,
    )


room = Channel.create(join).with_handle_in(handle_in).with_terminate(terminate)
app = App().channel("room:*", room)
