"""
Tests for L{beryl.presence.tracker.PresenceTracker}: the IPresence service
and its replication between nodes, over an in-memory network and a
L{task.Clock}.
"""

from __future__ import annotations

import random
from typing import Any, Callable

import orjson
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from beryl.interfaces import (
    IMembershipObserver,
    INodeMessaging,
    IPresence,
)
from beryl.presence.codec import remote_to_json
from beryl.presence.state import AlreadyTrackedError, NoPresenceError
from beryl.presence.tracker import CHANNEL, PresenceTracker, timings_problem
from beryl.server import PresenceTimings
from beryl.wire import PresenceList
from tests.fake_messaging import FakeMessaging, FakeNetwork

PERIOD = 1.0
# An idle node heartbeats every 3 ticks (max_silent_periods 2); down_period
# must be at least 1.5 times that.
DOWN = 4.5
PERMDOWN = 20.0


def ref_counter(prefix: str) -> Callable[[], str]:
    """
    Deterministic phx_refs: C{prefix} and a counter, 16 characters.
    """
    numbers = iter(range(1, 10**9))
    return lambda: f"{prefix}{next(numbers):0>{16 - len(prefix)}}"


Diffs = list[tuple[str, dict[str, PresenceList]]]


class TrackerTestCase(SynchronousTestCase):
    """
    Trackers on a fake network; every service is stopped and every delayed
    call drained at the end.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.network = FakeNetwork(self.clock)
        self.trackers: list[PresenceTracker] = []
        self.addCleanup(self.stop_all)

    def stop_all(self) -> None:
        for tracker in self.trackers:
            self.assert_list_matches_state(tracker)
        for tracker in self.trackers:
            if tracker.running:
                tracker.stopService()
        self.clock.advance(1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def tracker(
        self, name: str, incarnation: str = "1", connect: bool = True
    ) -> tuple[PresenceTracker, Diffs]:
        """
        A started tracker on node C{name}, and the list its diffs go to.
        """
        messaging = self.network.node(name, incarnation)
        tracker = PresenceTracker(
            messaging,
            self.clock,
            broadcast_period=PERIOD,
            max_silent_periods=2,
            down_period=DOWN,
            permdown_period=PERMDOWN,
            ref_generator=ref_counter(f"{name}.{incarnation}."),
        )
        diffs: Diffs = []
        tracker.subscribe_diffs(lambda topic, diff: diffs.append((topic, diff)))
        if connect:
            self.network.connect(messaging)
        tracker.startService()
        self.trackers.append(tracker)
        return tracker, diffs

    def assert_list_matches_state(self, tracker: PresenceTracker) -> None:
        """
        The per-topic views that list() answers from agree with the CRDT's
        visible entries, metas in the same order, for every topic either
        knows.
        """
        topics = set(tracker._views) | set(tracker.state._by_topic)
        for topic in topics:
            from_state = {
                key: {"metas": [dict(entry.meta) for entry in entries]}
                for key, entries in tracker.state.grouped(topic).items()
            }
            listed = {
                key: {"metas": [dict(meta) for meta in value["metas"]]}
                for key, value in tracker.list(topic).items()
            }
            self.assertEqual(listed, from_state, topic)

    def pump(self, seconds: float, step: float = 0.05) -> None:
        """
        Let C{seconds} of clock time pass, in small steps.
        """
        for _ in range(round(seconds / step)):
            self.clock.advance(step)

    def messages(self, kind: str, source: str | None = None) -> list[Any]:
        """
        The presence messages of type C{kind} delivered so far: source,
        destination, message and time sent.
        """
        found = []
        for sent in self.network.log:
            if sent.channel != CHANNEL or not sent.delivered:
                continue
            if source is not None and sent.source != source:
                continue
            message = orjson.loads(sent.data)
            if message["type"] == kind:
                found.append((sent.source, sent.destination, message, sent.at))
        return found


def keys(presences: PresenceList) -> dict[str, list[str]]:
    """
    Key to the phx_refs of its metas.
    """
    return {k: [m["phx_ref"] for m in v["metas"]] for k, v in presences.items()}


def normalized(presences: PresenceList) -> dict[str, list[bytes]]:
    """
    Key to its metas, sorted.
    """
    return {
        k: sorted(orjson.dumps(m, option=orjson.OPT_SORT_KEYS) for m in v["metas"])
        for k, v in presences.items()
    }


class InterfaceTests(TrackerTestCase):
    """
    The tracker and the fake provide their interfaces.
    """

    def test_verify_object(self) -> None:
        """PresenceTracker provides IPresence and IMembershipObserver; the fake provides INodeMessaging."""
        tracker, _ = self.tracker("a")
        self.assertTrue(verifyObject(IPresence, tracker))
        self.assertTrue(verifyObject(IMembershipObserver, tracker))
        self.assertTrue(
            verifyObject(INodeMessaging, FakeMessaging(self.network, "x", "1"))
        )
        single = PresenceTracker(None, self.clock)
        self.assertTrue(verifyObject(IPresence, single))

    def test_periods_validated(self) -> None:
        """down_period must cover two ticks and permdown_period exceed down_period."""
        self.assertRaises(ValueError, PresenceTracker, None, self.clock, 1.0, 0, 1.5)
        self.assertRaises(
            ValueError, PresenceTracker, None, self.clock, 1.0, 10, 30.0, 30.0
        )

    def test_down_period_must_exceed_idle_heartbeats(self) -> None:
        """A down_period within 1.5 idle heartbeat intervals is refused, with the rule in the message."""
        # The configuration of issue 14: heartbeats every 16.5 s, down at 8 s.
        error = self.assertRaises(
            ValueError, PresenceTracker, None, self.clock, 1.5, 10, 8.0, 60.0
        )
        self.assertIn("down_period (8 s) must be at least 24.75 s", str(error))
        self.assertIn("max_silent_periods", str(error))
        self.assertIsNotNone(timings_problem(1.5, 10, 24.74, 60.0))
        self.assertIsNone(timings_problem(1.5, 10, 24.75, 60.0))
        self.assertIsNone(timings_problem(1.5, 1, 8.0, 60.0))
        # Phoenix's defaults pass.
        PresenceTracker(None, self.clock, 1.5, 10, 30.0, 1200.0)
        # The same rule for the server's configuration.
        self.assertRaises(ValueError, PresenceTimings, 1.5, 10, 8.0, 60.0)
        PresenceTimings(1.5, 1, 8.0, 60.0)


class SingleNodeTests(SynchronousTestCase):
    """
    A tracker without messaging: one node, no ticks.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.tracker = PresenceTracker(None, self.clock, ref_generator=ref_counter("r"))
        self.diffs: Diffs = []
        self.tracker.subscribe_diffs(lambda t, d: self.diffs.append((t, d)))
        self.tracker.startService()
        self.addCleanup(self.tracker.stopService)

    def test_track_list_untrack(self) -> None:
        """Tracked presences are listed by key in Phoenix format and untracking removes them."""
        t = self.tracker
        ref = t.track("room", "alice", "s1", {"device": "web"})
        t.track("room", "alice", "s2", {"device": "phone"})
        t.track("room", "bob", "s3", {})
        t.track("other", "alice", "s1", {})
        self.assertEqual(ref, "r" + "1".rjust(15, "0"))
        listed = t.list("room")
        self.assertEqual(
            listed["alice"],
            {
                "metas": [
                    {"device": "web", "phx_ref": ref},
                    {"device": "phone", "phx_ref": "r" + "2".rjust(15, "0")},
                ]
            },
        )
        self.assertEqual(set(listed), {"alice", "bob"})
        self.assertEqual(
            [m["device"] for m in t.get_by_key("room", "alice")], ["web", "phone"]
        )
        self.assertEqual(t.get_by_key("room", "nobody"), [])
        t.untrack("room", "alice", "s2")
        self.assertEqual(
            keys(t.list("room")), {"alice": [ref], "bob": ["r" + "3".rjust(15, "0")]}
        )
        t.untrack_all("s1")
        self.assertEqual(set(t.list("room")), {"bob"})
        self.assertEqual(t.list("other"), {})
        t.untrack("room", "nobody", "s9")
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(t.state.has_delta(), False)

    def test_list_snapshots_are_read_only(self) -> None:
        """A list() snapshot refuses changes at every level and does not follow later ones."""
        t = self.tracker
        ref = t.track("room", "alice", "s1", {"n": 1})
        snapshot = t.list("room")
        entry = snapshot["alice"]
        for change in (
            lambda: snapshot.__setitem__("bob", {}),
            lambda: entry.__setitem__("user", {"name": "Alice"}),
            lambda: entry["metas"].append({"phx_ref": "bogus"}),
            lambda: entry["metas"][0].__setitem__("n", 2),
            lambda: entry["metas"][0].update(n=2),
        ):
            self.assertRaises(TypeError, change)
        t.track("room", "bob", "s2", {})
        self.assertEqual(snapshot.keys(), {"alice"})
        self.assertEqual(t.list("room")["alice"], {"metas": [{"n": 1, "phx_ref": ref}]})
        copied = {key: {**value, "user": key} for key, value in t.list("room").items()}
        self.assertEqual(copied["alice"]["user"], "alice")

    def test_errors(self) -> None:
        """Tracking twice and updating nothing raise."""
        self.tracker.track("room", "alice", "s1", {})
        self.assertRaises(
            AlreadyTrackedError, self.tracker.track, "room", "alice", "s1", {}
        )
        self.assertRaises(NoPresenceError, self.tracker.update, "room", "bob", "s1", {})

    def test_diffs_in_order(self) -> None:
        """Every local change is one diff per topic, in order, with both keys present."""
        t = self.tracker
        a = t.track("room", "alice", "s1", {})
        t.track("lobby", "alice", "s1", {})
        t.untrack("room", "alice", "s1")
        t.untrack_all("s1")
        self.assertEqual(
            self.diffs,
            [
                (
                    "room",
                    {"joins": {"alice": {"metas": [{"phx_ref": a}]}}, "leaves": {}},
                ),
                (
                    "lobby",
                    {
                        "joins": {
                            "alice": {"metas": [{"phx_ref": "r" + "2".rjust(15, "0")}]}
                        },
                        "leaves": {},
                    },
                ),
                (
                    "room",
                    {"joins": {}, "leaves": {"alice": {"metas": [{"phx_ref": a}]}}},
                ),
                (
                    "lobby",
                    {
                        "joins": {},
                        "leaves": {
                            "alice": {"metas": [{"phx_ref": "r" + "2".rjust(15, "0")}]}
                        },
                    },
                ),
            ],
        )

    def test_update_diff_shape(self) -> None:
        """An update is one diff: the new meta with phx_ref_prev as a join, the old meta as a leave."""
        t = self.tracker
        old = t.track("room", "alice", "s1", {"status": "away"})
        new = t.update("room", "alice", "s1", {"status": "here"})
        self.assertEqual(
            self.diffs[-1],
            (
                "room",
                {
                    "joins": {
                        "alice": {
                            "metas": [
                                {"status": "here", "phx_ref": new, "phx_ref_prev": old}
                            ]
                        }
                    },
                    "leaves": {
                        "alice": {"metas": [{"status": "away", "phx_ref": old}]}
                    },
                },
            ),
        )
        self.assertEqual(
            t.list("room"),
            {
                "alice": {
                    "metas": [{"status": "here", "phx_ref": new, "phx_ref_prev": old}]
                }
            },
        )

    def test_get_diff_accumulates(self) -> None:
        """get_diff returns the net joins and leaves since its last call for that topic."""
        t = self.tracker
        t.track("room", "early", "s0", {})
        # The first call starts collecting.
        self.assertEqual(t.get_diff("room"), {"joins": {}, "leaves": {}})
        self.assertEqual(t.get_diff("lobby"), {"joins": {}, "leaves": {}})
        t.untrack("room", "early", "s0")
        t.get_diff("room")
        kept = t.track("room", "alice", "s1", {})
        t.track("room", "bob", "s2", {})
        t.untrack("room", "bob", "s2")
        t.track("lobby", "carol", "s3", {})
        self.assertEqual(
            t.get_diff("room"),
            {"joins": {"alice": {"metas": [{"phx_ref": kept}]}}, "leaves": {}},
        )
        self.assertEqual(t.get_diff("room"), {"joins": {}, "leaves": {}})
        t.untrack("room", "alice", "s1")
        self.assertEqual(
            t.get_diff("room"),
            {"joins": {}, "leaves": {"alice": {"metas": [{"phx_ref": kept}]}}},
        )
        self.assertEqual(set(t.get_diff("lobby")["joins"]), {"carol"})

    def test_unsubscribe_and_failing_subscriber(self) -> None:
        """A failing subscriber is logged and skipped; unsubscribing stops the calls."""
        seen: list[str] = []

        def broken(topic: str, diff: dict[str, PresenceList]) -> None:
            raise RuntimeError("boom")

        self.tracker.subscribe_diffs(broken)
        stop = self.tracker.subscribe_diffs(lambda topic, diff: seen.append(topic))
        self.tracker.track("room", "alice", "s1", {})
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        stop()
        self.tracker.track("room", "bob", "s1", {})
        self.assertEqual(seen, ["room"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_reentrant_subscriber_keeps_order(self) -> None:
        """A subscriber that changes presence from its callback still sees diffs in order."""
        order: list[tuple[str, list[str]]] = []

        def react(topic: str, diff: dict[str, PresenceList]) -> None:
            order.append((topic, sorted(diff["joins"])))
            if topic == "room":
                self.tracker.track("echo", "bot", "s9", {})

        self.tracker.subscribe_diffs(react)
        self.tracker.track("room", "alice", "s1", {})
        self.assertEqual(order, [("room", ["alice"]), ("echo", ["bot"])])
        self.assertEqual([t for t, _ in self.diffs], ["room", "echo"])


class ReplicationTests(TrackerTestCase):
    """
    Trackers replicating to each other.
    """

    def test_ticks_replicate(self) -> None:
        """A presence tracked on one node is listed on the others after a tick, with the same phx_ref."""
        a, _ = self.tracker("a")
        b, b_diffs = self.tracker("b")
        self.pump(2 * PERIOD)
        ref = a.track("room", "alice", "s1", {"x": 1})
        self.pump(1.5 * PERIOD)
        self.assertEqual(
            b.list("room"), {"alice": {"metas": [{"x": 1, "phx_ref": ref}]}}
        )
        self.assertEqual(
            b_diffs,
            [
                (
                    "room",
                    {
                        "joins": {"alice": {"metas": [{"x": 1, "phx_ref": ref}]}},
                        "leaves": {},
                    },
                )
            ],
        )
        a.untrack("room", "alice", "s1")
        self.pump(1.5 * PERIOD)
        self.assertEqual(b.list("room"), {})
        self.assertEqual(
            b_diffs[-1],
            (
                "room",
                {
                    "joins": {},
                    "leaves": {"alice": {"metas": [{"x": 1, "phx_ref": ref}]}},
                },
            ),
        )

    def test_remote_batch_one_diff_per_topic(self) -> None:
        """Changes merged from one heartbeat reach subscribers as one diff per topic, in order."""
        a, _ = self.tracker("a")
        b, b_diffs = self.tracker("b")
        self.pump(2 * PERIOD)
        a.track("room", "alice", "s1", {})
        a.track("room", "bob", "s2", {})
        a.track("lobby", "carol", "s3", {})
        self.pump(1.5 * PERIOD)
        self.assertEqual(
            [(t, sorted(d["joins"]), d["leaves"]) for t, d in b_diffs],
            [("room", ["alice", "bob"], {}), ("lobby", ["carol"], {})],
        )

    def test_remote_update_diff_shape(self) -> None:
        """A remote update reaches subscribers as one diff with the new meta joined and the old one left."""
        a, _ = self.tracker("a")
        b, b_diffs = self.tracker("b")
        self.pump(2 * PERIOD)
        old = a.track("room", "alice", "s1", {"v": 1})
        self.pump(1.5 * PERIOD)
        new = a.update("room", "alice", "s1", {"v": 2})
        self.pump(1.5 * PERIOD)
        self.assertEqual(
            b_diffs[-1],
            (
                "room",
                {
                    "joins": {
                        "alice": {
                            "metas": [{"v": 2, "phx_ref": new, "phx_ref_prev": old}]
                        }
                    },
                    "leaves": {"alice": {"metas": [{"v": 1, "phx_ref": old}]}},
                },
            ),
        )
        self.assertEqual(
            b.get_by_key("room", "alice"),
            [{"v": 2, "phx_ref": new, "phx_ref_prev": old}],
        )

    def test_late_node_gets_transfer(self) -> None:
        """A node that joins late asks for a transfer and gets everything tracked before."""
        a, _ = self.tracker("a")
        for number in range(50):
            a.track("room", f"user{number}", f"s{number}", {})
        self.pump(3 * PERIOD)
        c, c_diffs = self.tracker("c")
        self.pump(3 * PERIOD)
        self.assertEqual(c.list("room"), a.list("room"))
        self.assertEqual(len(c.list("room")), 50)
        requests = self.messages("transfer_req", source="c")
        self.assertEqual([(s, d) for s, d, _, _ in requests], [("c", "a")])
        self.assertEqual(len(self.messages("transfer_ack", source="a")), 1)
        self.assertEqual(sum(len(d["joins"]) for _, d in c_diffs), 50)

    def test_lost_delta_recovered_by_transfer(self) -> None:
        """A peer that missed a delta notices the gap from clocks and catches up with a small delta."""
        a, _ = self.tracker("a")
        b, _ = self.tracker("b")
        self.pump(2 * PERIOD)
        self.network.cut("a", "b")
        a.track("room", "alice", "s1", {})
        self.pump(1.2 * PERIOD)
        self.network.heal("a", "b")
        a.track("room", "bob", "s2", {})
        self.pump(4 * PERIOD)
        self.assertEqual(set(b.list("room")), {"alice", "bob"})
        acks = self.messages("transfer_ack", source="a")
        self.assertTrue(acks)
        self.assertEqual(acks[-1][2]["payload"]["kind"], "delta")

    def test_down_then_up(self) -> None:
        """A silent peer's presences leave after down_period and come back when it is heard again."""
        a, _ = self.tracker("a")
        b, b_diffs = self.tracker("b")
        self.pump(2 * PERIOD)
        ref = a.track("room", "alice", "s1", {})
        self.pump(2 * PERIOD)
        self.network.cut("a", "b")
        last_heard = self.messages("heartbeat", source="a")[-1][3]
        self.pump(last_heard + DOWN - 0.1 - self.clock.seconds())
        self.assertEqual(set(b.list("room")), {"alice"})
        self.pump(PERIOD + 0.2)
        self.assertEqual(b.list("room"), {})
        self.assertEqual(
            b_diffs[-1],
            ("room", {"joins": {}, "leaves": {"alice": {"metas": [{"phx_ref": ref}]}}}),
        )
        self.assertEqual(b.peers()["a"][1], False)
        self.network.heal("a", "b")
        self.pump(4 * PERIOD)
        self.assertEqual(keys(b.list("room")), {"alice": [ref]})
        self.assertEqual(
            b_diffs[-1],
            ("room", {"joins": {"alice": {"metas": [{"phx_ref": ref}]}}, "leaves": {}}),
        )
        self.assertEqual(b.peers()["a"][1], True)

    def test_down_then_up_keeps_meta_order(self) -> None:
        """A key's metas list in the state's order after a peer holding one of them goes down and comes back."""
        a, _ = self.tracker("a")
        b, _ = self.tracker("b")
        self.pump(2 * PERIOD)
        remote = a.track("room", "alice", "s1", {})
        self.pump(2 * PERIOD)
        local = b.track("room", "alice", "s2", {})
        self.network.cut("a", "b")
        self.pump(DOWN + 2 * PERIOD)
        self.assertEqual(keys(b.list("room")), {"alice": [local]})
        self.network.heal("a", "b")
        self.pump(4 * PERIOD)
        self.assertEqual(keys(b.list("room")), {"alice": [remote, local]})
        self.assert_list_matches_state(b)

    def test_permdown(self) -> None:
        """A peer silent for permdown_period is forgotten with its presences."""
        a, _ = self.tracker("a")
        b, _ = self.tracker("b")
        self.pump(2 * PERIOD)
        a.track("room", "alice", "s1", {})
        self.pump(2 * PERIOD)
        self.network.cut("a", "b")
        self.pump(PERMDOWN + 2 * PERIOD)
        self.assertNotIn("a", b.peers())
        self.assertEqual(list(b.state.values()), [])
        self.assertNotIn(a.replica, b.state.context)
        # Still alive after all: it is discovered again like a new peer.
        self.network.heal("a", "b")
        self.pump(5 * PERIOD)
        self.assertEqual(set(b.list("room")), {"alice"})

    def test_restart_with_new_incarnation(self) -> None:
        """A node restarted with a new incarnation replaces its old presences at once, not after down_period."""
        a, _ = self.tracker("a")
        b, b_diffs = self.tracker("b")
        self.pump(2 * PERIOD)
        old = a.track("room", "alice", "s1", {})
        self.pump(2 * PERIOD)
        self.network.disconnect("a")
        a.stopService()
        a2, _ = self.tracker("a", incarnation="2")
        new = a2.track("room", "alice", "s1", {})
        self.pump(1.5 * PERIOD)
        self.assertEqual(keys(b.list("room")), {"alice": [new]})
        self.assertEqual(b.peers()["a"], (("a", "2"), True))
        self.assertEqual(len(b.state.replicas()), 2)
        left = [d["leaves"] for _, d in b_diffs if d["leaves"]]
        self.assertEqual(left, [{"alice": {"metas": [{"phx_ref": old}]}}])

    def test_graceful_stop(self) -> None:
        """A node that stops gracefully has its presences dropped by its peers at once."""
        a, _ = self.tracker("a")
        b, b_diffs = self.tracker("b")
        self.pump(2 * PERIOD)
        a.track("room", "alice", "s1", {})
        self.pump(2 * PERIOD)
        a.stopService()
        self.pump(0.1)
        self.assertEqual(b.list("room"), {})
        self.assertNotIn("a", b.peers())
        self.assertEqual(len(self.messages("bye", source="a")), 1)

    def test_idle_peers_stay_up_on_empty_heartbeats(self) -> None:
        """Idle nodes send empty heartbeats every max_silent_periods + 1 ticks and stay up."""
        a, _ = self.tracker("a")
        b, _ = self.tracker("b")
        a.track("room", "alice", "s1", {})
        self.pump(2 * PERIOD)
        before = len(self.messages("heartbeat", source="a"))
        self.pump(30 * PERIOD)
        heartbeats = self.messages("heartbeat", source="a")[before:]
        self.assertIn(len(heartbeats), (9, 10, 11))
        self.assertTrue(all(m["delta"] is None for _, _, m, _ in heartbeats))
        self.assertEqual(set(b.list("room")), {"alice"})
        self.assertTrue(b.peers()["a"][1])

    def test_new_link_greeted(self) -> None:
        """When a link comes up the tracker greets the peer with a heartbeat at once."""
        a, _ = self.tracker("a")
        self.pump(5 * PERIOD)
        self.tracker("c")
        self.pump(0.05)
        greetings = self.messages("heartbeat", source="a")
        self.assertEqual(greetings[-1][1], "c")

    def test_bad_messages_dropped(self) -> None:
        """Malformed or spoofed messages are dropped without effect."""
        a, a_diffs = self.tracker("a")
        b, _ = self.tracker("b")
        handler = self.network.nodes["a"].handlers[CHANNEL]
        for data in [
            b"not json",
            b"[]",
            orjson.dumps(
                {"type": "heartbeat", "replica": ["c", "1"], "clock": [], "delta": None}
            ),
            orjson.dumps(
                {
                    "type": "heartbeat",
                    "replica": ["b", "1"],
                    "clock": "x",
                    "delta": None,
                }
            ),
            orjson.dumps({"type": "nonsense", "replica": ["b", "1"]}),
        ]:
            handler("b", data)
        self.assertEqual(a.peers(), {})
        self.assertEqual(a_diffs, [])

    def test_three_nodes_converge(self) -> None:
        """Random tracks, updates and untracks on three nodes converge to the same lists."""
        rng = random.Random(7)
        nodes = [self.tracker(name)[0] for name in "abc"]
        self.pump(2 * PERIOD)
        for _ in range(300):
            node = rng.choice(nodes)
            topic = rng.choice(["t1", "t2"])
            key = rng.choice(["k1", "k2", "k3"])
            owner = rng.choice(["o1", "o2"])
            if node.state.local(topic, key, owner) is None:
                node.track(topic, key, owner, {"n": rng.randrange(5)})
            elif rng.random() < 0.5:
                node.update(topic, key, owner, {"n": rng.randrange(5)})
            else:
                node.untrack(topic, key, owner)
            self.clock.advance(rng.random() * 0.2)
        self.pump(4 * PERIOD)
        for topic in ["t1", "t2"]:
            # Metas under a key are in arrival order, which differs by node.
            expected = normalized(nodes[0].list(topic))
            self.assertTrue(expected)
            for node in nodes[1:]:
                self.assertEqual(normalized(node.list(topic)), expected)
        for node in nodes:
            self.assertEqual(node.state.clouds, {})


class PartitionTests(TrackerTestCase):
    """
    Netsplits on the fake network: what a node's subscribers see while a
    peer is cut off and after the link heals.
    """

    def split_cluster(self) -> tuple[PresenceTracker, PresenceTracker, Diffs]:
        """
        Nodes a, b and c with a user each (b two), converged; c is then
        cut off for longer than down_period.  Returns a, b and c's diffs.
        """
        a, _ = self.tracker("a")
        b, _ = self.tracker("b")
        c, c_diffs = self.tracker("c")
        self.nodes = {"a": a, "b": b, "c": c}
        self.pump(2 * PERIOD)
        a.track("room", "alice", "sa", {})
        b.track("room", "bob", "sb", {})
        b.track("room", "bill", "sb2", {})
        c.track("room", "carol", "sc", {})
        self.pump(2 * PERIOD)
        for node in (a, b, c):
            self.assertEqual(set(node.list("room")), {"alice", "bob", "bill", "carol"})
        self.network.cut("a", "c")
        self.network.cut("b", "c")
        self.pump(DOWN + 2 * PERIOD)
        self.assertEqual(set(c.list("room")), {"carol"})
        self.assertEqual(set(a.list("room")), {"alice", "bob", "bill"})
        return a, b, c_diffs

    def heal(self) -> float:
        """
        Heal c's links; the time it happened.
        """
        self.network.heal("a", "c")
        self.network.heal("b", "c")
        return self.clock.seconds()

    def test_no_ghost_after_heal(self) -> None:
        """A user who left during a split never reappears on the other side when it heals."""
        a, b, c_diffs = self.split_cluster()
        b.untrack("room", "bob", "sb")
        self.pump(2 * PERIOD)
        before = len(c_diffs)
        self.heal()
        self.pump(4 * PERIOD)
        after = c_diffs[before:]
        self.assertTrue(after)
        for _, diff in after:
            self.assertNotIn("bob", diff["joins"])
        self.assertEqual(set(self.nodes["c"].list("room")), {"alice", "bill", "carol"})

    def test_joins_within_one_period_of_heal(self) -> None:
        """Users who joined on either side during a split are listed on the other within one broadcast period of the heal."""
        a, b, _ = self.split_cluster()
        c = self.nodes["c"]
        a.track("room", "erin", "sa2", {})
        c.track("room", "dave", "sc2", {})
        self.pump(2 * PERIOD)
        self.heal()
        # A tick for the greeting, then three messages of 10 ms each.
        self.pump(PERIOD + 0.05, step=0.01)
        everyone = {"alice", "bob", "bill", "carol", "dave", "erin"}
        for node in (a, b, c):
            self.assertEqual(set(node.list("room")), everyone)

    def test_one_diff_per_returning_peer(self) -> None:
        """Each peer coming back reaches subscribers as one diff of joins, not a reveal and then corrections."""
        a, b, c_diffs = self.split_cluster()
        b.untrack("room", "bob", "sb")
        b.track("room", "bert", "sb3", {})
        a.update("room", "alice", "sa", {"v": 2})
        self.pump(2 * PERIOD)
        before = len(c_diffs)
        self.heal()
        self.pump(4 * PERIOD)
        after = sorted(
            (sorted(diff["joins"]), sorted(diff["leaves"]))
            for _, diff in c_diffs[before:]
        )
        self.assertEqual(after, [(["alice"], []), (["bert", "bill"], [])])
        metas = self.nodes["c"].list("room")["alice"]["metas"]
        self.assertEqual([m.get("v") for m in metas], [2])

    def test_repeated_heals_no_ghosts(self) -> None:
        """Across repeated splits and heals, no user who left during a split ever reappears."""
        a, a_diffs = self.tracker("a")
        b, _ = self.tracker("b")
        c, c_diffs = self.tracker("c")
        self.pump(2 * PERIOD)
        ghosts = 0
        for cycle in range(5):
            a.track("room", f"a{cycle}", f"sa{cycle}", {})
            c.track("room", f"c{cycle}", f"sc{cycle}", {})
            self.pump(2 * PERIOD)
            self.network.cut("a", "c")
            self.network.cut("b", "c")
            self.pump(DOWN + 2 * PERIOD)
            a.untrack("room", f"a{cycle}", f"sa{cycle}")
            c.untrack("room", f"c{cycle}", f"sc{cycle}")
            self.pump(PERIOD)
            a_seen, c_seen = len(a_diffs), len(c_diffs)
            self.network.heal("a", "c")
            self.network.heal("b", "c")
            self.pump(4 * PERIOD)
            ghosts += sum(f"c{cycle}" in d["joins"] for _, d in a_diffs[a_seen:])
            ghosts += sum(f"a{cycle}" in d["joins"] for _, d in c_diffs[c_seen:])
            for node in (a, b, c):
                self.assertEqual(node.list("room"), {})
        self.assertEqual(ghosts, 0)

    def test_held_messages_at_heal_show_no_ghost(self) -> None:
        """Stale heartbeats delivered in a burst when a blackholed link heals do not reveal departed users."""
        a, _ = self.tracker("a")
        c, c_diffs = self.tracker("c")
        self.pump(2 * PERIOD)
        a.track("room", "alice", "s1", {})
        a.track("room", "xavier", "s2", {})
        self.pump(2 * PERIOD)
        self.assertEqual(set(c.list("room")), {"alice", "xavier"})
        # Blackhole both ways, holding what is sent as TCP would.
        held: list[tuple[Callable[[str, bytes], None], str, bytes]] = []
        originals = {}
        for name, other in (("a", "c"), ("c", "a")):
            node = self.network.nodes[name]
            original = node.handlers[CHANNEL]
            originals[name] = original

            def hold(
                source: str,
                data: bytes,
                original: Callable[[str, bytes], None] = original,
                other: str = other,
            ) -> None:
                if source == other:
                    held.append((original, source, data))
                else:
                    original(source, data)

            node.handlers[CHANNEL] = hold
        self.pump(DOWN + 2 * PERIOD)
        self.assertEqual(set(c.list("room")), set())
        a.untrack("room", "xavier", "s2")
        self.pump(3 * PERIOD)
        before = len(c_diffs)
        for name, original in originals.items():
            self.network.nodes[name].handlers[CHANNEL] = original
        for handler, source, data in held:
            handler(source, data)
        self.pump(3 * PERIOD)
        for _, diff in c_diffs[before:]:
            self.assertNotIn("xavier", diff["joins"])
        self.assertEqual(set(c.list("room")), {"alice"})

    def test_late_answer_reveals_nothing_stale(self) -> None:
        """An answer to a returning peer's request held up past the window does not reveal its stale state."""
        a, _ = self.tracker("a")
        c, c_diffs = self.tracker("c")
        self.pump(2 * PERIOD)
        a.track("room", "alice", "s1", {})
        a.track("room", "xavier", "s2", {})
        self.pump(2 * PERIOD)
        self.network.cut("a", "c")
        self.pump(DOWN + 2 * PERIOD)
        self.assertEqual(c.list("room"), {})
        # From a's answer to c's request to come back, a's messages to c are
        # held up.
        node = self.network.nodes["c"]
        original = node.handlers[CHANNEL]
        held: list[tuple[str, bytes]] = []

        def hold(source: str, data: bytes) -> None:
            if held or (b'"transfer_ack"' in data and b'"ref"' in data):
                held.append((source, data))
            else:
                original(source, data)

        node.handlers[CHANNEL] = hold
        self.network.heal("a", "c")
        for _ in range(round(3 * PERIOD / 0.01)):
            self.clock.advance(0.01)
            if held:
                break
        self.assertTrue(held)
        a.untrack("room", "xavier", "s2")
        # Longer than the window of 2 s for answers.
        self.pump(4 * PERIOD)
        before = len(c_diffs)
        node.handlers[CHANNEL] = original
        for source, data in held:
            original(source, data)
        self.pump(3 * PERIOD)
        for _, diff in c_diffs[before:]:
            self.assertNotIn("xavier", diff["joins"])
        self.assertEqual(set(c.list("room")), {"alice"})

    def test_lost_recovery_request_asked_again(self) -> None:
        """A request to come back that is lost is asked again, and the peer is revealed once it is answered."""
        a, b, _ = self.split_cluster()
        c = self.nodes["c"]
        a.track("room", "erin", "sa2", {})
        self.pump(2 * PERIOD)
        self.network.heal("a", "c")
        # Let c hear a's greeting and ask, then lose the request.
        requests = len(self.messages("transfer_req", source="c"))
        for _ in range(round(2 * PERIOD / 0.005)):
            self.clock.advance(0.005)
            if len(self.messages("transfer_req", source="c")) > requests:
                break
        self.network.cut("a", "c")
        self.pump(0.1)
        self.assertEqual(set(c.list("room")), {"carol"})
        self.network.heal("a", "c")
        self.pump(3 * PERIOD)
        self.assertEqual(set(c.list("room")), {"alice", "erin", "carol"})
        asked = [
            m
            for _, d, m, _ in self.messages("transfer_req", source="c")
            if m.get("recover")
        ]
        self.assertTrue(asked)


class CountingSet(set[Any]):
    """
    A set that counts membership tests: what a query costs in the
    down-replica filter.
    """

    tests = 0

    def __contains__(self, item: object) -> bool:
        self.tests += 1
        return super().__contains__(item)


class PhoenixBugTests(TrackerTestCase):
    """
    Presence bugs reported against Phoenix, as scenarios on the fake
    network.
    """

    def test_stale_transfer_does_not_overwrite_newer_entry(self) -> None:
        """A stale transfer arriving after a newer delta does not bring back the older meta (phoenix_pubsub #148)."""
        a, _ = self.tracker("a")
        b, _ = self.tracker("b")
        c, _ = self.tracker("c")
        self.pump(2 * PERIOD)
        a.track("lobby", "other", "so", {})
        while not c.list("lobby"):
            self.clock.advance(0.01)
        seen = c.state.context[a.replica]
        # c is cut off while alice joins on a (b gets it) and updates.
        self.network.cut("a", "c")
        self.network.cut("b", "c")
        a.track("room", "alice", "sa", {"v": 1})
        self.pump(1.1 * PERIOD)
        # What b answers a transfer request from c now: alice at v1.
        payload = b.state.extract(c.replica, c.state.clock())
        room = [e.meta["v"] for e in payload.values.values() if e.topic == "room"]
        self.assertEqual(room, [1])
        stale = orjson.dumps(
            {
                "type": "transfer_ack",
                "replica": ["b", "1"],
                "payload": remote_to_json(payload),
            }
        )
        [stale_tag] = [t for t, e in payload.values.items() if e.topic == "room"]
        for version in range(2, 5):
            a.update("room", "alice", "sa", {"v": version})
        # Long enough for b to relay the removal of v1 (lost on the way to c).
        self.pump(2.1 * PERIOD)
        # c hears from a again, not yet from b (which would fill the gap).
        self.network.heal("a", "c")
        a.update("room", "alice", "sa", {"v": 5})
        # c merges that delta ahead of a gap: its dots wait in a cloud.
        for _ in range(round(2 * PERIOD / 0.01)):
            self.clock.advance(0.01)
            if c.state.clouds:
                break
        self.assertIn(a.replica, c.state.clouds)
        self.assertEqual(c.state.context[a.replica], seen)
        self.assertFalse(c.state.covers(stale_tag))
        # Now the stale transfer from b arrives.
        self.network.nodes["c"].handlers[CHANNEL]("b", stale)
        metas = c.list("room")["alice"]["metas"]
        self.assertEqual([m["v"] for m in metas], [5])
        self.assertEqual(len(c.state.get_by_key("room", "alice")), 1)
        # Everyone converges, and a's leave is seen cleanly everywhere.
        self.network.heal("b", "c")
        self.pump(4 * PERIOD)
        self.assertEqual([m["v"] for m in c.list("room")["alice"]["metas"]], [5])
        a.untrack("room", "alice", "sa")
        self.pump(4 * PERIOD)
        for node in (a, b, c):
            self.assertEqual(node.list("room"), {})
            self.assertEqual(len(list(node.state.values())), 1)

    def test_down_up_cycles_keep_state_and_queries_flat(self) -> None:
        """Repeated down/up cycles and restarts of one peer keep state sizes and query costs flat (phoenix #5568)."""
        a, _ = self.tracker("a")
        b, _ = self.tracker("b")
        down = CountingSet()
        b.state._down = down
        for number in range(20):
            a.track("room", f"user{number}", f"s{number}", {})
        b.track("room", "bob", "sb", {})
        self.pump(3 * PERIOD)
        measures = []
        for cycle in range(12):
            if cycle % 3 == 2:
                # A restart: a new incarnation, the old one's entries stale.
                self.network.disconnect("a")
                a.stopService()
                a, _ = self.tracker("a", incarnation=f"r{cycle}")
                for number in range(20):
                    a.track("room", f"user{number}", f"s{number}", {})
                self.pump(3 * PERIOD)
            self.network.cut("a", "b")
            self.pump(DOWN + 2 * PERIOD)
            self.assertFalse(b.peers()["a"][1])
            down.tests = 0
            listed = b.state.grouped("room")
            b.state.get_by_key("room", "user1")
            while_down = down.tests
            self.network.heal("a", "b")
            self.pump(3 * PERIOD)
            self.assertEqual(
                set(b.list("room")), {"bob"} | {f"user{n}" for n in range(20)}
            )
            down.tests = 0
            b.state.grouped("room")
            measures.append(
                (
                    len(down),
                    len(b.state.replicas()),
                    len(list(b.state.values())),
                    sum(len(g.values) for g in b.state.generations.generations),
                    len(b.peers()),
                    while_down,
                    down.tests,
                    len(listed),
                )
            )
        self.assertEqual(measures[0][5], 22)
        self.assertEqual(set(measures), {measures[0]})
