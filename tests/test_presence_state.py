"""
Tests for L{beryl.presence.state}: the presence CRDT, its deltas, delta
generations and wire forms, following the property checklist of
C{reference/presence-pubsub.md} section 3.
"""

from __future__ import annotations

import os
import random
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from beryl.presence.clocks import Clock, append_clock, dominates, upperbound
from beryl.presence.codec import CodecError, remote_from_json, remote_to_json
from beryl.presence.delta import Delta, DeltaGenerations, merge_deltas
from beryl.presence.entries import Replica
from beryl.presence.state import (
    AlreadyTrackedError,
    Diff,
    FullState,
    NoPresenceError,
    Remote,
    State,
    random_ref,
)
from tests.presence_scenarios import (
    SCENARIOS,
    Cluster,
    checked,
    full_join,
    make_states,
    operations,
    owned_current,
    round_trip,
    shape,
    visible_set,
)

PROPERTY = settings(
    # BERYL_PROPERTY_EXAMPLES=5000 for a deeper run than CI's.
    max_examples=int(os.environ.get("BERYL_PROPERTY_EXAMPLES", "200")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class LocalOperationTests(SynchronousTestCase):
    """
    Local joins, leaves and updates on one replica.
    """

    def test_join_visible_leave_gone(self) -> None:
        """A local join is visible at once and a local leave removes it."""
        [state] = make_states(1)
        diff = state.join("room", "alice", "sock1", {"device": "web"})
        [(tag, entry)] = diff.joins
        self.assertEqual(entry.meta, {"device": "web", "phx_ref": "n0-0000000000001"})
        self.assertEqual(state.grouped("room"), {"alice": [entry]})
        self.assertEqual(state.leave("room", "alice", "sock1").leaves, [(tag, entry)])
        self.assertEqual(state.grouped("room"), {})
        self.assertEqual(state.leave("room", "alice", "sock1"), Diff())

    def test_duplicate_join_refused(self) -> None:
        """Tracking the same owner, topic and key twice is refused."""
        [state] = make_states(1)
        state.join("room", "alice", "sock1", {})
        self.assertRaises(AlreadyTrackedError, state.join, "room", "alice", "sock1", {})
        state.join("room", "alice", "sock2", {})
        state.join("other", "alice", "sock1", {})
        self.assertEqual(len(state.get_by_key("room", "alice")), 2)

    def test_update_refs(self) -> None:
        """An update gives a new phx_ref and the old one as phx_ref_prev."""
        [state] = make_states(1)
        old = state.join("room", "alice", "s", {"a": 1}).joins[0][1]
        diff = state.update("room", "alice", "s", {"a": 2})
        self.assertEqual(diff.leaves[0][1], old)
        new = diff.joins[0][1]
        self.assertEqual(new.meta["a"], 2)
        self.assertEqual(new.meta["phx_ref_prev"], old.meta["phx_ref"])
        self.assertNotEqual(new.meta["phx_ref"], old.meta["phx_ref"])
        self.assertEqual(state.get_by_key("room", "alice"), [new])
        self.assertRaises(NoPresenceError, state.update, "room", "bob", "s", {})

    def test_leave_all(self) -> None:
        """leave_all removes an owner's presences on every topic and no others."""
        [state] = make_states(1)
        state.join("a", "k", "sock1", {})
        state.join("b", "k", "sock1", {})
        kept = state.join("a", "k", "sock2", {}).joins
        self.assertEqual(len(state.leave_all("sock1").leaves), 2)
        self.assertEqual(list(state.visible().items()), kept)

    def test_random_ref_shape(self) -> None:
        """phx_refs are 16 URL-safe base64 characters."""
        ref = random_ref()
        self.assertEqual(len(ref), 16)
        self.assertTrue(
            set(ref)
            <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        )

    def test_clock_accounting(self) -> None:
        """Join, leave, join on A moves B's view of A's clock 1, 2, 3 with empty clouds."""
        a, b = make_states(2)
        seen = []
        for step in [
            lambda: a.join("t", "k", "o", {}),
            lambda: a.leave("t", "k", "o"),
            lambda: a.join("t", "k", "o", {}),
        ]:
            step()
            b.merge(a.take_delta())
            seen.append(b.context[a.replica])
        self.assertEqual(seen, [1, 2, 3])
        self.assertEqual(b.clouds, {})
        self.assertEqual(visible_set(b), visible_set(a))


class MergeTests(SynchronousTestCase):
    """
    Merging deltas and full states between replicas.
    """

    def test_remote_join_reported_once(self) -> None:
        """A remote join is reported once; merging the same delta again reports nothing."""
        a, b = make_states(2)
        a.join("t", "k", "o", {})
        delta = a.take_delta()
        self.assertEqual(len(b.merge(delta).joins), 1)
        before = shape(b)
        self.assertEqual(b.merge(delta), Diff())
        self.assertEqual(b.merge(a.full_state()), Diff())
        self.assertEqual(shape(b), before)

    def test_unknown_replica_ignored(self) -> None:
        """Values of a replica not known locally are not admitted."""
        [a] = make_states(1)
        stranger = State(("x", "1"))
        stranger.join("t", "k", "o", {})
        self.assertEqual(a.merge(stranger.take_delta()), Diff())
        self.assertEqual(a.merge(stranger.full_state()), Diff())
        self.assertEqual(a.visible(), {})

    def test_remote_update_is_leave_and_join(self) -> None:
        """A remote update arrives as one merge with a leave of the old value and a join of the new."""
        a, b = make_states(2)
        a.join("t", "k", "o", {"v": 1})
        b.merge(a.take_delta())
        a.update("t", "k", "o", {"v": 2})
        diff = b.merge(a.take_delta())
        self.assertEqual([e.meta["v"] for _, e in diff.leaves], [1])
        self.assertEqual([e.meta["v"] for _, e in diff.joins], [2])
        self.assertEqual(len(b.get_by_key("t", "k")), 1)

    def test_transitive_joins_and_removes(self) -> None:
        """Joins and removes made on A reach C through B while A and C are split."""
        a, b, c = make_states(3)
        a.join("t", "k", "o", {})
        b.merge(a.take_delta())
        c.merge(b.extract(c.replica, c.clock()))
        self.assertEqual(visible_set(c), visible_set(a))
        a.leave("t", "k", "o")
        b.merge(a.take_delta())
        # B relays the removal it observed in its own next delta.
        c.merge(b.take_delta())
        self.assertEqual(c.visible(), {})

    def test_owner_authority(self) -> None:
        """A merge never removes the local replica's own values."""
        a, b = make_states(2)
        a.join("t", "k", "o", {})
        forged = Delta(cloud={a.replica: {1}})
        self.assertEqual(a.merge(forged), Diff())
        self.assertEqual(a.merge(FullState({a.replica: 5}, {}, {})), Diff())
        self.assertEqual(len(a.visible()), 1)

    def test_concurrent_add_wins(self) -> None:
        """A re-add survives the relayed removal of the add before it."""
        a, b, c = make_states(3)
        a.join("t", "k", "o", {"v": 1})
        first = a.take_delta()
        b.merge(first)
        c.merge(first)
        a.leave("t", "k", "o")
        b.merge(a.take_delta())
        relay = b.take_delta()
        a.join("t", "k", "o", {"v": 2})
        readd = a.take_delta()
        # C gets the re-add before B's relayed removal of the first add.
        c.merge(readd)
        c.merge(relay)
        self.assertEqual([e.meta["v"] for e in c.visible().values()], [2])
        # Same key tracked by two replicas; one leaving keeps the other.
        b.join("t", "k", "o", {"v": 3})
        a.merge(b.take_delta())
        b.leave("t", "k", "o")
        a.merge(b.take_delta())
        self.assertEqual([e.meta["v"] for e in a.visible().values()], [2])

    def test_stale_full_state_does_not_overwrite(self) -> None:
        """A stale full state never replaces a newer value of the same entry (Phoenix #148)."""
        a, b, c = make_states(3)
        a.join("t", "k", "o", {"v": 1})
        b.merge(a.take_delta())
        stale = b.full_state()
        for version in range(2, 6):
            a.update("t", "k", "o", {"v": version})
            delta = a.take_delta()
        # C sees only the latest update: a gap before it.
        c.merge(delta)
        self.assertNotEqual(c.clouds, {})
        c.merge(stale)
        self.assertEqual([e.meta["v"] for e in c.get_by_key("t", "k")], [5])
        # And the other way round: the stale value first, then the newer one.
        d = make_states(4)[3]
        for other in (a, b, c):
            d.replica_up(other.replica)
        d.merge(stale)
        d.merge(delta)
        self.assertEqual([e.meta["v"] for e in d.get_by_key("t", "k")], [5])

    def test_extract_restricted_to_known(self) -> None:
        """An extract carries only the replicas the requester knows, less the requester itself."""
        a, b, c = make_states(3)
        for state in (a, b, c):
            state.join("t", "k", "o", {})
        b.merge(a.take_delta())
        b.merge(c.take_delta())
        lonely = State(("n9", "1"))
        b.replica_up(lonely.replica)
        lonely.replica_up(b.replica)
        lonely.join("t", "k", "o", {})
        b.take_delta()
        clock = {lonely.replica: 1, b.replica: 0}
        delta = b.extract(lonely.replica, clock)
        assert isinstance(delta, Delta)
        self.assertEqual(set(delta.end), {b.replica})
        self.assertEqual({t[0] for t in delta.values}, {b.replica})
        b.generations.clear()
        full = b.extract(lonely.replica, clock)
        assert isinstance(full, FullState)
        self.assertEqual(set(full.context), {b.replica})
        self.assertEqual({t[0] for t in full.values}, {b.replica})

    def test_extract_nothing_when_up_to_date(self) -> None:
        """A requester that is not behind gets an empty delta."""
        a, b = make_states(2)
        a.join("t", "k", "o", {})
        b.merge(a.take_delta())
        payload = a.extract(b.replica, b.clock())
        assert isinstance(payload, Delta)
        self.assertTrue(payload.is_empty())


class LivenessTests(SynchronousTestCase):
    """
    Replicas going down, up, and permanently down.
    """

    def two_replicas(self) -> tuple[State, State]:
        """
        A with two presences, and B that has merged them.
        """
        a, b = make_states(2)
        a.join("t", "k1", "o", {})
        a.join("t", "k2", "o", {})
        b.merge(a.take_delta())
        return a, b

    def test_down_hides_up_reveals(self) -> None:
        """Down hides a replica's values as leaves; up with the same incarnation restores them as joins."""
        a, b = self.two_replicas()
        before = visible_set(b)
        down = checked(self, b, lambda: b.replica_down(a.replica))
        self.assertEqual(len(down.leaves), 2)
        self.assertEqual(b.grouped("t"), {})
        self.assertEqual(b.get_by_key("t", "k1"), [])
        self.assertNotIn(a.replica, b.clock())
        self.assertEqual(b.replicas()[a.replica], False)
        # While down, merging its state reveals nothing.
        a.join("t", "k3", "o", {})
        self.assertEqual(checked(self, b, lambda: b.merge(a.take_delta())), Diff())
        up = checked(self, b, lambda: b.replica_up(a.replica))
        self.assertEqual(len(up.joins), 3)
        self.assertEqual(set(before) | {(a.replica, 3)}, set(visible_set(b)))

    def test_recover_reveals_only_what_remains(self) -> None:
        """Recovering a down replica with its changes reveals its current values in one diff, never the removed ones."""
        a, b = self.two_replicas()
        b.replica_down(a.replica)
        a.leave("t", "k1", "o")
        a.join("t", "k3", "o", {})
        a.take_delta()
        catch_up = a.extract(b.replica, {**b.clock(), a.replica: b.context[a.replica]})
        diff = checked(self, b, lambda: b.recover(a.replica, catch_up))
        self.assertEqual(sorted(e.key for _, e in diff.joins), ["k2", "k3"])
        self.assertEqual(diff.leaves, [])
        self.assertEqual(set(b.grouped("t")), {"k2", "k3"})
        self.assertTrue(b.is_up(a.replica))
        # Nothing missed: recovering reveals what is held, as replica_up does.
        b.replica_down(a.replica)
        self.assertEqual(len(b.recover(a.replica).joins), 2)

    def test_permdown_deletes_for_good(self) -> None:
        """Permdown deletes a replica's values, also from stored deltas, and they never come back."""
        a, b = self.two_replicas()
        c = make_states(3)[2]
        c.replica_up(a.replica)
        c.replica_up(b.replica)
        old_deltas = list(b.generations.generations)
        full = a.full_state()
        diff = checked(self, b, lambda: b.permdown(a.replica))
        self.assertEqual(len(diff.leaves), 2)
        self.assertNotIn(a.replica, b.context)
        self.assertEqual(list(b.values()), [])
        for generation in b.generations.generations:
            self.assertEqual(generation.values, {})
            self.assertNotIn(a.replica, generation.cloud)
        stale: list[Remote] = [*old_deltas, full]
        for remote in stale:
            self.assertEqual(b.merge(remote), Diff())
        self.assertEqual(b.replica_up(a.replica), Diff())
        self.assertEqual(b.visible(), {})
        # Nothing B hands out any more carries A's values.
        payload = b.extract(c.replica, {a.replica: 0, b.replica: 0, c.replica: 0})
        self.assertEqual(payload.values, {})

    def test_new_incarnation_replaces_old(self) -> None:
        """Up of a new incarnation permdowns the old one, so down replicas stay bounded."""
        a, b = self.two_replicas()
        b.replica_down(a.replica)
        for number in range(2, 50):
            restarted = (a.replica[0], str(number))
            b.replica_up(restarted)
            b.replica_down(restarted)
        self.assertEqual(len(b.replicas()), 2)
        self.assertEqual(list(b.values()), [])

    def test_permdown_of_visible_replica_reports_leaves(self) -> None:
        """Up of a new incarnation reports the visible values of the old one as leaves."""
        a, b = self.two_replicas()
        diff = checked(self, b, lambda: b.replica_up((a.replica[0], "2")))
        self.assertEqual(len(diff.leaves), 2)


class DeltaTests(SynchronousTestCase):
    """
    Folding deltas and keeping generations.
    """

    def test_non_contiguous_deltas_do_not_merge(self) -> None:
        """Deltas with a gap between them do not fold, in either order."""
        [a] = make_states(1)
        a.join("t", "k1", "o", {})
        first = a.take_delta()
        a.join("t", "k2", "o", {})
        a.take_delta()
        a.join("t", "k3", "o", {})
        third = a.take_delta()
        self.assertIsNone(merge_deltas(first, third))
        self.assertIsNone(merge_deltas(third, first))

    def test_merge_deltas_keeps_tombstones(self) -> None:
        """Folding an add with its removal drops the value but keeps its dot."""
        [a] = make_states(1)
        a.join("t", "k", "o", {})
        added = a.take_delta()
        a.leave("t", "k", "o")
        removed = a.take_delta()
        folded = merge_deltas(added, removed)
        assert folded is not None
        self.assertEqual(folded.values, {})
        self.assertEqual(folded.cloud, {a.replica: {1, 2}})
        self.assertEqual(folded, merge_deltas(removed, added))

    def test_generation_window(self) -> None:
        """Generations hold the latest history that fits each budget."""
        generations = DeltaGenerations((2, 5, 6))
        [a] = make_states(1)
        for number in range(4):
            a.join("t", f"k{number}", "o", {})
            generations.push(a.take_delta())
        sizes = [g.size() for g in generations.generations]
        # The largest generation would overflow, so it shifts to the
        # middle one's window.
        self.assertEqual(sizes, [2, 4, 4])
        self.assertEqual([g.end[a.replica] for g in generations.generations], [4, 4, 4])
        self.assertEqual(
            [g.start[a.replica] for g in generations.generations], [3, 2, 2]
        )
        before = list(generations.generations)
        generations.push(Delta(start={a.replica: 4}, end={a.replica: 4}))
        self.assertEqual(generations.generations, before)

    def test_extract_picks_smallest_covering_generation(self) -> None:
        """A requester a little behind gets a small delta, a long-gone one the full state."""
        a, b = make_states(2)
        for number in range(30):
            a.join("t", f"k{number}", "o", {})
            delta = a.take_delta()
            if number < 25:
                b.merge(delta)
        payload = a.extract(b.replica, b.clock())
        assert isinstance(payload, Delta)
        self.assertLessEqual(payload.size(), 100)
        self.assertLessEqual(payload.start[a.replica], 25)
        fresh = State(("n5", "1"))
        a.replica_up(fresh.replica)
        fresh.replica_up(a.replica)
        a.generations.clear()
        self.assertIsInstance(a.extract(fresh.replica, fresh.clock()), FullState)


def _append_clock_before(
    clockset: dict[Replica, Clock], replica: Replica, clock: Clock
) -> dict[Replica, Clock]:
    """
    L{append_clock} as it was before redundant checks were dropped.
    """
    if not clock:
        return dict(clockset)
    upper = upperbound(*clockset.values())
    if dominates(clock, upper):
        return {replica: clock}
    if dominates(upper, clock) and any(
        dominates(other, clock) for other in clockset.values()
    ):
        return dict(clockset)
    kept = {
        r: c for r, c in clockset.items() if r != replica and not dominates(clock, c)
    }
    if not any(dominates(other, clock) for other in kept.values()):
        kept[replica] = clock
    return kept


_CLOCK_REPLICAS = [("x", "1"), ("y", "1"), ("z", "1")]
_CLOCKS = st.dictionaries(st.sampled_from(_CLOCK_REPLICAS), st.integers(0, 3))


class ClockTests(SynchronousTestCase):
    """
    Clock comparisons that pick transfer partners.
    """

    def test_dominates(self) -> None:
        """A clock dominates itself and smaller clocks, not one with an extra replica."""
        x, y = ("x", "1"), ("y", "1")
        self.assertTrue(dominates({x: 2}, {x: 2}))
        self.assertTrue(dominates({x: 2, y: 1}, {x: 1}))
        self.assertFalse(dominates({x: 2}, {x: 1, y: 1}))

    def test_append_clock_collapses(self) -> None:
        """The clockset keeps only mutually non-dominated clocks."""
        x, y, me = ("x", "1"), ("y", "1"), ("me", "1")
        clockset = append_clock({}, x, {x: 3, y: 1})
        clockset = append_clock(clockset, y, {x: 3, y: 2})
        self.assertEqual(list(clockset), [y])
        clockset = append_clock(clockset, me, {x: 1, y: 1})
        self.assertEqual(list(clockset), [y])
        self.assertEqual(list(append_clock(clockset, me, {x: 9, y: 9})), [me])

    @given(
        st.lists(st.tuples(st.sampled_from(_CLOCK_REPLICAS), _CLOCKS), max_size=8),
        st.sampled_from(_CLOCK_REPLICAS),
        _CLOCKS,
    )
    def test_append_clock_as_before(
        self, appends: list[tuple[Replica, Clock]], replica: Replica, clock: Clock
    ) -> None:
        """append_clock answers exactly as its earlier, longer form did, order included."""
        clockset: dict[Replica, Clock] = {}
        for r, c in appends:
            expected = _append_clock_before(clockset, r, c)
            clockset = append_clock(clockset, r, c)
            self.assertEqual(list(clockset.items()), list(expected.items()))
        # Also from a clockset that is not an antichain.
        arbitrary = dict(appends)
        self.assertEqual(
            list(append_clock(arbitrary, replica, clock).items()),
            list(_append_clock_before(arbitrary, replica, clock).items()),
        )


class CodecTests(SynchronousTestCase):
    """
    Wire forms of deltas and full states.
    """

    def test_malformed_rejected(self) -> None:
        """Malformed payloads raise CodecError."""
        for bad in [
            None,
            {"kind": "delta"},
            {"kind": "x", "replicas": [], "cloud": [], "values": []},
            {
                "kind": "delta",
                "replicas": [["a", "1"]],
                "range": [],
                "cloud": [[3, []]],
                "values": [],
            },
            {
                "kind": "delta",
                "replicas": [["a", "1"]],
                "range": [],
                "cloud": [[0, [[5, 2]]]],
                "values": [],
            },
            {
                "kind": "state",
                "replicas": [],
                "context": [],
                "cloud": [],
                "values": [[0, 1, "t", "k", "o", {}]],
            },
        ]:
            self.assertRaises(CodecError, remote_from_json, bad)


class PropertyTests(SynchronousTestCase):
    """
    The CRDT laws, under random operations and random delivery.
    """

    @PROPERTY
    @given(SCENARIOS, st.randoms(use_true_random=False))
    def test_delivery_order_converges(
        self, scenario: tuple[int, list[Any]], rng: random.Random
    ) -> None:
        """Any interleaving, duplication or reordering of deltas converges, and every merge reports exactly its visible difference."""
        count, steps = scenario
        cluster = Cluster(self, count)
        cluster.run(steps)
        cluster.flush(rng)
        cluster.assert_converged()
        self.assertEqual(visible_set(cluster.states[0]), owned_current(cluster))

    @PROPERTY
    @given(SCENARIOS, st.randoms(use_true_random=False))
    def test_loss_with_anti_entropy_converges(
        self, scenario: tuple[int, list[Any]], rng: random.Random
    ) -> None:
        """Deltas lost for good are made up by transfers (generations or full states)."""
        count, steps = scenario
        cluster = Cluster(self, count)
        cluster.run(steps)
        for who in range(count):
            cluster.tick(who)
        cluster.anti_entropy()
        cluster.assert_converged()
        self.assertEqual(visible_set(cluster.states[0]), owned_current(cluster))

    @PROPERTY
    @given(SCENARIOS, st.integers(0, 3), st.integers(0, 3))
    def test_extract_brings_requester_up_to_date(
        self, scenario: tuple[int, list[Any]], requester: int, responder: int
    ) -> None:
        """After merging a peer's extract, the requester's clock dominates what the peer broadcast."""
        count, steps = scenario
        cluster = Cluster(self, count)
        cluster.run(steps)
        asking = cluster.states[requester % count]
        answering = cluster.states[responder % count]
        if answering.has_delta():
            answering.take_delta()
        payload = answering.extract(asking.replica, asking.clock())
        checked(self, asking, lambda: asking.merge(payload))
        self.assertTrue(dominates(asking.clock(), answering.clock()))
        self.assertEqual(round_trip(payload), payload)

    @PROPERTY
    @given(SCENARIOS)
    def test_merge_laws(self, scenario: tuple[int, list[Any]]) -> None:
        """Full-state merge is commutative, associative and idempotent."""
        count, steps = scenario
        cluster = Cluster(self, max(count, 3))
        cluster.run(steps)
        a, b, c = cluster.states[:3]
        ab = full_join(a, b)
        self.assertEqual(shape(ab), shape(full_join(b, a)))
        self.assertEqual(
            shape(full_join(ab, c)),
            shape(full_join(a, full_join(b, c))),
        )
        again = ab.copy()
        self.assertEqual(again.merge(b.full_state()), Diff())
        self.assertEqual(again.merge(ab.full_state()), Diff())
        self.assertEqual(shape(again), shape(ab))

    @PROPERTY
    @given(SCENARIOS, st.randoms(use_true_random=False))
    def test_stale_states_change_nothing(
        self, scenario: tuple[int, list[Any]], rng: random.Random
    ) -> None:
        """Once converged, merging any earlier full state or delta changes nothing."""
        count, steps = scenario
        cluster = Cluster(self, count)
        cluster.run(steps)
        cluster.flush(rng)
        for state in cluster.states:
            before = shape(state)
            stale: list[Remote] = [*cluster.snapshots, *cluster.sent]
            for remote in stale:
                self.assertEqual(state.merge(remote), Diff())
            self.assertEqual(shape(state), before)

    @PROPERTY
    @given(SCENARIOS)
    def test_compaction_changes_nothing(self, scenario: tuple[int, list[Any]]) -> None:
        """Compacting a state, or folding a replica's deltas before merging them, never changes the visible set."""
        count, steps = scenario
        cluster = Cluster(self, count)
        cluster.run(steps)
        for state in cluster.states:
            before = shape(state)
            state.compact()
            self.assertEqual(shape(state), before)
        source = cluster.states[0]
        if source.has_delta():
            cluster.sent.append(source.take_delta())
        own = [d for d in cluster.sent if source.replica in d.end]
        if not own:
            return
        folded = own[0]
        for delta in own[1:]:
            merged = merge_deltas(folded, delta)
            assert merged is not None
            folded = merged
        one, many = State(("n9", "1")), State(("n9", "1"))
        for target in (one, many):
            target.replica_up(source.replica)
        one.merge(folded)
        for delta in own:
            many.merge(delta)
        self.assertEqual(shape(one), shape(many))

    @PROPERTY
    @given(SCENARIOS, st.integers(0, 3))
    def test_down_up_permdown(
        self, scenario: tuple[int, list[Any]], which: int
    ) -> None:
        """Down reports a replica's values as leaves, up restores them without a trace, permdown deletes them for good."""
        count, steps = scenario
        cluster = Cluster(self, count)
        cluster.run(steps)
        observer = cluster.states[0]
        gone = cluster.states[1 + which % (count - 1)].replica
        twin = observer.copy()
        held = {t for t, _ in observer.entries() if t[0] == gone}
        down = checked(self, observer, lambda: observer.replica_down(gone))
        self.assertEqual({t for t, _ in down.leaves}, held)
        self.assertNotIn(gone, observer.clock())
        for delta in cluster.sent:
            checked(self, observer, lambda: observer.merge(delta))  # noqa: B023
            twin.merge(delta)
        self.assertFalse(any(t[0] == gone for t in observer.visible()))
        held = {t for t, _ in observer.entries() if t[0] == gone}
        up = checked(self, observer, lambda: observer.replica_up(gone))
        self.assertEqual({t for t, _ in up.joins}, held)
        # Down then up leaves no trace.
        self.assertEqual(shape(observer), shape(twin))
        checked(self, observer, lambda: observer.permdown(gone))
        self.assertNotIn(gone, observer.context)
        stale: list[Remote] = [*cluster.sent, *cluster.snapshots]
        for remote in stale + twin.generations.generations:
            observer.merge(remote)
        observer.replica_up(gone)
        self.assertFalse(any(t[0] == gone for t, _ in observer.entries()))

    @PROPERTY
    @given(SCENARIOS, st.data(), st.integers(0, 3))
    def test_recover_reveals_no_ghost(
        self, scenario: tuple[int, list[Any]], data: st.DataObject, which: int
    ) -> None:
        """Recovering a down replica with its answer reveals exactly what it holds of its own now."""
        count, steps = scenario
        cluster = Cluster(self, count)
        cluster.run(steps)
        observer = cluster.states[0]
        back = cluster.states[1 + which % (count - 1)]
        observer.replica_down(back.replica)
        # Life goes on while it is down; the observer merges what reaches it.
        cluster.run(data.draw(st.lists(operations(count), max_size=20)))
        if back.has_delta():
            cluster.tick(cluster.states.index(back))
        seen = {**observer.clock(), back.replica: observer.context[back.replica]}
        answer = back.extract(observer.replica, seen)
        checked(self, observer, lambda: observer.recover(back.replica, answer))
        revealed = {
            t: v for t, v in visible_set(observer).items() if t[0] == back.replica
        }
        truth = {t: v for t, v in visible_set(back).items() if t[0] == back.replica}
        self.assertEqual(revealed, truth)

    @PROPERTY
    @given(SCENARIOS)
    def test_codec_round_trip(self, scenario: tuple[int, list[Any]]) -> None:
        """Deltas and full states survive the wire form, and encode the same a second time."""
        count, steps = scenario
        cluster = Cluster(self, count)
        cluster.run(steps)
        remotes: list[Remote] = [*cluster.sent, *cluster.snapshots]
        remotes += [s.full_state() for s in cluster.states]
        for remote in remotes:
            decoded = round_trip(remote)
            self.assertEqual(decoded, remote)
            self.assertEqual(remote_to_json(decoded), remote_to_json(remote))
