"""
The presence tracker: L{IPresence} for one node, replicated to its peers
with Phoenix's tracker protocol over the C{"presence"} messaging channel.

Every C{broadcast_period} the tracker sends its pending delta to every
peer, or, after C{max_silent_periods} quiet ticks, an empty heartbeat; both
carry its clock.  Every other tick it asks the peers whose clocks know more
than its own for a transfer, answered with the smallest stored delta that
covers the gap or with a full state.  A peer silent for C{down_period} is
down (its presences leave, hidden); silent for C{permdown_period}, it is
deleted.  A peer that comes back with a new incarnation replaces the old
one at once, and a peer that stops gracefully says so.

A down peer that is heard again is not revealed at once: what this node
holds of it may be stale (users may have left it in the meantime).  The
tracker first asks it for a transfer since the clock last seen from it,
merges the answer while the peer is still hidden, and only then reveals
it, all in one diff.  While a peer is down, this node heartbeats to it on
every tick, so that both sides notice within one tick that the link is
back.

Diffs are computed on each node from its own operations and merges and are
delivered to local subscribers only, as Phoenix does.
"""

from __future__ import annotations

import builtins
import random
from collections import deque
from typing import Any, Callable, Mapping

import attrs
import orjson
from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from beryl.interfaces import (
    IMembershipObserver,
    INodeMessaging,
    IPresence,
)
from beryl.presence.clocks import VectorClock, append_clock
from beryl.presence.codec import (
    CodecError,
    clock_from_json,
    clock_to_json,
    remote_from_json,
    remote_to_json,
    replica_from_json,
    replica_to_json,
)
from beryl.presence.delta import DEFAULT_MAX_DELTA_SIZES, Delta
from beryl.presence.entries import (
    Changes,
    Entry,
    ReadOnlyDict,
    ReadOnlyList,
    Replica,
    Tag,
)
from beryl.presence.state import Diff, Remote, State, random_ref
from beryl.wire import PresenceList, PresenceMeta

__all__ = [
    "CHANNEL",
    "DOWN_MARGIN",
    "PARAMETER_NAMES",
    "PresenceTracker",
    "heartbeat_interval",
    "timings_problem",
]

CHANNEL = "presence"
"""The messaging channel the trackers of a cluster talk on."""

DiffCallback = Callable[[str, dict[str, PresenceList]], None]

DOWN_MARGIN = 1.5
"""
How many times the longest gap between an idle node's heartbeats
C{down_period} must be at least: a heartbeat that comes a little late (a
busy node, a slow link) must not make a peer leave and rejoin.
"""

RECOVERY_WINDOW = 1.0
"""
Seconds within which the answer to a returning peer's transfer request
must come to reveal the peer (or two broadcast periods, when longer).  A
later answer may have been held up by the network and be older than the
messages behind it, so the peer is asked again.
"""

PARAMETER_NAMES = {
    "broadcast_period": "broadcast_period",
    "max_silent_periods": "max_silent_periods",
    "down_period": "down_period",
    "permdown_period": "permdown_period",
}


def heartbeat_interval(broadcast_period: float, max_silent_periods: int) -> float:
    """
    The longest time between two heartbeats of a node with no changes to
    send: it sends an empty one after C{max_silent_periods} quiet ticks,
    that is on every C{max_silent_periods + 1}-th tick.
    """
    return broadcast_period * (max_silent_periods + 1)


def timings_problem(
    broadcast_period: float,
    max_silent_periods: int,
    down_period: float,
    permdown_period: float,
    names: Mapping[str, str] = PARAMETER_NAMES,
) -> str | None:
    """
    Why these presence timings cannot work, in one line, or C{None} when
    they can.

    The rule: C{down_period} is at least L{DOWN_MARGIN} times the
    L{heartbeat_interval} of an idle node, and at least two broadcast
    periods; C{permdown_period} is longer than C{down_period}.  Otherwise
    idle peers would be declared down between two of their heartbeats and
    come back at the next one, over and over.

    @param names: How to name the four settings in the message (parameter
        names by default; the command line passes its option names).
    """
    if broadcast_period <= 0 or max_silent_periods < 0:
        return (
            f"{names['broadcast_period']} must be positive and "
            f"{names['max_silent_periods']} not negative"
        )
    interval = heartbeat_interval(broadcast_period, max_silent_periods)
    needed = max(DOWN_MARGIN * interval, 2 * broadcast_period)
    if down_period < needed:
        return (
            f"{names['down_period']} ({down_period:g} s) must be at least "
            f"{needed:g} s: an idle node heartbeats every {names['broadcast_period']} "
            f"x ({names['max_silent_periods']} + 1) = {interval:g} s, and peers "
            f"need {DOWN_MARGIN:g} times that (and at least two ticks) before "
            f"calling it down, or its users would leave and rejoin over and over; "
            f"raise {names['down_period']} or lower {names['max_silent_periods']}"
        )
    if permdown_period <= down_period:
        return (
            f"{names['permdown_period']} ({permdown_period:g} s) must be longer "
            f"than {names['down_period']} ({down_period:g} s)"
        )
    return None


_Items = builtins.list[tuple[Tag, Entry]]


@attrs.define
class _Peer:
    """
    What this node knows of a peer tracker; whether it is up is the
    state's to say (L{State.is_up}).
    """

    replica: Replica
    last_seen: float
    # The ref of the transfer asked of it to come back from down, and when.
    asked: str | None = None
    asked_at: float = 0.0


def _presence_list(items: Any) -> PresenceList:
    result: PresenceList = {}
    for key, meta in items:
        entry = result.get(key)
        if entry is None:
            entry = result[key] = {"metas": []}
        entry["metas"].append(meta)
    return result


@implementer(IPresence, IMembershipObserver)
class PresenceTracker(Service):
    """
    Who is online on which topic, on this node and across the cluster.

    With C{messaging} C{None} the tracker is a single node: no ticks, no
    history kept.
    """

    log = Logger()

    def __init__(
        self,
        messaging: INodeMessaging | None,
        clock: IReactorTime,
        broadcast_period: float = 1.5,
        max_silent_periods: int = 10,
        down_period: float = 30.0,
        permdown_period: float = 1200.0,
        ref_generator: Callable[[], str] | None = None,
        clock_sample_periods: int = 2,
        max_delta_sizes: tuple[int, ...] = DEFAULT_MAX_DELTA_SIZES,
    ) -> None:
        """
        @param messaging: The links to the peers, or C{None} for a single
            node.
        @param clock: Schedules ticks and measures peers' silence.
        @param broadcast_period: Seconds between ticks.
        @param max_silent_periods: Quiet ticks before an empty heartbeat.
        @param down_period: Seconds of silence before a peer is down; see
            L{timings_problem} for how short it may be.
        @param permdown_period: Seconds of silence before a peer is
            deleted; more than C{down_period}.
        @param ref_generator: Makes C{phx_ref}s (for deterministic tests).
        @param clock_sample_periods: Ticks between rounds of transfer
            requests.
        @param max_delta_sizes: Budgets of the stored delta generations.

        @raise ValueError: when the timings cannot work (L{timings_problem}).
        """
        problem = timings_problem(
            broadcast_period, max_silent_periods, down_period, permdown_period
        )
        if problem is not None:
            raise ValueError(problem)
        self._messaging = messaging
        self._clock = clock
        self.broadcast_period = broadcast_period
        self.max_silent_periods = max_silent_periods
        self.down_period = down_period
        self.permdown_period = permdown_period
        self.clock_sample_periods = clock_sample_periods
        if messaging is not None:
            replica = (messaging.node_name, messaging.incarnation)
        else:
            replica = ("local", random_ref())
        self.state = State(replica, ref_generator, max_delta_sizes)
        self._peers: dict[str, _Peer] = {}
        self._clockset: dict[Replica, VectorClock] = {}
        self._silent_periods = max_silent_periods
        self._ticks = 0
        self._tick_call: IDelayedCall | None = None
        self._subscribers: builtins.list[DiffCallback] = []
        # topic -> its joins and leaves not yet collected by get_diff; a
        # join and a leave of the same value cancel out, so each stays no
        # larger than its topic.
        self._pending: dict[str, Changes] = {}
        # topic -> key -> {"metas": [...]}: what list() answers; each key a
        # diff touches is rebuilt from the state.  Everything in it is
        # read-only and replaced rather than changed, so a shallow copy is
        # a snapshot.
        self._views: dict[str, dict[str, ReadOnlyDict]] = {}
        self._outbox: deque[tuple[str, dict[str, PresenceList]]] = deque()
        self._delivering = False
        if messaging is not None:
            messaging.add_handler(CHANNEL, self._received)
            messaging.add_membership_observer(self)

    @property
    def replica(self) -> Replica:
        """
        This tracker's replica: C{(node name, incarnation)}.
        """
        return self.state.replica

    def peers(self) -> dict[str, tuple[Replica, bool]]:
        """
        The peer trackers heard from: node name to replica and whether it
        is up.
        """
        is_up = self.state.is_up
        return {name: (p.replica, is_up(p.replica)) for name, p in self._peers.items()}

    # Service

    def startService(self) -> None:
        """
        Start ticking; the first tick comes after a random quarter period
        at most, so that a cluster's nodes do not tick in step.
        """
        Service.startService(self)
        if self._messaging is not None:
            delay = random.uniform(0, 0.25) * self.broadcast_period
            self._tick_call = self._clock.callLater(delay, self._tick)

    def stopService(self) -> None:
        """
        Stop ticking and send the peers a goodbye, so that they drop this
        node's presences when it arrives rather than after C{down_period}.
        The cluster's links flush it before they close; a peer that does
        not get it (a link already down) notices after C{down_period}.
        """
        if self._tick_call is not None and self._tick_call.active():
            self._tick_call.cancel()
        self._tick_call = None
        if self._messaging is not None and self.running:
            self._send_all({"type": "bye", "replica": replica_to_json(self.replica)})
        Service.stopService(self)

    # IPresence

    def track(self, topic: str, key: str, owner: str, meta: PresenceMeta) -> str:
        """
        Add a presence and return its C{phx_ref}.

        @raise beryl.presence.state.AlreadyTrackedError: when C{owner} is
            tracked under C{key} on C{topic} already.
        """
        diff = self.state.join(topic, key, owner, meta)
        self._local_change(diff)
        ref: str = diff.joins[0][1].meta["phx_ref"]
        return ref

    def untrack(self, topic: str, key: str, owner: str) -> None:
        """
        Remove a presence; a no-op when there is none.
        """
        self._local_change(self.state.leave(topic, key, owner))

    def untrack_all(self, owner: str) -> None:
        """
        Remove every presence of C{owner}, on every topic.
        """
        self._local_change(self.state.leave_all(owner))

    def update(self, topic: str, key: str, owner: str, meta: PresenceMeta) -> str:
        """
        Replace the meta of a presence and return its new C{phx_ref}; one
        diff carries the new meta as a join and the old one as a leave.

        @raise beryl.presence.state.NoPresenceError: when there is no such
            presence.
        """
        diff = self.state.update(topic, key, owner, meta)
        self._local_change(diff)
        ref: str = diff.joins[0][1].meta["phx_ref"]
        return ref

    def list(self, topic: str) -> PresenceList:
        """
        Every visible presence on C{topic}, in Phoenix Presence format: a
        snapshot that later changes do not alter.  It is read-only (it is
        shared with the tracker): copy it to add fields, as Phoenix's
        C{fetch} does.  One dictionary copy, cheap enough to call on every
        join.
        """
        view = self._views.get(topic)
        return ReadOnlyDict(view) if view else ReadOnlyDict()

    def entry_count(self) -> int:
        """
        How many presences (metas, from every node) are visible now.
        """
        return sum(
            len(entry["metas"])
            for view in self._views.values()
            for entry in view.values()
        )

    def get_by_key(self, topic: str, key: str) -> builtins.list[dict[str, Any]]:
        """
        The metas under C{key} on C{topic}.
        """
        return [dict(entry.meta) for entry in self.state.get_by_key(topic, key)]

    def get_diff(self, topic: str) -> dict[str, PresenceList]:
        """
        The net joins and leaves on C{topic} since the last call: a meta
        that joined and left in between is in neither.  The first call for
        a topic starts collecting and returns an empty diff, so topics that
        nobody asks about cost nothing.
        """
        pending = self._pending.get(topic)
        self._pending[topic] = Changes()
        if pending is None:
            return {"joins": {}, "leaves": {}}
        return {
            "joins": _presence_list(
                (e.key, dict(e.meta)) for e in pending.joins.values()
            ),
            "leaves": _presence_list(
                (e.key, dict(e.meta)) for e in pending.leaves.values()
            ),
        }

    def subscribe_diffs(self, callback: DiffCallback) -> Callable[[], None]:
        """
        Call C{callback(topic, diff)} for every change, local or merged from
        a peer, in order: one call per topic per batch of changes.  The
        diff and its metas are shared between subscribers and with the
        tracker (the metas are read-only): do not mutate them.
        """
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    # IMembershipObserver

    def node_up(self, node_name: str, incarnation: str) -> None:
        """
        A link to a peer came up: greet it with a heartbeat so it learns of
        this node without waiting for the next one, and drop at once an
        older incarnation of it.
        """
        peer = self._peers.get(node_name)
        if peer is not None and peer.replica[1] != incarnation:
            self._forget(peer)
        if self.running and self._messaging is not None:
            message = self._heartbeat(None)
            self._messaging.send(node_name, CHANNEL, orjson.dumps(message))

    def node_down(self, node_name: str, incarnation: str) -> None:
        """
        A link to a peer went down.  Nothing happens yet: the peer goes
        down after C{down_period} of silence, which gives its clients time
        to reconnect elsewhere without a storm of leaves and joins.
        """

    # Diffs

    def _local_change(self, diff: Diff) -> None:
        if self._messaging is None:
            self.state.discard_delta()
        self._emit(diff)

    def _emit(self, diff: Diff) -> None:
        """
        Bring the views and the get_diff backlogs up to date with C{diff},
        which the state has applied already, and queue it for the
        subscribers, one payload per topic.
        """
        if not diff:
            return
        by_topic: dict[str, tuple[_Items, _Items]] = {}
        for item in diff.joins:
            by_topic.setdefault(item[1].topic, ([], []))[0].append(item)
        for item in diff.leaves:
            by_topic.setdefault(item[1].topic, ([], []))[1].append(item)
        for topic, (joins, leaves) in by_topic.items():
            self._update_view(topic, joins, leaves)
            pending = self._pending.get(topic)
            if pending is not None:
                for tag, entry in leaves:
                    pending.leave(tag, entry)
                for tag, entry in joins:
                    pending.join(tag, entry)
            if self._subscribers:
                payload = {
                    "joins": _presence_list((e.key, e.meta) for _, e in joins),
                    "leaves": _presence_list((e.key, e.meta) for _, e in leaves),
                }
                self._outbox.append((topic, payload))
        self._deliver()

    def _update_view(
        self,
        topic: str,
        joins: _Items,
        leaves: _Items,
    ) -> None:
        """
        Rebuild, from the state, the view of each key of C{topic} that the
        changes touched: the view then lists metas in the state's order,
        whatever happened before.
        """
        view = self._views.setdefault(topic, {})
        get_by_key = self.state.get_by_key
        for key in dict.fromkeys([e.key for _, e in leaves + joins]):
            metas = [e.meta for e in get_by_key(topic, key)]
            if metas:
                view[key] = ReadOnlyDict(metas=ReadOnlyList(metas))
            else:
                view.pop(key, None)
        if not view:
            del self._views[topic]

    def _deliver(self) -> None:
        """
        Call the subscribers with queued diffs, first in first out, even
        when a subscriber makes changes of its own.
        """
        if self._delivering:
            return
        self._delivering = True
        try:
            while self._outbox:
                topic, payload = self._outbox.popleft()
                for callback in list(self._subscribers):
                    try:
                        callback(topic, payload)
                    except Exception:
                        self.log.failure(
                            "Presence diff subscriber failed on {topic}",
                            topic=topic,
                        )
        finally:
            self._delivering = False

    # Replication: sending

    def _send_all(self, message: Mapping[str, Any]) -> None:
        assert self._messaging is not None
        self._messaging.send_all(CHANNEL, orjson.dumps(message))

    def _heartbeat(self, delta: Remote | None) -> dict[str, Any]:
        return {
            "type": "heartbeat",
            "replica": replica_to_json(self.replica),
            "clock": clock_to_json(self.state.clock()),
            "delta": None if delta is None else remote_to_json(delta),
        }

    def _tick(self) -> None:
        self._tick_call = None
        if self.state.has_delta():
            self._flush()
        elif self._silent_periods >= self.max_silent_periods:
            self._send_all(self._heartbeat(None))
            self._silent_periods = 0
        else:
            self._silent_periods += 1
        self._greet_down_peers()
        self._ticks += 1
        self._ask_again()
        if self._ticks % self.clock_sample_periods == 0:
            self._request_transfers()
        self._detect_downs()
        if self.running:
            self._tick_call = self._clock.callLater(self.broadcast_period, self._tick)

    def _flush(self) -> None:
        """
        Broadcast the pending delta now.
        """
        delta = self.state.take_delta()
        self._send_all(self._heartbeat(delta))
        self._silent_periods = 0

    def _greet_down_peers(self) -> None:
        """
        Heartbeat to the peers that are down, on every tick: the first one
        through a healed link tells the peer at once that this node is
        back, and asks it (C{"down"}) to answer so that this node learns
        the same of it.
        """
        assert self._messaging is not None
        message = None
        is_up = self.state.is_up
        for name, peer in self._peers.items():
            if is_up(peer.replica):
                continue
            if message is None:
                heartbeat = self._heartbeat(None)
                heartbeat["down"] = True
                message = orjson.dumps(heartbeat)
            self._messaging.send(name, CHANNEL, message)

    def _ask(self, peer: _Peer) -> None:
        """
        Ask a down peer that was heard again for everything since the clock
        last seen from it; L{_transfer_acked} reveals it with the answer.
        """
        assert self._messaging is not None
        clock = self.state.clock()
        clock[peer.replica] = self.state.context[peer.replica]
        peer.asked = random_ref()
        peer.asked_at = self._clock.seconds()
        self.log.info(
            "Presence peer {node} is back; asking what changed", node=peer.replica[0]
        )
        message = {
            "type": "transfer_req",
            "replica": replica_to_json(self.replica),
            "clock": clock_to_json(clock),
            "ref": peer.asked,
            "recover": True,
        }
        self._messaging.send(peer.replica[0], CHANNEL, orjson.dumps(message))

    def _recovery_window(self) -> float:
        """
        How long the answer of a returning peer may take: two broadcast
        periods, at least L{RECOVERY_WINDOW}.
        """
        return max(2 * self.broadcast_period, RECOVERY_WINDOW)

    def _ask_again(self) -> None:
        """
        Ask again the peers that were heard since they were asked to come
        back and have not answered in time (the request or its answer was
        lost).
        """
        now = self._clock.seconds()
        window = self._recovery_window()
        for peer in list(self._peers.values()):
            if (
                peer.asked is not None
                and peer.last_seen >= peer.asked_at
                and now - peer.asked_at > window
            ):
                self._ask(peer)

    def _request_transfers(self) -> None:
        assert self._messaging is not None
        clockset = append_clock(self._clockset, self.replica, self.state.clock())
        self._clockset = {}
        request = None
        for replica in clockset:
            peer = self._peers.get(replica[0])
            if replica == self.replica or peer is None or peer.replica != replica:
                continue
            if request is None:
                request = orjson.dumps(
                    {
                        "type": "transfer_req",
                        "replica": replica_to_json(self.replica),
                        "clock": clock_to_json(self.state.clock()),
                    }
                )
            self.log.debug("Asking {node} for a transfer", node=replica[0])
            self._messaging.send(replica[0], CHANNEL, request)

    def _detect_downs(self) -> None:
        now = self._clock.seconds()
        for peer in list(self._peers.values()):
            silence = now - peer.last_seen
            if silence > self.permdown_period:
                self.log.info(
                    "Presence peer {node} is permanently down", node=peer.replica[0]
                )
                self._forget(peer)
            elif silence > self.down_period and self.state.is_up(peer.replica):
                self.log.info("Presence peer {node} is down", node=peer.replica[0])
                peer.asked = None
                self._emit(self.state.replica_down(peer.replica))

    def _forget(self, peer: _Peer) -> None:
        del self._peers[peer.replica[0]]
        self._clockset.pop(peer.replica, None)
        self._emit(self.state.permdown(peer.replica))

    # Replication: receiving

    def _received(self, node_name: str, data: bytes) -> None:
        if not self.running:
            return
        try:
            message = orjson.loads(data)
            if not isinstance(message, dict):
                raise CodecError("not an object")
            replica = replica_from_json(message.get("replica"))
            if replica[0] != node_name or node_name == self.replica[0]:
                raise CodecError("replica does not match the sender")
            kind = message.get("type")
            if kind == "heartbeat":
                clock = clock_from_json(message.get("clock"))
                delta = message.get("delta")
                remote = None if delta is None else remote_from_json(delta)
                if remote is not None and not isinstance(remote, Delta):
                    raise CodecError("a heartbeat carries a delta")
                self._heartbeat_received(replica, clock, remote)
                if message.get("down") is True:
                    self._answer_greeting(replica)
            elif kind == "transfer_req":
                self._transfer_requested(
                    replica,
                    clock_from_json(message.get("clock")),
                    _ref(message.get("ref")),
                    message.get("recover") is True,
                )
            elif kind == "transfer_ack":
                self._transfer_acked(
                    replica,
                    remote_from_json(message.get("payload")),
                    _ref(message.get("ref")),
                )
            elif kind == "bye":
                peer = self._peers.get(node_name)
                if peer is not None and peer.replica == replica:
                    self.log.info("Presence peer {node} left", node=node_name)
                    self._forget(peer)
            else:
                raise CodecError(f"unknown message type {kind!r}")
        except (orjson.JSONDecodeError, CodecError) as error:
            self.log.warn(
                "Dropped a bad presence message from {node}: {error}",
                node=node_name,
                error=str(error),
            )
        except Exception:
            self.log.failure(
                "Failed to handle a presence message from {node}", node=node_name
            )

    def _heartbeat_received(
        self, replica: Replica, clock: VectorClock, remote: Delta | None
    ) -> None:
        name = replica[0]
        now = self._clock.seconds()
        peer = self._peers.get(name)
        if peer is not None and peer.replica != replica:
            self.log.info("Presence peer {node} restarted", node=name)
            self._forget(peer)
            peer = None
        if peer is None:
            self._peers[name] = _Peer(replica, now)
            self._emit(self.state.replica_up(replica))
            if remote is not None:
                self._emit(self.state.merge(remote))
        elif self.state.is_up(replica):
            peer.last_seen = now
            if remote is not None:
                self._emit(self.state.merge(remote))
        else:
            # Back from down: merged while still hidden, revealed only with
            # the answer to what it has now.  This heartbeat may be stale
            # itself: a link that was blackholed delivers everything held
            # at once, oldest first.
            peer.last_seen = now
            if remote is not None:
                self._emit(self.state.merge(remote))
            if peer.asked is None:
                self._ask(peer)
        known = self.state.clock()
        sampled = {r: c for r, c in clock.items() if r in known}
        self._clockset = append_clock(self._clockset, replica, sampled)

    def _answer_greeting(self, replica: Replica) -> None:
        """
        A peer that holds this node down heartbeats to it on every tick:
        answer with a plain heartbeat, so that it learns at once that this
        node is back (and asks for what it missed), rather than at this
        node's next idle heartbeat.
        """
        assert self._messaging is not None
        peer = self._peers.get(replica[0])
        if peer is not None and peer.replica == replica:
            message = orjson.dumps(self._heartbeat(None))
            self._messaging.send(replica[0], CHANNEL, message)

    def _transfer_requested(
        self, replica: Replica, clock: VectorClock, ref: str | None, recover: bool
    ) -> None:
        """
        Answer a transfer request.  A peer asking to bring this node back
        from down gets everything up to now: the pending delta is broadcast
        first, so that the answer covers it.
        """
        assert self._messaging is not None
        if recover and self.state.has_delta():
            self._flush()
        payload = self.state.extract(replica, clock)
        message = {
            "type": "transfer_ack",
            "replica": replica_to_json(self.replica),
            "payload": remote_to_json(payload),
        }
        if ref is not None:
            message["ref"] = ref
        self._messaging.send(replica[0], CHANNEL, orjson.dumps(message))

    def _transfer_acked(
        self, replica: Replica, remote: Remote, ref: str | None
    ) -> None:
        """
        Merge a transfer; the answer that a down peer was asked for also
        reveals it (L{State.recover}): one diff, no stale values shown.
        """
        peer = self._peers.get(replica[0])
        if (
            ref is not None
            and peer is not None
            and peer.replica == replica
            and peer.asked == ref
            and not self.state.is_up(replica)
        ):
            now = self._clock.seconds()
            if now - peer.asked_at <= self._recovery_window():
                peer.asked = None
                peer.last_seen = max(peer.last_seen, now)
                self.log.info("Presence peer {node} is up again", node=replica[0])
                self._emit(self.state.recover(replica, remote))
                return
            # An answer held up on the way may be older than what follows
            # it: merge it hidden and ask again.
            self._emit(self.state.merge(remote))
            self._ask(peer)
            return
        self._emit(self.state.merge(remote))


def _ref(value: Any) -> str | None:
    """
    A request ref from a message, or C{None} when it has none (or a bad
    one).
    """
    return value if isinstance(value, str) and len(value) <= 64 else None
