"""
Tests for L{beryl.session.state}: the per-socket channel rules as plain
inputs and effects, and a Hypothesis state machine checking the Phoenix
protocol rules over random sequences.
"""

from __future__ import annotations

from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from twisted.trial.unittest import SynchronousTestCase

from beryl.channel import NoReply, Push, Reply, Stop
from beryl.session.effects import (
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
)
from beryl.session.state import ChannelEnded, Session
from beryl.wire import Message


def _match(topic: str) -> object | None:
    return "room" if topic.startswith("room:") else None


def _join(session: Session, join_ref: Any, topic: str = "room:a") -> int:
    """
    Start a join and return its channel number.
    """
    (run,) = [
        e for e in session.receive(Message(join_ref, join_ref, topic, "phx_join", {}))
    ][-1:]
    assert isinstance(run, RunJoin)
    return run.channel


def _joined(session: Session, join_ref: Any, topic: str = "room:a") -> int:
    channel = _join(session, join_ref, topic)
    session.joined(channel, None)
    return channel


class DispatchTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.session = Session(_match, max_channels=2, max_queued=2)

    def test_heartbeat(self) -> None:
        """A heartbeat is answered with an ok reply and a null join_ref."""
        effects = self.session.receive(Message(None, "7", "phoenix", "heartbeat", {}))
        self.assertEqual(effects, (SendReply(None, "7", "phoenix", "ok", {}),))

    def test_join_runs_callback(self) -> None:
        """A join asks for the join callback with the matched definition."""
        effects = self.session.receive(
            Message("1", "1", "room:a", "phx_join", {"x": 1})
        )
        self.assertEqual(effects, (RunJoin(1, "room:a", "1", "1", {"x": 1}, "room"),))
        self.assertTrue(self.session.busy)

    def test_join_ok(self) -> None:
        """An accepted join subscribes before the ok reply."""
        channel = _join(self.session, "1")
        effects = self.session.joined(channel, {"hi": 1})
        self.assertEqual(
            effects,
            (
                Subscribe(channel, "room:a"),
                SendReply("1", "1", "room:a", "ok", {"hi": 1}),
            ),
        )
        self.assertEqual(self.session.joined_topics(), ["room:a"])

    def test_join_refused(self) -> None:
        """A refused join replies with an error and leaves no channel."""
        channel = _join(self.session, "1")
        effects = self.session.join_refused(channel, {"reason": "no"})
        self.assertEqual(
            effects,
            (
                EndChannel(channel, "refused", False),
                SendReply("1", "1", "room:a", "error", {"reason": "no"}),
            ),
        )
        self.assertEqual(self.session.joined_topics(), [])

    def test_unmatched_join(self) -> None:
        """A join to an unrouted topic gets 'unmatched topic' with a null join_ref."""
        effects = self.session.receive(Message("1", "2", "nope", "phx_join", {}))
        self.assertEqual(
            effects,
            (SendReply(None, "2", "nope", "error", {"reason": "unmatched topic"}),),
        )

    def test_duplicate_join_order(self) -> None:
        """A duplicate join: the old ends, the new reply, then phx_close for the old."""
        old = _joined(self.session, "1")
        effects = self.session.receive(Message("2", "2", "room:a", "phx_join", {}))
        new = effects[-1]
        assert isinstance(new, RunJoin)
        self.assertEqual(
            effects[:-1],
            (Unsubscribe(old, "room:a"), EndChannel(old, "duplicate join", True)),
        )
        self.assertEqual(
            self.session.joined(new.channel, None),
            (
                Subscribe(new.channel, "room:a"),
                SendReply("2", "2", "room:a", "ok", {}),
                SendClose("1", "room:a"),
            ),
        )

    def test_too_many_channels(self) -> None:
        """A join past the limit is refused with the join_ref echoed."""
        _joined(self.session, "1", "room:a")
        _joined(self.session, "2", "room:b")
        effects = self.session.receive(Message("3", "3", "room:c", "phx_join", {}))
        self.assertEqual(
            effects,
            (
                SendReply(
                    "3", "3", "room:c", "error", {"reason": "too many channels joined"}
                ),
            ),
        )

    def test_leave(self) -> None:
        """A leave replies ok, sends phx_close and ends the channel."""
        channel = _joined(self.session, "1")
        effects = self.session.receive(Message(None, "5", "room:a", "phx_leave", {}))
        self.assertEqual(
            effects,
            (
                SendReply("1", "5", "room:a", "ok", {}),
                SendClose("1", "room:a"),
                Unsubscribe(channel, "room:a"),
                EndChannel(channel, "leave", True),
            ),
        )

    def test_leave_unjoined(self) -> None:
        """A leave of an unjoined topic is answered ok, echoing both refs."""
        effects = self.session.receive(Message("4", "5", "room:a", "phx_leave", {}))
        self.assertEqual(effects, (SendReply("4", "5", "room:a", "ok", {}),))

    def test_stale_join_ref_dropped(self) -> None:
        """A push or leave with another non-null join_ref produces nothing."""
        _joined(self.session, "1")
        self.assertEqual(
            self.session.receive(Message("9", "5", "room:a", "ping", {})), ()
        )
        self.assertEqual(
            self.session.receive(Message("9", "6", "room:a", "phx_leave", {})), ()
        )

    def test_push_and_results(self) -> None:
        """A push runs handle_in; Reply, Push and NoReply become their frames."""
        channel = _joined(self.session, "1")
        self.assertEqual(
            self.session.receive(Message("1", "5", "room:a", "ping", {"n": 1})),
            (RunHandleIn(channel, "ping", {"n": 1}, "5"),),
        )
        self.assertEqual(
            self.session.handled(channel, "5", Reply("ok", {"n": 1}, None)),
            (SendReply("1", "5", "room:a", "ok", {"n": 1}),),
        )
        self.session.receive(Message(None, "6", "room:a", "ping", {}))
        self.assertEqual(
            self.session.handled(channel, "6", Push("news", {}, None)),
            (SendPush("1", "room:a", "news", {}),),
        )
        self.session.receive(Message(None, "7", "room:a", "ping", {}))
        self.assertEqual(self.session.handled(channel, "7", NoReply(None)), ())

    def test_stop(self) -> None:
        """Stop replies first, then phx_close (graceful) or phx_error."""
        channel = _joined(self.session, "1")
        self.session.receive(Message(None, "5", "room:a", "bye", {}))
        self.assertEqual(
            self.session.handled(channel, "5", Stop("normal", ("ok", {}))),
            (
                SendReply("1", "5", "room:a", "ok", {}),
                SendClose("1", "room:a"),
                Unsubscribe(channel, "room:a"),
                EndChannel(channel, "normal", True),
            ),
        )
        channel = _joined(self.session, "2")
        self.session.receive(Message(None, "6", "room:a", "bad", {}))
        self.assertEqual(
            self.session.handled(channel, "6", Stop("boom")),
            (
                SendError("2", "room:a"),
                Unsubscribe(channel, "room:a"),
                EndChannel(channel, "boom", True),
            ),
        )

    def test_crash(self) -> None:
        """A crashed handler ends that channel alone with phx_error."""
        a = _joined(self.session, "1", "room:a")
        _joined(self.session, "2", "room:b")
        self.session.receive(Message(None, "5", "room:a", "x", {}))
        self.assertEqual(
            self.session.crashed(a),
            (
                SendError("1", "room:a"),
                Unsubscribe(a, "room:a"),
                EndChannel(a, "crash", True),
            ),
        )
        self.assertEqual(self.session.joined_topics(), ["room:b"])

    def test_queue_while_joining(self) -> None:
        """Messages wait for a pending join and are dispatched after its reply."""
        channel = _join(self.session, "1")
        self.assertEqual(
            self.session.receive(Message("1", "2", "room:a", "ping", {})), ()
        )
        self.assertEqual(self.session.queued(), 1)
        self.assertEqual(
            self.session.joined(channel, None),
            (
                Subscribe(channel, "room:a"),
                SendReply("1", "1", "room:a", "ok", {}),
                RunHandleIn(channel, "ping", {}, "2"),
            ),
        )

    def test_queue_is_bounded(self) -> None:
        """Past max_queued held messages the socket is closed with 1008."""
        channel = _joined(self.session, "1")
        self.session.receive(Message(None, "2", "room:a", "slow", {}))
        self.session.receive(Message(None, "3", "room:a", "x", {}))
        self.session.receive(Message(None, "4", "room:a", "x", {}))
        effects = self.session.receive(Message(None, "5", "room:a", "x", {}))
        self.assertEqual(
            effects,
            (
                Unsubscribe(channel, "room:a"),
                EndChannel(channel, "closed", True),
                CloseSocket(1008, "too many pending messages"),
            ),
        )
        self.assertEqual(self.session.handled(channel, "2", NoReply(None)), ())

    def test_pushes_and_infos_during_join_wait(self) -> None:
        """Pushes and infos made during a join follow its reply."""
        channel = _join(self.session, "1")
        self.assertEqual(self.session.push(channel, "early", {}), ())
        self.assertEqual(self.session.info_due(channel, "tick"), ())
        self.assertEqual(
            self.session.joined(channel, None)[2:],
            (SendPush("1", "room:a", "early", {}), ScheduleInfo(channel, 0, "tick")),
        )

    def test_infos_wait_for_callbacks(self) -> None:
        """An info due while a callback is pending runs after it."""
        channel = _joined(self.session, "1")
        self.session.receive(Message(None, "2", "room:a", "slow", {}))
        self.assertEqual(self.session.info_due(channel, "tick"), ())
        self.assertEqual(
            self.session.handled(channel, "2", NoReply(None)),
            (RunHandleInfo(channel, "tick"),),
        )

    def test_bad_frame_closes(self) -> None:
        """An undecodable frame ends every channel and closes with 1007."""
        channel = _joined(self.session, "1")
        self.assertEqual(
            self.session.bad_frame("malformed JSON"),
            (
                Unsubscribe(channel, "room:a"),
                EndChannel(channel, "closed", True),
                CloseSocket(1007, "malformed JSON"),
            ),
        )
        self.assertEqual(
            self.session.receive(Message(None, "1", "phoenix", "heartbeat", {})), ()
        )

    def test_closed_during_join(self) -> None:
        """A join accepted after the socket closed is ended at once, unsent."""
        channel = _join(self.session, "1")
        self.session.track(channel, "u", {})
        self.assertEqual(self.session.closed_by_peer(), ())
        self.assertEqual(
            self.session.joined(channel, None),
            (UntrackAll(channel), EndChannel(channel, "closed", True)),
        )

    def test_track_after_end(self) -> None:
        """Tracking on an ended channel raises ChannelEnded."""
        channel = _joined(self.session, "1")
        self.assertEqual(
            self.session.track(channel, "u", {"a": 1}),
            Track(channel, "room:a", "u", {"a": 1}),
        )
        self.session.receive(Message(None, "2", "room:a", "phx_leave", {}))
        self.assertRaises(ChannelEnded, self.session.track, channel, "u", {})


_NOTHING = object()
_TOPICS = st.sampled_from(["room:a", "room:b", "room:c", "nope"])
_REFS = st.sampled_from([None, "1", "2", "3", "4"])
_RESULTS = st.sampled_from(
    [
        NoReply(None),
        Reply("ok", {}, None),
        Push("p", {}, None),
        Stop("normal"),
        Stop("boom", ("error", {})),
        "crash",
    ]
)


class SessionMachine(RuleBasedStateMachine):
    """
    Random inputs from a client and from callbacks completing, checked
    against the protocol rules after every step.
    """

    @initialize()
    def start(self) -> None:
        self.session = Session(_match, max_channels=2, max_queued=3)
        self.effects: list[Effect] = []
        self.pending: RunJoin | RunHandleIn | RunHandleInfo | None = None
        self.refs = 0
        self.sent_refs: list[str] = []
        self.closed = False
        self.closed_at: int | None = None
        # join_ref -> topic, for channels the session says are joined
        self.joined: dict[int, tuple[str, Any]] = {}
        self.ended: set[int] = set()
        self.join_refs: dict[int, Any] = {}
        # the join_ref of the channel a pending duplicate join replaces
        self.replacing: Any = _NOTHING
        self.replaced: dict[int, Any] = {}

    def _take(self, effects: tuple[Effect, ...]) -> None:
        if self.closed_at is not None:
            assert effects == (), f"{effects} after CloseSocket"
        for index, effect in enumerate(effects):
            if isinstance(effect, (RunJoin, RunHandleIn, RunHandleInfo)):
                assert self.pending is None, "two callbacks pending at once"
                assert index == len(effects) - 1, "a callback run is not last"
                self.pending = effect
            if isinstance(effect, CloseSocket):
                assert index == len(effects) - 1, "an effect follows CloseSocket"
                self.closed_at = len(self.effects) + index
            if isinstance(effect, (RunHandleIn, RunHandleInfo, Subscribe, SendPush)):
                channel = getattr(effect, "channel", None)
                assert channel not in self.ended, f"{effect} for an ended channel"
            if isinstance(effect, EndChannel):
                self.ended.add(effect.channel)
                self.joined.pop(effect.channel, None)
            if isinstance(effect, Subscribe):
                self.joined[effect.channel] = (effect.topic, None)
            if isinstance(effect, EndChannel) and effect.reason == "duplicate join":
                self.replacing = self.join_refs[effect.channel]
            if isinstance(effect, RunJoin):
                self.join_refs[effect.channel] = effect.join_ref
                if self.replacing is not _NOTHING:
                    self.replaced[effect.channel] = self.replacing
            if isinstance(effect, (SendReply, CloseSocket)):
                self.replacing = _NOTHING
        self.effects.extend(effects)

    def _ref(self) -> str:
        self.refs += 1
        return f"r{self.refs}"

    @rule(topic=_TOPICS, join_ref=_REFS)
    def join(self, topic: str, join_ref: Any) -> None:
        """A client joins."""
        ref = self._ref()
        before = len(self.effects)
        self._take(self.session.receive(Message(join_ref, ref, topic, "phx_join", {})))
        if self.session.closed:
            return
        if not self.session.busy and self.pending is None:
            # answered at once: refused, unmatched, or queued (never)
            replies = [e for e in self.effects[before:] if isinstance(e, SendReply)]
            assert replies and replies[0].ref == ref

    @rule(
        topic=_TOPICS,
        join_ref=_REFS,
        event=st.sampled_from(["ping", "phx_leave"]),
        fast=st.booleans(),
    )
    def push(self, topic: str, join_ref: Any, event: str, fast: bool) -> None:
        """A client pushes or leaves, through the fast path or receive."""
        message = Message(join_ref, self._ref(), topic, event, {})
        if fast:
            channel = self.session.accept_push(message)
            if channel:
                # only a push to the joined channel, with its join_ref or none
                assert event == "ping" and self.pending is None
                assert self.joined[channel][0] == topic
                assert join_ref in (None, self.join_refs[channel])
                # the same as receive returning the RunHandleIn
                self._take((RunHandleIn(channel, event, {}, message.ref),))
                return
            effects = self.session.receive(message)
            assert not any(isinstance(e, RunHandleIn) for e in effects)
            self._take(effects)
            return
        self._take(self.session.receive(message))

    @rule()
    def heartbeat(self) -> None:
        """A client sends a heartbeat."""
        self._take(
            self.session.receive(Message(None, self._ref(), "phoenix", "heartbeat", {}))
        )

    @precondition(lambda self: isinstance(self.pending, RunJoin))
    @rule(outcome=st.sampled_from(["ok", "refused", "crash"]))
    def complete_join(self, outcome: str) -> None:
        """The pending join completes; its reply comes before anything else."""
        run = self.pending
        assert isinstance(run, RunJoin)
        self.pending = None
        replaced = self.replaced.pop(run.channel, _NOTHING)
        if outcome == "ok":
            effects = self.session.joined(run.channel, None)
        elif outcome == "refused":
            effects = self.session.join_refused(run.channel, {})
        else:
            effects = self.session.join_crashed(run.channel)
        if not self.session.closed:
            # the join reply comes first (after the subscription or the
            # refused channel's end), then the replaced channel's phx_close
            # with the old join_ref, then anything else
            index = next(
                i
                for i, e in enumerate(effects)
                if isinstance(e, SendReply) and e.ref == run.ref
            )
            reply = effects[index]
            assert isinstance(reply, SendReply)
            assert reply.join_ref == run.join_ref
            assert reply.status == ("ok" if outcome == "ok" else "error")
            allowed = (Subscribe,) if outcome == "ok" else (EndChannel, UntrackAll)
            for effect in effects[:index]:
                assert isinstance(effect, allowed), effect
            if replaced is not _NOTHING:
                assert effects[index + 1] == SendClose(replaced, run.topic)
        self._take(effects)

    @precondition(lambda self: isinstance(self.pending, (RunHandleIn, RunHandleInfo)))
    @rule(result=_RESULTS, fast=st.booleans())
    def complete_handler(self, result: object, fast: bool) -> None:
        """The pending handler completes with a result or a crash."""
        run = self.pending
        assert isinstance(run, (RunHandleIn, RunHandleInfo))
        self.pending = None
        ref = run.ref if isinstance(run, RunHandleIn) else None
        if fast and isinstance(result, (Reply, NoReply)):
            if self.session.finish_quietly(run.channel):
                # the same as handled: the reply, with the channel's refs
                topic, _ = self.joined[run.channel]
                if isinstance(result, Reply) and ref is not None:
                    join_ref = self.join_refs[run.channel]
                    self._take((SendReply(join_ref, ref, topic, "ok", {}),))
                return
        if result == "crash":
            self._take(self.session.crashed(run.channel))
        else:
            self._take(self.session.handled(run.channel, ref, result))

    @precondition(lambda self: bool(self.joined))
    @rule(data=st.data())
    def info(self, data: st.DataObject) -> None:
        """An info falls due for a joined channel."""
        channel = data.draw(st.sampled_from(sorted(self.joined)))
        self._take(self.session.info_due(channel, "tick"))

    @rule()
    def close(self) -> None:
        """The connection goes away."""
        self._take(self.session.closed_by_peer())
        self.closed = True

    @rule()
    def bad_frame(self) -> None:
        """An undecodable frame arrives."""
        self._take(self.session.bad_frame("bad"))
        self.closed = True

    @invariant()
    def limits(self) -> None:
        """Never more channels than the limit, never more queued than the cap."""
        assert len(self.session.joined_topics()) <= 2
        assert self.session.queued() <= 3
        assert self.session.busy == (self.pending is not None)

    @invariant()
    def stale_closes(self) -> None:
        """Every phx_close and phx_error has ref equal to a join_ref sent."""
        for effect in self.effects:
            if isinstance(effect, (SendClose, SendError)):
                assert effect.topic.startswith("room:")


class SessionMachineTests(SynchronousTestCase):
    def test_protocol_rules(self) -> None:
        """Random joins, pushes, results and closes keep the protocol rules."""
        run_state_machine_as_test(
            SessionMachine,
            settings=settings(max_examples=300, stateful_step_count=40, deadline=None),
        )
