"""
The replicated presence state: a delta-state, add-wins observed-remove set
with causal context, after Phoenix's C{Phoenix.Tracker.State}.

Pure: no I/O, no reactor, no wall clock.  The tracker feeds it local
operations, peers' deltas and full states, and liveness decisions; it
answers with the visible changes each of them caused.

How it stays correct, in short:

  - Every operation consumes a dot C{(replica, clock)} of the replica
    doing it; a removal has a dot of its own (an update is two), so seeing
    a dot always means having seen what that operation did.  The causal
    context (a contiguous clock per replica plus a cloud of dots seen
    beyond a gap) says which dots this replica has seen.
  - A remote value is admitted when its replica is known here and its dot
    has not been seen; a held value is removed when the remote has seen its
    dot but no longer holds it.  A removal only kills the dots it saw, so a
    concurrent add wins.
  - Each replica is the authority for its own entries: merges never remove
    them.  An owner holds at most one value per (topic, key, owner) at a
    time, so of two dots for the same entry from the same replica the
    higher one is the live one and the lower one is dead; values are stored
    by tag and an older dot never replaces a newer one (Phoenix bug #148).
  - Down replicas are hidden, not deleted; permdown deletes them
    everywhere, including from stored deltas.  At most one incarnation per
    node name is known, so the set of down replicas stays bounded.
"""

from __future__ import annotations

from typing import Any, Callable, Collection, Iterator, Mapping, Union

from beryl.presence.delta import (
    DEFAULT_MAX_DELTA_SIZES,
    Behind,
    Delta,
    DeltaGenerations,
)
from beryl.presence.entries import (
    AlreadyTrackedError,
    Changes,
    Diff,
    Entry,
    FullState,
    NoPresenceError,
    ReadOnlyDict,
    Replica,
    Tag,
    random_ref,
)

__all__ = [
    "AlreadyTrackedError",
    "Delta",
    "Diff",
    "Entry",
    "FullState",
    "NoPresenceError",
    "Remote",
    "Replica",
    "State",
    "Tag",
    "random_ref",
]


Remote = Union[Delta, FullState]
"""What a merge takes: a delta or a full state."""


_ElementId = tuple[Replica, str, str, str]


class State:
    """
    One replica of the presence set.

    Storage is indexed so that a join, leave or update is O(1) in the size
    of its topic, a delta merge is O(delta), and down, up and permdown are
    O(that replica's entries).  Only a full-state merge scans, and only the
    values of the replicas the full state speaks for.

    @ivar replica: This replica.
    @ivar context: Each known replica's contiguous clock: every dot up to
        it has been seen.  Known replicas are exactly its keys.
    @ivar clouds: Dots seen beyond a gap, per replica.
    @ivar generations: Recent deltas, kept to answer transfer requests.
    """

    def __init__(
        self,
        replica: Replica,
        ref_generator: Callable[[], str] | None = None,
        max_delta_sizes: tuple[int, ...] = DEFAULT_MAX_DELTA_SIZES,
    ) -> None:
        """
        @param replica: This replica's C{(node name, incarnation)}.
        @param ref_generator: Makes C{phx_ref}s; L{random_ref} by default.
        @param max_delta_sizes: Budgets of the delta generations.
        """
        self.replica = replica
        self._new_ref = ref_generator or random_ref
        self.context: dict[Replica, int] = {replica: 0}
        self.clouds: dict[Replica, set[int]] = {}
        self._down: set[Replica] = set()
        self._values: dict[Tag, Entry] = {}
        self._by_topic: dict[str, dict[str, dict[Tag, None]]] = {}
        self._by_replica: dict[Replica, dict[Tag, None]] = {}
        self._elements: dict[_ElementId, Tag] = {}
        self._local_by_owner: dict[str, dict[tuple[str, str], None]] = {}
        self._delta = self._fresh_delta()
        self.generations = DeltaGenerations(max_delta_sizes)

    def copy(self) -> State:
        """
        An independent copy, sharing only the immutable entries.
        """
        other = State(self.replica, self._new_ref, self.generations.max_sizes)
        other.context = dict(self.context)
        other.clouds = {r: set(dots) for r, dots in self.clouds.items()}
        other._down = set(self._down)
        for tag, entry in self._values.items():
            other._insert(tag, entry)
        other._delta = self._delta.copy()
        other.generations.generations = [g.copy() for g in self.generations.generations]
        return other

    # Queries

    def visible(self) -> dict[Tag, Entry]:
        """
        Every visible value.  O(state): for tests and tools, not hot paths.
        """
        down = self._down
        return {t: e for t, e in self._values.items() if t[0] not in down}

    def values(self) -> Mapping[Tag, Entry]:
        """
        Every held value, hidden ones (of down replicas) included.
        """
        return self._values

    def grouped(self, topic: str) -> dict[str, list[Entry]]:
        """
        The visible entries of C{topic} by key, oldest first.
        O(entries in the topic).
        """
        keys = self._by_topic.get(topic)
        if not keys:
            return {}
        values, down = self._values, self._down
        result: dict[str, list[Entry]] = {}
        for key, tags in keys.items():
            if down:
                entries = [values[t] for t in tags if t[0] not in down]
                if entries:
                    result[key] = entries
            else:
                result[key] = [values[t] for t in tags]
        return result

    def get_by_key(self, topic: str, key: str) -> list[Entry]:
        """
        The visible entries of C{topic} under C{key}, oldest first.
        """
        keys = self._by_topic.get(topic)
        tags = keys.get(key) if keys else None
        if not tags:
            return []
        values, down = self._values, self._down
        if down:
            return [values[t] for t in tags if t[0] not in down]
        return [values[t] for t in tags]

    def local(self, topic: str, key: str, owner: str) -> Entry | None:
        """
        This replica's entry for C{owner} under C{key} on C{topic}.
        """
        tag = self._elements.get((self.replica, topic, key, owner))
        return None if tag is None else self._values[tag]

    def clock(self) -> dict[Replica, int]:
        """
        The clock to advertise to peers: the context without down replicas,
        so that no peer keeps asking for data it would reject.
        """
        return {r: c for r, c in self.context.items() if r not in self._down}

    def is_up(self, replica: Replica) -> bool:
        """
        Whether C{replica} is known and not down.
        """
        return replica in self.context and replica not in self._down

    def replicas(self) -> dict[Replica, bool]:
        """
        Every known replica and whether it is up.
        """
        return {r: r not in self._down for r in self.context}

    def covers(self, tag: Tag) -> bool:
        """
        Whether this replica has seen the dot C{tag}.
        """
        replica, clock = tag
        return self.context.get(replica, 0) >= clock or clock in self.clouds.get(
            replica, ()
        )

    # Local operations

    def join(self, topic: str, key: str, owner: str, meta: Mapping[str, Any]) -> Diff:
        """
        Track C{owner} under C{key} on C{topic}; its meta gets a new
        C{phx_ref}.

        @raise AlreadyTrackedError: when it is tracked already.
        """
        element = (self.replica, topic, key, owner)
        if element in self._elements:
            raise AlreadyTrackedError(topic, key, owner)
        new_meta = ReadOnlyDict(meta, phx_ref=self._new_ref())
        return Diff(joins=[self._add_local(topic, key, owner, new_meta)])

    def leave(self, topic: str, key: str, owner: str) -> Diff:
        """
        Untrack C{owner} under C{key} on C{topic}; a no-op when absent.
        """
        tag = self._elements.get((self.replica, topic, key, owner))
        if tag is None:
            return Diff()
        entry = self._remove_local(tag)
        self._next_dot()
        return Diff(leaves=[(tag, entry)])

    def leave_all(self, owner: str) -> Diff:
        """
        Untrack every presence of C{owner}, on every topic.
        """
        places = self._local_by_owner.get(owner)
        if not places:
            return Diff()
        leaves = []
        for topic, key in list(places):
            tag = self._elements[(self.replica, topic, key, owner)]
            leaves.append((tag, self._remove_local(tag)))
        self._next_dot()
        return Diff(leaves=leaves)

    def update(self, topic: str, key: str, owner: str, meta: Mapping[str, Any]) -> Diff:
        """
        Replace the meta of a tracked presence: a leave and a join, two
        dots.  The new meta gets a new C{phx_ref} and the old one as
        C{phx_ref_prev}.

        @raise NoPresenceError: when it is not tracked.
        """
        tag = self._elements.get((self.replica, topic, key, owner))
        if tag is None:
            raise NoPresenceError(topic, key, owner)
        old = self._remove_local(tag)
        # The removal needs a dot of its own: a later delta may tombstone
        # the new add's dot, and covering that must not hide this removal.
        self._next_dot()
        new_meta = ReadOnlyDict(
            meta, phx_ref=self._new_ref(), phx_ref_prev=old.meta.get("phx_ref")
        )
        joined = self._add_local(topic, key, owner, new_meta)
        return Diff(joins=[joined], leaves=[(tag, old)])

    def _next_dot(self) -> int:
        clock = self.context[self.replica] + 1
        self.context[self.replica] = clock
        self._delta.cloud.setdefault(self.replica, set()).add(clock)
        self._delta.end[self.replica] = clock
        return clock

    def _add_local(
        self, topic: str, key: str, owner: str, meta: ReadOnlyDict
    ) -> tuple[Tag, Entry]:
        tag = (self.replica, self._next_dot())
        entry = Entry(topic, key, owner, meta)
        self._insert(tag, entry)
        self._delta.values[tag] = entry
        return tag, entry

    def _remove_local(self, tag: Tag) -> Entry:
        entry = self._delete(tag)
        self._relay_removal(tag)
        return entry

    def _relay_removal(self, tag: Tag) -> None:
        """
        Record in the pending delta that C{tag} was removed, so that peers
        learn it from our next heartbeat (also for removals we observed).
        """
        self._delta.values.pop(tag, None)
        self._delta.cloud.setdefault(tag[0], set()).add(tag[1])

    # Storage

    def _insert(self, tag: Tag, entry: Entry) -> None:
        replica = tag[0]
        self._values[tag] = entry
        keys = self._by_topic.get(entry.topic)
        if keys is None:
            keys = self._by_topic[entry.topic] = {}
        tags = keys.get(entry.key)
        if tags is None:
            tags = keys[entry.key] = {}
        tags[tag] = None
        self._by_replica.setdefault(replica, {})[tag] = None
        self._elements[(replica, entry.topic, entry.key, entry.owner)] = tag
        if replica == self.replica:
            owned = self._local_by_owner.setdefault(entry.owner, {})
            owned[(entry.topic, entry.key)] = None

    def _delete(self, tag: Tag) -> Entry:
        replica = tag[0]
        entry = self._values.pop(tag)
        keys = self._by_topic[entry.topic]
        tags = keys[entry.key]
        del tags[tag]
        if not tags:
            del keys[entry.key]
            if not keys:
                del self._by_topic[entry.topic]
        by_replica = self._by_replica[replica]
        del by_replica[tag]
        if not by_replica:
            del self._by_replica[replica]
        del self._elements[(replica, entry.topic, entry.key, entry.owner)]
        if replica == self.replica:
            owned = self._local_by_owner[entry.owner]
            del owned[(entry.topic, entry.key)]
            if not owned:
                del self._local_by_owner[entry.owner]
        return entry

    # Deltas

    def _fresh_delta(self) -> Delta:
        clock = self.context[self.replica]
        return Delta({self.replica: clock}, {self.replica: clock})

    def has_delta(self) -> bool:
        """
        Whether anything happened since the last L{take_delta}.
        """
        return not self._delta.is_empty()

    def take_delta(self) -> Delta:
        """
        Hand out the pending delta (to broadcast), remember it in the
        generations and start a new one.
        """
        delta = self._delta
        self._delta = self._fresh_delta()
        self.generations.push(delta)
        return delta

    def discard_delta(self) -> None:
        """
        Drop the pending delta: a replica without peers keeps no history.
        """
        self._delta = self._fresh_delta()

    # Merging

    def merge(self, remote: Remote) -> Diff:
        """
        Merge a peer's delta or full state and return the visible changes.

        Values of unknown replicas are ignored, this replica's own values
        are never touched, and merging the same thing twice changes
        nothing.  A delta is remembered in the generations; a full state
        clears them.
        """
        changes = Changes(self._down)
        if isinstance(remote, Delta):
            self._merge_delta(remote, changes)
        else:
            self._merge_full(remote, changes)
        return changes.diff()

    def _merge_delta(self, delta: Delta, changes: Changes) -> None:
        known = self.context
        me = self.replica
        for replica, dots in delta.cloud.items():
            if replica == me or replica not in known:
                continue
            held = self._by_replica.get(replica)
            if not held:
                continue
            if len(dots) <= len(held):
                removed = [(replica, c) for c in dots if (replica, c) in held]
            else:
                removed = [t for t in held if t[1] in dots]
            for tag in removed:
                if tag not in delta.values:
                    self._observe_removal(tag, changes)
        self._admit_all(delta.values, changes)
        for replica, dots in delta.cloud.items():
            if replica != me and replica in known:
                self._add_dots(replica, 0, dots)
        if any(r not in known for r in delta.end) or any(
            r not in known for r in delta.cloud
        ):
            delta = delta.restricted(known)
        self.generations.push(delta)

    def _merge_full(self, full: FullState, changes: Changes) -> None:
        known = self.context
        me = self.replica
        for replica in full.context.keys() | full.clouds.keys():
            if replica == me or replica not in known:
                continue
            seen = full.context.get(replica, 0)
            cloud = full.clouds.get(replica, ())
            for tag in list(self._by_replica.get(replica, ())):
                clock = tag[1]
                if (clock <= seen or clock in cloud) and tag not in full.values:
                    self._observe_removal(tag, changes)
        self._admit_all(full.values, changes)
        for replica in full.context.keys() | full.clouds.keys():
            if replica != me and replica in known:
                self._add_dots(
                    replica,
                    full.context.get(replica, 0),
                    full.clouds.get(replica, ()),
                )
        self.generations.clear()

    def _observe_removal(self, tag: Tag, changes: Changes) -> None:
        changes.leave(tag, self._delete(tag))
        self._relay_removal(tag)

    def _admit_all(self, values: Mapping[Tag, Entry], changes: Changes) -> None:
        known = self.context
        me = self.replica
        for tag, entry in values.items():
            replica, clock = tag
            if replica == me or replica not in known or self.covers(tag):
                continue
            element = (replica, entry.topic, entry.key, entry.owner)
            current = self._elements.get(element)
            if current is not None:
                if current[1] > clock:
                    # The owner has replaced this value already: it is dead.
                    self._add_dots(replica, 0, (clock,))
                    continue
                changes.leave(current, self._delete(current))
            self._insert(tag, entry)
            changes.join(tag, entry)

    def _add_dots(self, replica: Replica, seen: int, dots: Collection[int]) -> None:
        """
        Record that C{replica}'s dots up to C{seen} and C{dots} were seen,
        and compact: advance the contiguous clock over the cloud.
        """
        base = max(self.context[replica], seen)
        cloud = self.clouds.get(replica)
        if cloud is None:
            cloud = set()
        cloud.update(dot for dot in dots if dot > base)
        while base + 1 in cloud:
            base += 1
            cloud.discard(base)
        if cloud and min(cloud) <= base:
            cloud = {dot for dot in cloud if dot > base}
        self.context[replica] = base
        if cloud:
            self.clouds[replica] = cloud
        else:
            self.clouds.pop(replica, None)

    def compact(self) -> None:
        """
        Advance every contiguous clock over its cloud.  Merges compact as
        they go, so this never changes anything but is safe to call.
        """
        for replica in list(self.clouds):
            self._add_dots(replica, 0, ())

    # Transfers

    def full_state(self, replicas: Collection[Replica] | None = None) -> FullState:
        """
        A full-state extract, restricted to C{replicas} when given.
        """
        if replicas is None:
            replicas = list(self.context)
        shared = [r for r in replicas if r in self.context]
        values: dict[Tag, Entry] = {}
        for replica in shared:
            for tag in self._by_replica.get(replica, ()):
                values[tag] = self._values[tag]
        return FullState(
            {r: self.context[r] for r in shared},
            {r: set(self.clouds[r]) for r in shared if r in self.clouds},
            values,
        )

    def extract(
        self, requester: Replica, requester_clock: Mapping[Replica, int]
    ) -> Remote:
        """
        What to send a peer that asked for a transfer: the smallest stored
        delta that brings it up to date without a gap, else a full state;
        either restricted to the replicas the requester knows, less the
        requester itself.  Our own changes not yet broadcast are left to
        the next heartbeat when a delta is sent.
        """
        shared = [r for r in requester_clock if r in self.context and r != requester]
        behind: dict[Replica, Behind] = {}
        for replica in shared:
            if replica == self.replica:
                ours = self._delta.start[replica]
            else:
                ours = self.context[replica]
            if ours > requester_clock[replica]:
                behind[replica] = Behind(requester_clock[replica], ours)
        if not behind:
            return Delta()
        generation = self.generations.find(behind)
        if generation is not None:
            return generation.restricted(shared)
        return self.full_state(shared)

    # Replica liveness

    def replica_up(self, replica: Replica) -> Diff:
        """
        A peer replica is alive: know it (its values are admitted from now
        on) and reveal its hidden values again.  Any other incarnation of
        the same node is gone for good and is permdowned first.
        """
        if replica == self.replica:
            return Diff()
        changes = Changes(self._down)
        for other in list(self.context):
            if other[0] == replica[0] and other != replica and other != self.replica:
                for tag, entry in self.permdown(other).leaves:
                    changes.leave(tag, entry)
        self.context.setdefault(replica, 0)
        if replica in self._down:
            self._down.discard(replica)
            for tag in self._by_replica.get(replica, ()):
                changes.join(tag, self._values[tag])
        return changes.diff()

    def recover(self, replica: Replica, remote: Remote | None = None) -> Diff:
        """
        A down peer replica is back and C{remote} is what it has done since
        it went quiet: merge that while its values are still hidden, then
        reveal them, and report it all as one diff.  Values it removed in
        the meantime are deleted before anyone sees them again (no ghosts),
        and a value that is still there and was visible before is reported
        as a join, as C{replica_up} does.
        """
        changes = Changes(self._down)
        if remote is not None:
            merged = self.merge(remote)
            for tag, entry in merged.leaves:
                changes.leave(tag, entry)
            for tag, entry in merged.joins:
                changes.join(tag, entry)
        revealed = self.replica_up(replica)
        for tag, entry in revealed.leaves:
            changes.leave(tag, entry)
        for tag, entry in revealed.joins:
            changes.join(tag, entry)
        return changes.diff()

    def replica_down(self, replica: Replica) -> Diff:
        """
        A peer replica stopped answering: hide its values (reported as
        leaves) without deleting them.
        """
        if replica == self.replica or replica not in self.context:
            return Diff()
        if replica in self._down:
            return Diff()
        self._down.add(replica)
        tags = self._by_replica.get(replica, ())
        return Diff(leaves=[(tag, self._values[tag]) for tag in tags])

    def permdown(self, replica: Replica) -> Diff:
        """
        A peer replica is gone for good: delete its values (visible ones
        are reported as leaves), forget it, and remove it from every stored
        delta.  Its values are not admitted again unless it comes back up.
        """
        if replica == self.replica or replica not in self.context:
            return Diff()
        hidden = replica in self._down
        leaves = []
        for tag in list(self._by_replica.get(replica, ())):
            entry = self._delete(tag)
            if not hidden:
                leaves.append((tag, entry))
        del self.context[replica]
        self.clouds.pop(replica, None)
        self._down.discard(replica)
        self._delta = self._delta.without(replica)
        self.generations.prune(replica)
        return Diff(leaves=leaves)

    def entries(self) -> Iterator[tuple[Tag, Entry]]:
        """
        Every held value with its tag, hidden ones included.
        """
        return iter(self._values.items())
