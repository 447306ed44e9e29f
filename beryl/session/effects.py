"""
What a L{beryl.session.state.Session} asks its interpreter (the
coordinator) to do: frozen values, performed in the order they come.

A channel instance is named by an C{int} the session gives each join; the
interpreter keeps its own per-channel state (assigns, timers, the
application's callbacks) under that number.
"""

from __future__ import annotations

from typing import Any, Union

import attrs

from beryl.wire import Payload, PresenceMeta

__all__ = [
    "CLOSE_GOING_AWAY",
    "CLOSE_INTERNAL_ERROR",
    "CLOSE_INVALID_DATA",
    "CLOSE_POLICY",
    "CloseSocket",
    "Effect",
    "EndChannel",
    "RunHandleIn",
    "RunHandleInfo",
    "RunJoin",
    "ScheduleInfo",
    "SendClose",
    "SendError",
    "SendPush",
    "SendReply",
    "Subscribe",
    "Track",
    "Unsubscribe",
    "UntrackAll",
    "UpdatePresence",
]

CLOSE_GOING_AWAY = 1001
"""WebSocket close code: the server goes away (shutdown, idle); reconnect."""
CLOSE_INVALID_DATA = 1007
"""WebSocket close code: a frame that cannot be decoded."""
CLOSE_POLICY = 1008
"""WebSocket close code: the client broke a limit or was refused."""
CLOSE_INTERNAL_ERROR = 1011
"""WebSocket close code: the server failed (writing to the socket raised)."""


@attrs.frozen
class SendReply:
    """
    Send a C{phx_reply} with C{status} and C{response}.
    """

    join_ref: Any
    ref: Any
    topic: str
    status: str
    response: Payload


@attrs.frozen
class SendPush:
    """
    Push C{event} to a joined channel's client (join_ref set, ref null).
    """

    join_ref: Any
    topic: str
    event: str
    payload: Payload


@attrs.frozen
class SendClose:
    """
    Send C{phx_close}: the channel with C{join_ref} ended gracefully (the
    client does not rejoin).  Both refs are the join_ref, as Phoenix sends
    them.
    """

    join_ref: Any
    topic: str


@attrs.frozen
class SendError:
    """
    Send C{phx_error}: the channel with C{join_ref} crashed (the client
    rejoins).
    """

    join_ref: Any
    topic: str


@attrs.frozen
class RunJoin:
    """
    Run the join callback of C{definition} (what the router matched for
    C{topic}) and report its result with C{Session.joined},
    C{Session.join_refused} or C{Session.join_crashed}.  The session holds
    every later input of the socket back until then.
    """

    channel: int
    topic: str
    join_ref: Any
    ref: Any
    payload: Payload
    definition: Any


@attrs.frozen
class RunHandleIn:
    """
    Run the channel's C{handle_in} for a client push; report its result with
    C{Session.handled} or C{Session.crashed}.
    """

    channel: int
    event: str
    payload: Payload
    ref: Any


@attrs.frozen
class RunHandleInfo:
    """
    Run the channel's C{handle_info}; report its result with
    C{Session.handled} (with no ref) or C{Session.crashed}.
    """

    channel: int
    message: object


@attrs.frozen
class ScheduleInfo:
    """
    Deliver C{message} to the channel's C{handle_info} after C{delay}
    seconds, through C{Session.info_due}.
    """

    channel: int
    delay: float
    message: object


@attrs.frozen
class Subscribe:
    """
    Add the socket to the fan-out of C{topic} (before the join reply, so
    no broadcast falls in a gap).
    """

    channel: int
    topic: str


@attrs.frozen
class Unsubscribe:
    """
    Remove the socket from the fan-out of C{topic}.
    """

    channel: int
    topic: str


@attrs.frozen
class Track:
    """
    Track the channel's presence under C{key}.
    """

    channel: int
    topic: str
    key: str
    meta: PresenceMeta


@attrs.frozen
class UpdatePresence:
    """
    Replace the meta the channel tracks under C{key}.
    """

    channel: int
    topic: str
    key: str
    meta: PresenceMeta


@attrs.frozen
class UntrackAll:
    """
    Remove every presence the channel tracked.
    """

    channel: int


@attrs.frozen
class EndChannel:
    """
    The channel is over: cancel its timers and forget it, and run its
    C{terminate} callback with C{reason} when C{terminate} is set (a
    refused or crashed join never started, so it is not terminated).
    """

    channel: int
    reason: str
    terminate: bool = True


@attrs.frozen
class CloseSocket:
    """
    Close the connection with a WebSocket close code and forget the
    socket.  Always the last effect: nothing follows it.
    """

    code: int
    reason: str


Effect = Union[
    SendReply,
    SendPush,
    SendClose,
    SendError,
    RunJoin,
    RunHandleIn,
    RunHandleInfo,
    ScheduleInfo,
    Subscribe,
    Unsubscribe,
    Track,
    UpdatePresence,
    UntrackAll,
    EndChannel,
    CloseSocket,
]
"""Anything a session asks for."""
