"""
The deltas of the presence CRDT, and the delta generations a node keeps so
that a peer which fell behind can catch up with a small delta instead of a
full state.

Pure data and functions: no I/O, no reactor.

A L{Delta} covers, for each replica C{r} in its range, the interval of dots
C{(start[r], end[r]]}: every dot of C{r} in that interval is in its
C{cloud}, and the adds among them that are still alive are in its
C{values}.  A dot in the cloud without a value is a removal.  The cloud may
also hold dots outside the range: removals of older adds.
"""

from __future__ import annotations

from typing import Collection, Iterable, Mapping

import attrs

from beryl.presence.entries import Entry, Replica, Tag

__all__ = [
    "Behind",
    "DeltaGenerations",
    "Delta",
    "merge_deltas",
]

DEFAULT_MAX_DELTA_SIZES = (100, 1000, 10000)
"""Phoenix's sizes of the three delta generations."""


@attrs.define
class Delta:
    """
    The changes of an interval of dots: see the module docstring.

    Deltas handed out by a L{State<beryl.presence.state.State>} are never
    changed afterwards.  The methods here return new deltas; only
    L{absorb} folds in place, and generations use it on their own copies.

    @ivar start: Replica to the last dot before the interval.
    @ivar end: Replica to the last dot of the interval; same keys as
        C{start}.
    @ivar cloud: Replica to the dots created or removed in the interval.
    @ivar values: The adds still alive at the end of the interval.
    """

    start: dict[Replica, int] = attrs.Factory(dict)
    end: dict[Replica, int] = attrs.Factory(dict)
    cloud: dict[Replica, set[int]] = attrs.Factory(dict)
    values: dict[Tag, Entry] = attrs.Factory(dict)

    def size(self) -> int:
        """
        The number of values plus the number of dots: how Phoenix weighs a
        delta against a generation's budget.
        """
        return len(self.values) + sum(len(dots) for dots in self.cloud.values())

    def is_empty(self) -> bool:
        """
        Whether the delta carries no dot at all, and so nothing to merge.
        """
        return not any(self.cloud.values())

    def removes(self, tag: Tag) -> bool:
        """
        Whether the delta says C{tag} was removed: its dot is in the cloud
        but it has no value.
        """
        return tag not in self.values and tag[1] in self.cloud.get(tag[0], ())

    def copy(self) -> Delta:
        """
        A copy that shares only the (immutable) entries.
        """
        return Delta(
            dict(self.start),
            dict(self.end),
            {replica: set(dots) for replica, dots in self.cloud.items()},
            dict(self.values),
        )

    def restricted(self, replicas: Collection[Replica]) -> Delta:
        """
        The part of this delta about C{replicas}, as sent to a peer that
        knows only those.  Whole replicas are dropped, never parts of one,
        so the result is still a complete delta.
        """
        return self._filtered(replicas, keep=True)

    def without(self, replica: Replica) -> Delta:
        """
        This delta with every trace of C{replica} removed (it was
        permanently downed).
        """
        return self._filtered((replica,), keep=False)

    def _filtered(self, replicas: Collection[Replica], keep: bool) -> Delta:
        """
        A copy with only the replicas whose membership in C{replicas} is
        C{keep}.
        """
        return Delta(
            {r: c for r, c in self.start.items() if (r in replicas) == keep},
            {r: c for r, c in self.end.items() if (r in replicas) == keep},
            {r: set(d) for r, d in self.cloud.items() if (r in replicas) == keep},
            {t: e for t, e in self.values.items() if (t[0] in replicas) == keep},
        )


def contiguous(a: Delta, b: Delta) -> bool:
    """
    Whether the ranges of C{a} and C{b} touch or overlap on every replica
    they share, so that their union leaves no gap.
    """
    for replica in a.end.keys() & b.end.keys():
        if b.end[replica] < a.start[replica] or a.end[replica] < b.start[replica]:
            return False
    return True


def merge_deltas(a: Delta, b: Delta) -> Delta | None:
    """
    Fold two deltas into one covering both intervals, or C{None} when they
    are not contiguous (the union would claim dots it does not hold).

    The result does not depend on the order of the arguments: a value
    survives when either delta holds it and neither removes it.
    """
    if not contiguous(a, b):
        return None
    result = a.copy()
    absorb(result, b)
    return result


def absorb(a: Delta, b: Delta) -> None:
    """
    Fold C{b} into C{a}, in place, in O(size of C{b}).  The two must be
    L{contiguous}.
    """
    for replica, clock in b.start.items():
        a.start[replica] = min(a.start.get(replica, clock), clock)
    for replica, clock in b.end.items():
        a.end[replica] = max(a.end.get(replica, clock), clock)
    values = a.values
    for replica, dots in b.cloud.items():
        for dot in dots:
            tag = (replica, dot)
            if tag in values and tag not in b.values:
                del values[tag]
    for tag, entry in b.values.items():
        if tag not in values and not a.removes(tag):
            values[tag] = entry
    for replica, dots in b.cloud.items():
        a.cloud.setdefault(replica, set()).update(dots)


@attrs.frozen
class Behind:
    """
    How far a requester is behind on one replica.

    @ivar has: The requester's contiguous clock for the replica.
    @ivar wants: The clock it should reach.
    """

    has: int
    wants: int


@attrs.define
class DeltaGenerations:
    """
    A sliding window of recent history at a few sizes, as in Phoenix: each
    generation is the fold of the most recent deltas that fits its budget,
    smallest first.  Local deltas, remote heartbeat deltas and delta
    transfers are all pushed, so a node can serve catch-ups covering other
    replicas too.

    @ivar max_sizes: The budget of each generation, ascending.
    @ivar generations: The generations, one per budget once anything was
        pushed.  They are folded into in place: copy what leaves.
    """

    max_sizes: tuple[int, ...] = DEFAULT_MAX_DELTA_SIZES
    generations: list[Delta] = attrs.Factory(list)

    def push(self, delta: Delta) -> None:
        """
        Fold C{delta} into every generation, in O(size of C{delta}) but for
        window shifts.  A generation that cannot take it (not contiguous,
        or over budget) restarts from the next smaller generation, which
        holds it already, or from the delta alone.
        """
        if delta.is_empty():
            return
        if not self.generations:
            self.generations = [delta.copy() for _ in self.max_sizes]
            return
        size = delta.size()
        smaller: Delta | None = None
        for index, max_size in enumerate(self.max_sizes):
            generation = self.generations[index]
            if generation.size() + size <= max_size and contiguous(generation, delta):
                absorb(generation, delta)
            elif smaller is not None and smaller.size() <= max_size:
                generation = self.generations[index] = smaller.copy()
            else:
                generation = self.generations[index] = delta.copy()
            smaller = generation

    def clear(self) -> None:
        """
        Forget every generation (after a full-state transfer).
        """
        self.generations = []

    def prune(self, replica: Replica) -> None:
        """
        Remove every trace of a permanently downed C{replica}, so that no
        catch-up can bring its entries back.
        """
        self.generations = [g.without(replica) for g in self.generations]

    def find(self, behind: Mapping[Replica, Behind]) -> Delta | None:
        """
        The smallest generation that brings a requester forward on every
        replica in C{behind} without leaving a gap, or C{None} when the
        requester needs a full state.  It is ours: copy it to send it.
        """
        for generation in self.generations:
            if _covers(generation, behind):
                return generation
        return None


def _covers(generation: Delta, behind: Mapping[Replica, Behind]) -> bool:
    start, end = generation.start, generation.end
    for replica, lag in behind.items():
        first = start.get(replica)
        if first is None or first > lag.has or end[replica] < lag.wants:
            return False
    return True


def dots_to_runs(dots: Iterable[int]) -> list[list[int]]:
    """
    Sorted dots as inclusive C{[first, last]} runs: a burst of joins is a
    single run on the wire.
    """
    runs: list[list[int]] = []
    for dot in sorted(dots):
        if runs and runs[-1][1] == dot - 1:
            runs[-1][1] = dot
        else:
            runs.append([dot, dot])
    return runs
