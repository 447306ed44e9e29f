"""
Presence benchmark (not a test): the cost of the replicated CRDT and its
tracker, in-process, on a simulated clock.

  (a) merge + diff cost per join into a topic of 1,000 vs 10,000 presences,
      and the cost of listing such a topic;
  (b) three trackers with 10,000 presences each: wall time and simulated
      time to converge after a burst of joins, and for a fourth node that
      joins late to catch up;
  (c) bytes on the wire per tick: the burst, steady churn, idle.

    python bench/bench_presence.py [--joins 2000] [--burst 10000]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from twisted.internet.task import Clock

from beryl.presence.tracker import CHANNEL, PresenceTracker
from beryl.testing import FakeNetwork

PERIOD = 1.5


def per_join_cost(size: int, joins: int) -> tuple[float, float, float, float]:
    """
    Microseconds per join on A carried to B (a tick of both trackers, the
    delta on the wire, B's merge and its diff in Phoenix format); the same
    join on the pure state alone; and milliseconds per list of the topic,
    against rebuilding it from the CRDT.
    """
    clock = Clock()
    network = FakeNetwork(clock, latency=0)
    a_node, b_node = network.node("a"), network.node("b")
    a = PresenceTracker(a_node, clock, broadcast_period=PERIOD)
    b = PresenceTracker(b_node, clock, broadcast_period=PERIOD)
    for tracker, node in ((a, a_node), (b, b_node)):
        network.connect(node)
        tracker.startService()
    diffs: list[Any] = []
    b.subscribe_diffs(lambda topic, diff: diffs.append(diff))
    for number in range(size):
        a.track("big", f"user{number}", f"s{number}", {"online_at": number})
    while len(b.list("big")) < size:
        clock.advance(PERIOD)
    clock.advance(PERIOD)
    diffs.clear()
    # Each join travels in its own tick.
    started = time.perf_counter()
    for number in range(joins):
        a.track("big", f"new{number}", f"n{number}", {"online_at": number})
        clock.advance(PERIOD)
        clock.advance(0)
    per_join = (time.perf_counter() - started) / joins * 1e6
    assert len(diffs) == joins, (len(diffs), joins)
    started = time.perf_counter()
    rounds = 20
    for _ in range(rounds):
        listed = b.list("big")
    per_list = (time.perf_counter() - started) / rounds * 1e3
    assert len(listed) == size + joins
    # Baseline: building the list from the CRDT's entries on every call.
    started = time.perf_counter()
    for _ in range(rounds):
        rebuilt = {
            key: {"metas": [dict(entry.meta) for entry in entries]}
            for key, entries in b.state.grouped("big").items()
        }
    per_rebuild = (time.perf_counter() - started) / rounds * 1e3
    assert len(rebuilt) == size + joins
    # The same joins, on the pure state alone.
    started = time.perf_counter()
    for number in range(joins):
        a.state.join("big", f"more{number}", f"m{number}", {"online_at": number})
        b.state.merge(a.state.take_delta())
    per_join_state = (time.perf_counter() - started) / joins * 1e6
    for tracker in (a, b):
        tracker.stopService()
    return per_join, per_join_state, per_list, per_rebuild


def converge(burst: int) -> None:
    """
    Three trackers, each tracking C{burst} presences at once; tick until
    every node lists all of them.
    """
    clock = Clock()
    network = FakeNetwork(clock, latency=0.001)
    trackers = []
    for name in "abc":
        node = network.node(name)
        tracker = PresenceTracker(node, clock, broadcast_period=PERIOD)
        network.connect(node)
        tracker.startService()
        trackers.append(tracker)
    for _ in range(20):
        clock.advance(PERIOD / 4)
    idle_start, idle_clock = len(network.log), clock.seconds()
    for _ in range(int(33 / 0.25)):
        clock.advance(0.25)
    idle_bytes = sum(
        len(s.data) for s in network.log[idle_start:] if s.channel == CHANNEL
    )
    idle_ticks = (clock.seconds() - idle_clock) / PERIOD

    log_start = len(network.log)
    started = time.perf_counter()
    for index, tracker in enumerate(trackers):
        for number in range(burst):
            tracker.track(
                "room",
                f"user{index}-{number}",
                f"s{index}-{number}",
                {"online_at": number},
            )
    tracked = time.perf_counter() - started
    began = clock.seconds()
    started = time.perf_counter()
    while not all(len(t.list("room")) == 3 * burst for t in trackers):
        clock.advance(0.05)
        if clock.seconds() - began > 60:
            raise RuntimeError("did not converge")
    wall = time.perf_counter() - started
    simulated = clock.seconds() - began
    burst_messages = [s for s in network.log[log_start:] if s.channel == CHANNEL]
    burst_bytes = sum(len(s.data) for s in burst_messages)
    largest = max(len(s.data) for s in burst_messages)
    print(
        f"(b) converge: 3 trackers x {burst:,} joins burst -> tracking took {tracked:.2f} s wall, "
        f"convergence {wall:.2f} s wall, {simulated:.2f} s simulated ({simulated / PERIOD:.1f} ticks)"
    )
    print(
        f"(c) wire, burst: {burst_bytes / 1e6:.2f} MB in {len(burst_messages)} messages "
        f"(largest {largest / 1e6:.2f} MB, {burst_bytes / (3 * burst):.0f} B per presence per all peers)"
    )

    # Steady churn: 10 joins and 10 leaves per node per tick.
    churn_start, churn_clock = len(network.log), clock.seconds()
    for tick in range(20):
        for index, tracker in enumerate(trackers):
            for number in range(10):
                tracker.untrack(
                    "room",
                    f"user{index}-{tick * 10 + number}",
                    f"s{index}-{tick * 10 + number}",
                )
                tracker.track(
                    "room",
                    f"churn{index}-{tick}-{number}",
                    f"c{index}-{tick}-{number}",
                    {"online_at": tick},
                )
        for _ in range(6):
            clock.advance(PERIOD / 6)
    churn_bytes = sum(
        len(s.data) for s in network.log[churn_start:] if s.channel == CHANNEL
    )
    churn_ticks = (clock.seconds() - churn_clock) / PERIOD
    print(
        f"(c) wire, churn of 20 changes/node/tick: {churn_bytes / churn_ticks / 3:,.0f} B per node per tick "
        f"(to 2 peers); idle: {idle_bytes / idle_ticks / 3:,.0f} B per node per tick"
    )

    # A late node catches up with everything by transfer.
    node = network.node("d")
    late = PresenceTracker(node, clock, broadcast_period=PERIOD)
    network.connect(node)
    late.startService()
    trackers.append(late)
    late_start, began = len(network.log), clock.seconds()
    started = time.perf_counter()
    while len(late.list("room")) != 3 * burst:
        clock.advance(0.05)
        if clock.seconds() - began > 60:
            raise RuntimeError("late node did not catch up")
    wall = time.perf_counter() - started
    acks = [
        s
        for s in network.log[late_start:]
        if s.channel == CHANNEL and s.destination == "d" and b'"transfer_ack"' in s.data
    ]
    print(
        f"(b) late node: caught up with {3 * burst:,} presences in {wall:.2f} s wall, "
        f"{clock.seconds() - began:.2f} s simulated, via {len(acks)} transfer(s) of "
        f"{sum(len(s.data) for s in acks) / 1e6:.2f} MB"
    )
    for tracker in trackers:
        tracker.stopService()
    clock.advance(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--joins", type=int, default=2000)
    parser.add_argument("--burst", type=int, default=10000)
    args = parser.parse_args()
    results: dict[int, tuple[float, float, float, float]] = {}
    for size in (1000, 10000):
        results[size] = per_join_cost(size, args.joins)
        per_join, per_join_state, per_list, per_rebuild = results[size]
        print(
            f"(a) topic of {size:>6,}: {per_join:6.1f} us per join (track + tick + wire + merge + Phoenix diff), "
            f"{per_join_state:5.1f} us state only; list() {per_list:6.2f} ms "
            f"(baseline, rebuilt from the CRDT: {per_rebuild:6.2f} ms)"
        )
    ratio = results[10000][0] / results[1000][0]
    print(f"(a) per-join cost ratio 10,000 vs 1,000 presences: {ratio:.2f}x")
    converge(args.burst)


if __name__ == "__main__":
    main()
