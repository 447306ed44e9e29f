"""
Scenarios for the presence CRDT's tests: replicas that exchange deltas
through a network that reorders, duplicates and withholds them, and the
hypothesis strategies that drive them.
"""

from __future__ import annotations

import random
from typing import Any, Callable

import orjson
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from beryl.presence.codec import remote_from_json, remote_to_json
from beryl.presence.state import Delta, Diff, FullState, Remote, State, Tag


def ref_counter(prefix: str) -> Callable[[], str]:
    """
    A deterministic C{phx_ref} generator: 16 characters, unique per prefix.
    """
    numbers = iter(range(1, 10**9))
    return lambda: f"{prefix}{next(numbers):0>{16 - len(prefix)}}"


def make_states(count: int) -> list[State]:
    """
    C{count} replicas named n0, n1, ... that all know each other.
    """
    states = [State((f"n{i}", "1"), ref_counter(f"n{i}-")) for i in range(count)]
    for state in states:
        for other in states:
            state.replica_up(other.replica)
    return states


def visible_set(state: State) -> dict[Tag, tuple[str, str, str, bytes]]:
    """
    The visible values of C{state} in a comparable form.
    """
    return {
        tag: (
            e.topic,
            e.key,
            e.owner,
            orjson.dumps(e.meta, option=orjson.OPT_SORT_KEYS),
        )
        for tag, e in state.visible().items()
    }


def shape(state: State) -> tuple[Any, ...]:
    """
    Everything two converged replicas must agree on: held values, context
    and clouds.
    """
    return (
        visible_set(state),
        sorted(state.values()),
        sorted(state.context.items()),
        sorted((r, sorted(d)) for r, d in state.clouds.items()),
    )


def checked(
    test: SynchronousTestCase, state: State, change: Callable[[], Diff]
) -> Diff:
    """
    Apply C{change} to C{state} and assert that the diff it reports is
    exactly the difference of the visible sets before and after.
    """
    before = visible_set(state)
    diff = change()
    after = visible_set(state)
    joined = {tag for tag, _ in diff.joins}
    left = {tag for tag, _ in diff.leaves}
    test.assertEqual(len(joined), len(diff.joins))
    test.assertEqual(len(left), len(diff.leaves))
    test.assertEqual(joined, after.keys() - before.keys())
    test.assertEqual(left, before.keys() - after.keys())
    for tag, entry in diff.leaves:
        test.assertEqual(before[tag][:3], (entry.topic, entry.key, entry.owner))
    for tag, entry in diff.joins:
        test.assertEqual(after[tag][:3], (entry.topic, entry.key, entry.owner))
    return diff


TOPICS = st.sampled_from(["t1", "t2"])
KEYS = st.sampled_from(["k1", "k2"])
OWNERS = st.sampled_from(["o1", "o2"])
METAS = st.integers(0, 3).map(lambda n: {"n": n})


def operations(replicas: int) -> st.SearchStrategy[tuple[Any, ...]]:
    """
    One step of a scenario: a local operation on a replica (a join of a
    tracked entry is an update, a leave of an untracked one a join), a tick
    (the replica hands out its delta), or the delivery of any delta sent so
    far (again, out of order, or to its own sender) to any replica.
    """
    who = st.integers(0, replicas - 1)
    return st.one_of(
        st.tuples(st.just("join"), who, TOPICS, KEYS, OWNERS, METAS),
        st.tuples(st.just("leave"), who, TOPICS, KEYS, OWNERS),
        st.tuples(st.just("leave_all"), who, OWNERS),
        st.tuples(st.just("tick"), who),
        st.tuples(st.just("tick"), who),
        st.tuples(st.just("deliver"), st.integers(0, 10**6), who),
        st.tuples(st.just("deliver"), st.integers(0, 10**6), who),
        st.tuples(st.just("deliver"), st.integers(0, 10**6), who),
    )


SCENARIOS = st.integers(2, 4).flatmap(
    lambda n: st.tuples(st.just(n), st.lists(operations(n), min_size=20, max_size=80))
)


class Cluster:
    """
    Replicas exchanging deltas through a network that may reorder,
    duplicate or (until L{flush}) withhold them.
    """

    def __init__(self, test: SynchronousTestCase, count: int) -> None:
        self.test = test
        self.states = make_states(count)
        self.sent: list[Delta] = []
        self.delivered: list[set[int]] = [set() for _ in range(count)]
        self.snapshots: list[FullState] = []

    def run(self, steps: list[tuple[Any, ...]]) -> None:
        """
        Apply every step of a scenario.
        """
        for step in steps:
            self.step(step)

    def step(self, step: tuple[Any, ...]) -> None:
        """
        Apply one step drawn from L{operations}.
        """
        kind, who = step[0], step[1]
        state = self.states[who] if kind != "deliver" else self.states[step[2]]
        if kind == "join":
            _, _, topic, key, owner, meta = step
            if state.local(topic, key, owner) is None:
                checked(self.test, state, lambda: state.join(topic, key, owner, meta))
            else:
                checked(self.test, state, lambda: state.update(topic, key, owner, meta))
        elif kind == "leave":
            _, _, topic, key, owner = step
            if state.local(topic, key, owner) is None:
                checked(self.test, state, lambda: state.join(topic, key, owner, {}))
            else:
                checked(self.test, state, lambda: state.leave(topic, key, owner))
        elif kind == "leave_all":
            checked(self.test, state, lambda: state.leave_all(step[2]))
        elif kind == "tick":
            self.tick(who)
        elif self.sent:
            self.deliver(step[1] % len(self.sent), step[2])

    def tick(self, who: int) -> None:
        """
        Replica C{who} sends its pending delta, if any (remembering a full
        snapshot of itself as a stale state for later).
        """
        state = self.states[who]
        if state.has_delta():
            self.snapshots.append(state.full_state())
            self.sent.append(state.take_delta())

    def deliver(self, message: int, target: int) -> None:
        """
        Merge sent delta number C{message} into replica C{target}.
        """
        state = self.states[target]
        self.delivered[target].add(message)
        checked(self.test, state, lambda: state.merge(self.sent[message]))

    def flush(self, rng: random.Random) -> None:
        """
        Tick everyone and deliver every delta nobody got yet, in a random
        order, until no replica has anything left to say.
        """
        while True:
            for who in range(len(self.states)):
                self.tick(who)
            pending = [
                (message, target)
                for target in range(len(self.states))
                for message in range(len(self.sent))
                if message not in self.delivered[target]
            ]
            if not pending:
                return
            rng.shuffle(pending)
            for message, target in pending:
                self.deliver(message, target)

    def anti_entropy(self) -> None:
        """
        Every replica asks every other for a transfer, as the tracker does
        when clocks differ, until nothing changes.
        """
        for _ in range(10):
            changed = False
            for state in self.states:
                for other in self.states:
                    if other is state:
                        continue
                    if other.has_delta():
                        other.take_delta()
                    before = shape(state)
                    payload = other.extract(state.replica, state.clock())
                    checked(self.test, state, lambda: state.merge(payload))  # noqa: B023
                    changed = changed or shape(state) != before
                    if state.has_delta():
                        state.take_delta()
            if not changed:
                return
        self.test.fail("anti-entropy did not settle")

    def assert_converged(self) -> None:
        """
        Every replica holds the same values with the same context and no
        cloud left.
        """
        first = shape(self.states[0])
        for state in self.states[1:]:
            self.test.assertEqual(shape(state), first)
        for state in self.states:
            self.test.assertEqual(state.clouds, {})


def owned_current(cluster: Cluster) -> dict[Tag, tuple[str, str, str, bytes]]:
    """
    The union of what each replica holds of its own: the truth every
    replica must converge to.
    """
    truth = {}
    for state in cluster.states:
        for tag, value in visible_set(state).items():
            if tag[0] == state.replica:
                truth[tag] = value
    return truth


def full_join(a: State, b: State) -> State:
    """
    C{a} after merging C{b}'s full state, leaving both untouched.
    """
    result = a.copy()
    result.merge(b.full_state())
    return result


def round_trip(remote: Remote) -> Remote:
    """
    C{remote} through its wire form and back.
    """
    return remote_from_json(orjson.loads(orjson.dumps(remote_to_json(remote))))
