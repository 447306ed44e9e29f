"""
The channel session of one socket: a pure state machine.

A L{Session} takes what happens to a socket (a decoded inbound message, the
result of a channel callback, an info falling due, the connection closing)
and returns the L{effects<beryl.session.effects>} to perform, in order.  It
does no I/O, imports no reactor and runs no application code: the
coordinator interprets the effects, runs the callbacks and reports their
results back.

It owns the Phoenix channel rules (C{reference/phoenix-protocol.md} §5):

  - the dispatch order: heartbeat, join, duplicate join, leave, push,
    leave of an unjoined topic, unmatched topic;
  - join_ref checks: a message with a non-null join_ref other than the
    channel's is dropped silently;
  - the most channels one socket may join, and the longest topic;
  - a duplicate join ends the old channel, and the new join's reply is
    sent before the old join_ref's C{phx_close};
  - one callback at a time per socket: while a join or a handler is
    pending, later messages and infos wait in a queue of bounded length,
    so the join reply comes before anything else from that join;
  - a channel that stops gracefully gets C{phx_close}, one that fails
    C{phx_error}; no effect follows L{CloseSocket}.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable

import attrs

from beryl.channel import NoReply, Push, Reply, Stop
from beryl.session.effects import (
    CLOSE_INVALID_DATA,
    CLOSE_POLICY,
    CloseSocket,
    Effect,
    EndChannel,
    RunHandleIn,
    RunHandleInfo,
    RunJoin,
    ScheduleInfo,
    SendClose,
    SendError,
    SendPush,
    SendReply,
    Subscribe,
    Track,
    Unsubscribe,
    UntrackAll,
    UpdatePresence,
)
from beryl.wire import Message, Payload, PresenceMeta

__all__ = ["ChannelEnded", "Session"]

Effects = tuple[Effect, ...]

_NONE: Effects = ()
_OK_EMPTY: dict[str, Any] = {}
_UNMATCHED = {"reason": "unmatched topic"}
_TOO_MANY = {"reason": "too many channels joined"}
_JOIN_CRASHED = {"reason": "join crashed"}
# how much of an over-long topic an error reply echoes
_ECHOED_TOPIC = 100


class ChannelEnded(RuntimeError):
    """
    A callback that finished after its channel ended tried to act on it
    (track a presence, say).
    """


@attrs.define(eq=False)
class _Channel:
    """
    One channel instance of the socket: joining, then joined, then ended.
    """

    id: int
    topic: str
    join_ref: Any
    joined: bool = False
    tracked: bool = False
    # pushes and infos made during the join wait for its reply (made on
    # first use: most joins have none, and a socket's channels are kept)
    pending_pushes: list[tuple[str, Payload]] | None = None
    pending_infos: list[object] | None = None


@attrs.frozen
class _Join:
    """
    The join whose callback is running.
    """

    channel: _Channel
    ref: Any
    # the join_ref of the channel this join replaces, for its phx_close
    replaces: bool
    old_join_ref: Any


@attrs.frozen
class _Info:
    """
    An info that fell due while a callback was pending.
    """

    channel: int
    message: object


class Session:
    """
    The channels of one socket and the rules between them.

    @param match: the channel definition for a topic (what the router
        matched; carried by L{RunJoin}), or C{None} for an unmatched topic.
    @param max_channels: the most channels the socket may join.
    @param max_queued: the most messages the socket may send while a
        callback is pending; one more closes it with 1008.
    @param max_topic_bytes: the longest topic (in UTF-8 bytes) a message
        may name; a longer one gets an error reply and nothing else.

    @ivar busy: whether a callback (a L{RunJoin}, L{RunHandleIn} or
        L{RunHandleInfo}) is pending; its result must be reported before
        anything else is dispatched.
    @ivar closed: whether the socket is over; every input then returns
        nothing.
    """

    # One per socket: no per-instance dictionary.
    __slots__ = (
        "_match",
        "max_channels",
        "max_queued",
        "max_topic_bytes",
        "busy",
        "closed",
        "_topics",
        "_ids",
        "_join",
        "_queue",
        "_serial",
    )

    def __init__(
        self,
        match: Callable[[str], object | None],
        max_channels: int = 100,
        max_queued: int = 1000,
        max_topic_bytes: int = 1024,
    ) -> None:
        self._match = match
        self.max_channels = max_channels
        self.max_queued = max_queued
        self.max_topic_bytes = max_topic_bytes
        self.busy = False
        self.closed = False
        # joined channels by topic, and every live instance (joining too) by id
        self._topics: dict[str, _Channel] = {}
        self._ids: dict[int, _Channel] = {}
        self._join: _Join | None = None
        self._queue: deque[Message | _Info] | None = None
        self._serial = 0

    def joined_topics(self) -> list[str]:
        """
        The topics of the joined channels.
        """
        return list(self._topics)

    def channel(self, topic: str) -> int | None:
        """
        The number of the channel joined to C{topic}, if any.
        """
        entry = self._topics.get(topic)
        return None if entry is None else entry.id

    def queued(self) -> int:
        """
        How many client messages wait for the pending callback (infos that
        wait too count toward C{max_queued}, but are never refused).
        """
        return sum(type(item) is Message for item in self._queue or ())

    # Inputs from the transport

    def receive(self, message: Message) -> Effects:
        """
        One decoded inbound message.
        """
        if self.closed:
            return _NONE
        if self.busy:
            return self._hold(message)
        return self._dispatch(message)

    def accept_push(self, message: Message) -> int:
        """
        The fast path for the commonest message, a client push to a joined
        channel while nothing is pending: return that channel's number and
        mark its C{handle_in} pending, exactly as if L{receive} had returned
        C{(RunHandleIn(channel, event, payload, ref),)}.  Anything else
        returns C{0} and changes nothing; pass it to L{receive}.  (Effects
        are for the control plane: this path allocates none.)
        """
        if self.busy or self.closed:
            return 0
        event = message.event
        if event == "phx_join" or event == "phx_leave" or event == "heartbeat":
            return 0
        entry = self._topics.get(message.topic)
        if entry is None:
            return 0
        join_ref = message.join_ref
        if join_ref is not None and join_ref != entry.join_ref:
            return 0
        self.busy = True
        return entry.id

    def finish_quietly(self, channel: int) -> bool:
        """
        The fast path for a pending C{handle_in} that returned a L{Reply}
        or L{NoReply} while nothing else waits: when C{channel} is still
        joined and no input is queued, release the socket and return
        C{True}; the caller then sends the reply itself (with the
        channel's join_ref and topic), exactly as L{handled} would have
        asked.  Otherwise change nothing and return C{False}: use
        L{handled}.
        """
        if self._queue or channel not in self._ids:
            return False
        self._release()
        return True

    def bad_frame(self, reason: str) -> Effects:
        """
        An inbound frame could not be decoded: end every channel and close
        the socket with 1007.
        """
        if self.closed:
            return _NONE
        return self._close(CLOSE_INVALID_DATA, reason[:120])

    def limit_exceeded(self, reason: str) -> Effects:
        """
        The socket broke a limit that ends it (its message rate, long
        after being told): end every channel and close it with 1008.
        """
        if self.closed:
            return _NONE
        return self._close(CLOSE_POLICY, reason)

    def refuse(self, message: Message, response: Payload) -> SendReply:
        """
        An error reply to C{message} with C{response}, for a message that
        is refused before the channel rules apply (a limit); an over-long
        topic is echoed only in part.
        """
        return SendReply(
            message.join_ref, message.ref, self._echo(message.topic), "error", response
        )

    def closed_by_peer(self) -> Effects:
        """
        The connection is gone: end every channel (nothing is sent).
        """
        if self.closed:
            return _NONE
        self.closed = True
        self._queue = None
        effects: list[Effect] = []
        for channel in list(self._topics.values()):
            self._end(channel, "closed", True, effects)
        return tuple(effects)

    # Inputs from the channels' callbacks

    def joined(self, channel: int, reply: Payload) -> Effects:
        """
        The pending join of C{channel} was accepted; C{reply} is the join
        reply's response (an empty object when C{None}).
        """
        join = self._take_join(channel)
        entry = join.channel
        if entry.id not in self._ids:
            return _NONE
        effects: list[Effect] = []
        if self.closed:
            # Joined, but the socket went away meanwhile.
            self._end(entry, "closed", True, effects)
            return tuple(effects)
        entry.joined = True
        self._topics[entry.topic] = entry
        effects.append(Subscribe(entry.id, entry.topic))
        effects.append(
            SendReply(
                entry.join_ref,
                join.ref,
                entry.topic,
                "ok",
                _OK_EMPTY if reply is None else reply,
            )
        )
        if join.replaces:
            effects.append(SendClose(join.old_join_ref, entry.topic))
        if entry.pending_pushes is not None:
            for event, payload in entry.pending_pushes:
                effects.append(SendPush(entry.join_ref, entry.topic, event, payload))
            entry.pending_pushes = None
        if entry.pending_infos is not None:
            for message in entry.pending_infos:
                effects.append(ScheduleInfo(entry.id, 0, message))
            entry.pending_infos = None
        return self._resume(effects)

    def join_refused(self, channel: int, response: Payload) -> Effects:
        """
        The pending join of C{channel} was refused with C{response}.
        """
        return self._join_failed(channel, "refused", response)

    def join_crashed(self, channel: int) -> Effects:
        """
        The pending join of C{channel} raised or returned something that is
        not a join result.
        """
        return self._join_failed(channel, "join crashed", _JOIN_CRASHED)

    def handled(self, channel: int, ref: Any, result: object) -> Effects:
        """
        The pending C{handle_in} (C{ref} of the push) or C{handle_info}
        (C{ref} C{None}) of C{channel} returned C{result}, a L{NoReply},
        L{Reply}, L{Push} or L{Stop}.  A L{Reply} without a ref has nothing
        to answer and is dropped.
        """
        self._release()
        entry = self._ids.get(channel)
        if entry is None or isinstance(result, NoReply):
            effects: Effects = _NONE
        elif isinstance(result, Reply):
            effects = (
                _NONE
                if ref is None
                else (
                    SendReply(
                        entry.join_ref, ref, entry.topic, result.status, result.payload
                    ),
                )
            )
        elif isinstance(result, Push):
            effects = (
                SendPush(entry.join_ref, entry.topic, result.event, result.payload),
            )
        elif isinstance(result, Stop):
            stopping: list[Effect] = []
            if result.reply is not None and ref is not None:
                status, payload = result.reply
                stopping.append(
                    SendReply(entry.join_ref, ref, entry.topic, status, payload)
                )
            if result.graceful:
                stopping.append(SendClose(entry.join_ref, entry.topic))
            else:
                stopping.append(SendError(entry.join_ref, entry.topic))
            self._end(entry, result.reason, True, stopping)
            effects = tuple(stopping)
        else:
            return self._crash(entry)
        if self._queue:
            return effects + self._drain()
        return effects

    def crashed(self, channel: int) -> Effects:
        """
        The pending C{handle_in} or C{handle_info} of C{channel} raised or
        returned something that is not a result: that channel alone ends
        with C{phx_error}.
        """
        self._release()
        return self._crash(self._ids.get(channel))

    def info_due(self, channel: int, message: object) -> Effects:
        """
        An info for C{channel} fell due: run its C{handle_info} now, after
        the pending callback, or after the join reply.
        """
        entry = self._ids.get(channel)
        if entry is None or self.closed:
            return _NONE
        if not entry.joined:
            if entry.pending_infos is None:
                entry.pending_infos = []
            entry.pending_infos.append(message)
            return _NONE
        if self.busy:
            if self._queue is None:
                self._queue = deque()
            self._queue.append(_Info(channel, message))
            return _NONE
        self.busy = True
        return (RunHandleInfo(channel, message),)

    # Requests a channel makes through its context

    def push(self, channel: int, event: str, payload: Payload) -> Effects:
        """
        Push C{event} to the client of C{channel}; during the join it waits
        for the join reply, after the end it is dropped.
        """
        entry = self._ids.get(channel)
        if entry is None:
            return _NONE
        if not entry.joined:
            if entry.pending_pushes is None:
                entry.pending_pushes = []
            entry.pending_pushes.append((event, payload))
            return _NONE
        return (SendPush(entry.join_ref, entry.topic, event, payload),)

    def reply(self, channel: int, ref: Any, status: str, payload: Payload) -> Effects:
        """
        Answer the client push C{ref} of C{channel} (a late reply); dropped
        after the channel ended.
        """
        entry = self._ids.get(channel)
        if entry is None:
            return _NONE
        return (SendReply(entry.join_ref, ref, entry.topic, status, payload),)

    def track(self, channel: int, key: str, meta: PresenceMeta) -> Track:
        """
        Track C{channel}'s presence under C{key}; it is untracked when the
        channel ends.

        @raise ChannelEnded: when the channel has ended.
        """
        entry = self._alive(channel, "track")
        entry.tracked = True
        return Track(channel, entry.topic, key, meta)

    def update_presence(
        self, channel: int, key: str, meta: PresenceMeta
    ) -> UpdatePresence:
        """
        Replace the meta C{channel} tracks under C{key}.

        @raise ChannelEnded: when the channel has ended.
        """
        entry = self._alive(channel, "update_presence")
        entry.tracked = True
        return UpdatePresence(channel, entry.topic, key, meta)

    # Dispatch

    def _too_long(self, topic: str) -> bool:
        # A character is at most 4 UTF-8 bytes: most topics need no encoding.
        limit = self.max_topic_bytes
        return len(topic) * 4 > limit and len(topic.encode("utf-8", "replace")) > limit

    def _echo(self, topic: str) -> str:
        return topic[:_ECHOED_TOPIC] if self._too_long(topic) else topic

    def _dispatch(self, message: Message) -> Effects:
        topic, event = message.topic, message.event
        if self._too_long(topic):
            too_long = {
                "reason": "topic too long",
                "max_topic_bytes": self.max_topic_bytes,
            }
            return (self.refuse(message, too_long),)
        if event == "heartbeat" and topic == "phoenix":
            return (SendReply(None, message.ref, topic, "ok", _OK_EMPTY),)
        if event == "phx_join":
            return self._start_join(message)
        entry = self._topics.get(topic)
        if entry is None:
            if event == "phx_leave":
                return (SendReply(message.join_ref, message.ref, topic, "ok", {}),)
            return (SendReply(None, message.ref, topic, "error", _UNMATCHED),)
        join_ref = message.join_ref
        if join_ref is not None and join_ref != entry.join_ref:
            # stale: the client raced a server close; Phoenix drops it
            return _NONE
        if event == "phx_leave":
            effects: list[Effect] = [
                SendReply(entry.join_ref, message.ref, topic, "ok", {}),
                SendClose(entry.join_ref, topic),
            ]
            self._end(entry, "leave", True, effects)
            return tuple(effects)
        self.busy = True
        return (RunHandleIn(entry.id, event, message.payload, message.ref),)

    def _start_join(self, message: Message) -> Effects:
        topic = message.topic
        effects: list[Effect] = []
        old = self._topics.get(topic)
        if old is not None:
            # The new join's reply goes first, then the old channel's close.
            self._end(old, "duplicate join", True, effects)
        elif len(self._topics) >= self.max_channels:
            return (
                SendReply(message.join_ref, message.ref, topic, "error", _TOO_MANY),
            )
        definition = self._match(topic)
        if definition is None:
            effects.append(SendReply(None, message.ref, topic, "error", _UNMATCHED))
            if old is not None:
                effects.append(SendClose(old.join_ref, topic))
            return tuple(effects)
        self._serial += 1
        entry = _Channel(self._serial, topic, message.join_ref)
        self._ids[entry.id] = entry
        self._join = _Join(
            entry,
            message.ref,
            old is not None,
            None if old is None else old.join_ref,
        )
        self.busy = True
        effects.append(
            RunJoin(
                entry.id,
                topic,
                message.join_ref,
                message.ref,
                message.payload,
                definition,
            )
        )
        return tuple(effects)

    def _join_failed(self, channel: int, reason: str, response: Payload) -> Effects:
        join = self._take_join(channel)
        entry = join.channel
        if entry.id not in self._ids:
            return _NONE
        effects: list[Effect] = []
        self._end(entry, reason, False, effects)
        if self.closed:
            return tuple(effects)
        effects.append(
            SendReply(entry.join_ref, join.ref, entry.topic, "error", response)
        )
        if join.replaces:
            effects.append(SendClose(join.old_join_ref, entry.topic))
        return self._resume(effects)

    def _take_join(self, channel: int) -> _Join:
        join = self._join
        if join is None or join.channel.id != channel:
            raise ValueError(f"channel {channel} has no pending join")
        self._join = None
        self._release()
        return join

    def _release(self) -> None:
        if not self.busy:
            raise ValueError("no callback is pending")
        self.busy = False

    def _crash(self, entry: _Channel | None) -> Effects:
        effects: list[Effect] = []
        if entry is not None:
            effects.append(SendError(entry.join_ref, entry.topic))
            self._end(entry, "crash", True, effects)
        return self._resume(effects)

    # The queue of inputs held back while a callback is pending

    def _hold(self, message: Message) -> Effects:
        queue = self._queue
        if queue is None:
            queue = self._queue = deque()
        if len(queue) >= self.max_queued:
            return self._close(CLOSE_POLICY, "too many pending messages")
        queue.append(message)
        return _NONE

    def _resume(self, effects: list[Effect]) -> Effects:
        if self._queue:
            return tuple(effects) + self._drain()
        return tuple(effects)

    def _drain(self) -> Effects:
        """
        Dispatch what waited, in order, until a callback is pending again.
        """
        effects: Effects = _NONE
        queue = self._queue
        while queue and not self.busy and not self.closed:
            item = queue.popleft()
            if type(item) is _Info:
                effects += self.info_due(item.channel, item.message)
            else:
                assert isinstance(item, Message)
                effects += self._dispatch(item)
        if not self._queue:
            self._queue = None
        return effects

    # Ending

    def _end(
        self, entry: _Channel, reason: str, terminate: bool, effects: list[Effect]
    ) -> None:
        """
        Forget a channel instance, adding what that takes to C{effects}.
        """
        if self._topics.get(entry.topic) is entry:
            del self._topics[entry.topic]
        self._ids.pop(entry.id, None)
        entry.pending_pushes = entry.pending_infos = None
        if entry.joined:
            effects.append(Unsubscribe(entry.id, entry.topic))
        if entry.tracked:
            entry.tracked = False
            effects.append(UntrackAll(entry.id))
        effects.append(EndChannel(entry.id, reason, terminate))

    def _close(self, code: int, reason: str) -> Effects:
        effects = list(self.closed_by_peer())
        if self._join is not None:
            # Nothing may follow CloseSocket: a pending join is abandoned
            # now (it never started, so it is not terminated) and its
            # result is ignored.
            self._end(self._join.channel, "closed", False, effects)
        effects.append(CloseSocket(code, reason))
        return tuple(effects)

    def _alive(self, channel: int, what: str) -> _Channel:
        entry = self._ids.get(channel)
        if entry is None:
            raise ChannelEnded(f"{what} on channel {channel} after it ended")
        return entry
