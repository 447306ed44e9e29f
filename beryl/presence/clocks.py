"""
Vector clocks as the tracker compares them to decide whom to ask for a
transfer.  Pure functions.
"""

from __future__ import annotations

from typing import Mapping

from beryl.presence.entries import Replica

__all__ = ["VectorClock", "append_clock", "dominates", "upperbound"]

VectorClock = Mapping[Replica, int]
"""A vector clock: replica to its contiguous clock (missing means 0)."""


def dominates(a: VectorClock, b: VectorClock) -> bool:
    """
    Whether C{a} has seen everything C{b} has.
    """
    return all(a.get(replica, 0) >= clock for replica, clock in b.items())


def upperbound(*clocks: VectorClock) -> dict[Replica, int]:
    """
    The key-wise maximum of C{clocks}.
    """
    result: dict[Replica, int] = {}
    for clock in clocks:
        for replica, value in clock.items():
            if value > result.get(replica, -1):
                result[replica] = value
    return result


def append_clock(
    clockset: Mapping[Replica, VectorClock], replica: Replica, clock: VectorClock
) -> dict[Replica, VectorClock]:
    """
    Add C{replica}'s C{clock} to a set of mutually non-dominated clocks:
    the replicas left in the set are the ones worth asking for a transfer.
    An empty clock is ignored.
    """
    if not clock:
        return dict(clockset)
    if dominates(clock, upperbound(*clockset.values())):
        return {replica: clock}
    if any(dominates(other, clock) for other in clockset.values()):
        return dict(clockset)
    kept = {
        r: c for r, c in clockset.items() if r != replica and not dominates(clock, c)
    }
    kept[replica] = clock
    return kept
