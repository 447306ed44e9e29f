"""
Tests for L{beryl.coordinator}: the Phoenix channel lifecycle, driven with
fake connections and a fake clock.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from beryl.app import App
from beryl.channel import (
    Channel,
    HandleResult,
    InfoResult,
    JoinContext,
    JoinError,
    JoinOk,
    JoinResult,
    NoReply,
    Push,
    Reply,
    SocketContext,
    Stop,
)
from beryl.coordinator import ChannelEnded, Coordinator
from beryl.interfaces import ICoordinator, ISocketHost, ISubscriber
from beryl.testing import FakeClient, FakeConnection
from beryl.wire import V1_JSON, Binary, Frame, Payload


@attrs.define
class Counter:
    count: int = 0


class Recorder:
    """
    A channel whose callbacks are scripted by the test and recorded.
    """

    def __init__(self) -> None:
        self.terminated: list[tuple[str, str]] = []
        self.infos: list[object] = []
        self.join_result: Any = None

    def join(self, topic: str, payload: Payload, ctx: JoinContext) -> Any:
        if self.join_result is not None:
            return self.join_result
        if isinstance(payload, dict) and payload.get("refuse"):
            return JoinError({"reason": "refused"})
        if isinstance(payload, dict) and payload.get("crash"):
            raise RuntimeError("join exploded")
        if isinstance(payload, dict) and payload.get("info"):
            ctx.send_info("after_join")
            ctx.push("early", {"during": "join"})
        if isinstance(payload, dict) and "track" in payload:
            ctx.track(payload["track"], {"joining": True})
            ctx.send_info_later(1, "timer from a join")
            if payload.get("then_refuse"):
                return JoinError({"reason": "refused after tracking"})
        return JoinOk(Counter(), reply={"joined": topic})

    def handle_in(
        self, event: str, payload: Payload, ctx: SocketContext[Counter]
    ) -> Any:
        state = Counter(ctx.assigns.count + 1)
        if event == "echo":
            return Reply("ok", payload, state)
        if event == "noreply":
            return NoReply(state)
        if event == "push":
            return Push("pushed", {"count": state.count}, state)
        if event == "stop":
            return Stop("normal", reply=("ok", {"bye": True}))
        if event == "fail":
            return Stop("bad thing")
        if event == "crash":
            raise ValueError("handler exploded")
        if event == "count":
            return Reply("ok", {"count": state.count}, state)
        if event == "later":
            ctx.send_info_later(5, "tick")
            return NoReply(state)
        if event == "later_then_cancel":
            ctx.send_info_later(5, "tick").cancel()
            return NoReply(state)
        if event == "async":
            d: Deferred[HandleResult[Counter]] = Deferred()
            self.pending = d
            return d
        if event == "shout":
            ctx.broadcast("shout", payload)
            return NoReply(state)
        if event == "whisper":
            ctx.broadcast_from("whisper", payload)
            return NoReply(state)
        if event == "track":
            assert isinstance(payload, dict)
            ctx.track(payload["key"], {"n": 1})
            return NoReply(state)
        if event == "bad":
            return "not a result"
        if event == "slow_info":
            ctx.send_info("slow")
            return NoReply(state)
        if event == "keep_context":
            self.saved_context = ctx
            return NoReply(state)
        return Reply("error", {"unknown": event}, state)

    def handle_info(self, message: object, ctx: SocketContext[Counter]) -> Any:
        self.infos.append(message)
        if message == "slow":
            d: Deferred[InfoResult[Counter]] = Deferred()
            self.pending_info = d
            return d
        return Push("info", {"message": str(message)}, ctx.assigns)

    def terminate(self, reason: str, ctx: SocketContext[Counter]) -> None:
        self.terminated.append((ctx.topic, reason))

    def channel(self) -> Channel[Counter]:
        return (
            Channel.create(self.join)
            .with_handle_in(self.handle_in)
            .with_handle_info(self.handle_info)
            .with_terminate(self.terminate)
        )


def _reply(
    join_ref: Any, ref: Any, topic: str, status: str, response: Any
) -> list[Any]:
    return [join_ref, ref, topic, "phx_reply", {"status": status, "response": response}]


class CoordinatorTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.recorder = Recorder()
        self.app = App().channel("room:*", self.recorder.channel())
        self.coordinator = Coordinator(self.app, clock=self.clock, max_channels=3)
        self.coordinator.startService()
        self.addCleanup(self._stop)

    def _stop(self) -> None:
        if self.coordinator.running:
            self.coordinator.stopService()
            self.clock.advance(self.coordinator.drain_timeout)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def client(self, **kwargs: Any) -> FakeClient:
        return FakeClient(self.coordinator, **kwargs)

    def joined(self, topic: str = "room:a", join_ref: str = "1") -> FakeClient:
        client = self.client()
        client.send(join_ref, join_ref, topic, "phx_join", {})
        self.assertEqual(
            client.take(), [_reply(join_ref, join_ref, topic, "ok", {"joined": topic})]
        )
        return client


class LifecycleTests(CoordinatorTestCase):
    def test_provides_interfaces(self) -> None:
        """The coordinator provides ICoordinator and ISocketHost; its fan-out ISubscriber."""
        verifyObject(ICoordinator, self.coordinator)
        verifyObject(ISocketHost, self.coordinator)
        verifyObject(ISubscriber, self.coordinator.fanout)

    def test_startup_callbacks(self) -> None:
        """App.on_start callbacks get the coordinator when it starts; one that raises is logged."""
        seen: list[Coordinator] = []

        def explode(coordinator: Coordinator) -> None:
            raise RuntimeError("startup exploded")

        app = App().on_start(explode).on_start(seen.append)
        coordinator = Coordinator(app, clock=self.clock)
        coordinator.startService()
        coordinator.stopService()
        self.assertEqual(seen, [coordinator])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_heartbeat(self) -> None:
        """A heartbeat is answered ok with a null join_ref, with no channel joined."""
        client = self.client()
        client.send(None, "9", "phoenix", "heartbeat", {})
        self.assertEqual(client.take(), [_reply(None, "9", "phoenix", "ok", {})])

    def test_numeric_ref_echoed(self) -> None:
        """A numeric ref comes back as the same number."""
        client = self.client()
        client.send(None, 5, "phoenix", "heartbeat", {})
        self.assertEqual(client.take(), [_reply(None, 5, "phoenix", "ok", {})])

    def test_join_ok(self) -> None:
        """A join accepted by the channel is answered ok with its reply."""
        self.joined()

    def test_join_refused(self) -> None:
        """A refused join gets an error reply and leaves the topic unjoined."""
        client = self.client()
        client.send("1", "1", "room:a", "phx_join", {"refuse": True})
        client.send("1", "2", "room:a", "echo", {})
        self.assertEqual(
            client.take(),
            [
                _reply("1", "1", "room:a", "error", {"reason": "refused"}),
                _reply(None, "2", "room:a", "error", {"reason": "unmatched topic"}),
            ],
        )

    def test_join_crash(self) -> None:
        """A join callback that raises gets 'join crashed'; the socket goes on."""
        client = self.client()
        client.send("1", "1", "room:a", "phx_join", {"crash": True})
        client.send(None, "2", "phoenix", "heartbeat", {})
        self.assertEqual(
            client.take(),
            [
                _reply("1", "1", "room:a", "error", {"reason": "join crashed"}),
                _reply(None, "2", "phoenix", "ok", {}),
            ],
        )
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_unmatched_join(self) -> None:
        """A join on a topic with no route has a null join_ref."""
        client = self.client()
        client.send("3", "3", "nope", "phx_join", {})
        self.assertEqual(
            client.take(),
            [_reply(None, "3", "nope", "error", {"reason": "unmatched topic"})],
        )

    def test_duplicate_join(self) -> None:
        """A second join replies first, then closes the old channel with its join_ref."""
        client = self.joined(join_ref="1")
        client.send("2", "2", "room:a", "phx_join", {})
        self.assertEqual(
            client.take(),
            [
                _reply("2", "2", "room:a", "ok", {"joined": "room:a"}),
                ["1", "1", "room:a", "phx_close", {}],
            ],
        )
        self.assertEqual(self.recorder.terminated, [("room:a", "duplicate join")])
        client.send("2", "3", "room:a", "count", {})
        self.assertEqual(
            client.take(), [_reply("2", "3", "room:a", "ok", {"count": 1})]
        )

    def test_leave(self) -> None:
        """Leaving replies ok, then sends phx_close with join_ref as ref, then terminates."""
        client = self.joined()
        client.send("1", "5", "room:a", "phx_leave", {})
        self.assertEqual(
            client.take(),
            [
                _reply("1", "5", "room:a", "ok", {}),
                ["1", "1", "room:a", "phx_close", {}],
            ],
        )
        self.assertEqual(self.recorder.terminated, [("room:a", "leave")])

    def test_leave_null_join_ref(self) -> None:
        """A leave with a null join_ref leaves the channel."""
        client = self.joined()
        client.send(None, "5", "room:a", "phx_leave", {})
        self.assertEqual(
            client.take(),
            [
                _reply("1", "5", "room:a", "ok", {}),
                ["1", "1", "room:a", "phx_close", {}],
            ],
        )

    def test_leave_stale_join_ref(self) -> None:
        """A leave with another non-null join_ref is dropped silently."""
        client = self.joined()
        client.send("7", "5", "room:a", "phx_leave", {})
        self.assertEqual(client.take(), [])
        self.assertEqual(self.recorder.terminated, [])

    def test_leave_unjoined(self) -> None:
        """Leaving a topic never joined replies ok, echoing join_ref and ref."""
        client = self.client()
        client.send("4", "5", "room:b", "phx_leave", {})
        self.assertEqual(client.take(), [_reply("4", "5", "room:b", "ok", {})])

    def test_push_unjoined(self) -> None:
        """A push to an unjoined topic gets 'unmatched topic' with null join_ref."""
        client = self.client()
        client.send("4", "5", "room:b", "echo", {})
        self.assertEqual(
            client.take(),
            [_reply(None, "5", "room:b", "error", {"reason": "unmatched topic"})],
        )

    def test_stale_join_ref_dropped(self) -> None:
        """A push with a stale join_ref gets no frame; a null join_ref is handled."""
        client = self.joined()
        client.send("old", "5", "room:a", "echo", {"x": 1})
        client.send(None, "6", "room:a", "echo", {"x": 2})
        self.assertEqual(client.take(), [_reply("1", "6", "room:a", "ok", {"x": 2})])

    def test_results(self) -> None:
        """NoReply keeps assigns, Reply answers, Push pushes with join_ref and null ref."""
        client = self.joined()
        client.send("1", "2", "room:a", "noreply", {})
        client.send("1", "3", "room:a", "push", {})
        client.send("1", "4", "room:a", "count", {})
        self.assertEqual(
            client.take(),
            [
                ["1", None, "room:a", "pushed", {"count": 2}],
                _reply("1", "4", "room:a", "ok", {"count": 3}),
            ],
        )

    def test_stop_normal(self) -> None:
        """Stop('normal') sends its reply, then phx_close, and terminates."""
        client = self.joined()
        client.send("1", "2", "room:a", "stop", {})
        self.assertEqual(
            client.take(),
            [
                _reply("1", "2", "room:a", "ok", {"bye": True}),
                ["1", "1", "room:a", "phx_close", {}],
            ],
        )
        self.assertEqual(self.recorder.terminated, [("room:a", "normal")])

    def test_stop_error(self) -> None:
        """Stop with another reason sends phx_error."""
        client = self.joined()
        client.send("1", "2", "room:a", "fail", {})
        self.assertEqual(
            client.take(),
            [["1", "1", "room:a", "phx_error", {"reason": "channel_crash"}]],
        )
        self.assertEqual(self.recorder.terminated, [("room:a", "bad thing")])

    def test_crash_isolated(self) -> None:
        """A crash errors that channel only; the socket's other channel goes on."""
        client = self.joined("room:a", "1")
        client.send("2", "2", "room:b", "phx_join", {})
        client.take()
        client.send("1", "3", "room:a", "crash", {})
        client.send("1", "4", "room:a", "echo", {})
        client.send("2", "5", "room:b", "echo", {"still": "here"})
        self.assertEqual(
            client.take(),
            [
                ["1", "1", "room:a", "phx_error", {"reason": "channel_crash"}],
                _reply(None, "4", "room:a", "error", {"reason": "unmatched topic"}),
                _reply("2", "5", "room:b", "ok", {"still": "here"}),
            ],
        )
        self.assertEqual(self.recorder.terminated, [("room:a", "crash")])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_bad_result_crashes(self) -> None:
        """A handler returning something that is not a result crashes the channel."""
        client = self.joined()
        client.send("1", "2", "room:a", "bad", {})
        self.assertEqual(
            client.take(),
            [["1", "1", "room:a", "phx_error", {"reason": "channel_crash"}]],
        )
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)

    def test_too_many_channels(self) -> None:
        """A join past max_channels is refused with 'too many channels joined'."""
        client = self.client()
        for n in range(3):
            client.send(str(n), str(n), f"room:{n}", "phx_join", {})
        client.take()
        client.send("9", "9", "room:9", "phx_join", {})
        self.assertEqual(
            client.take(),
            [
                _reply(
                    "9", "9", "room:9", "error", {"reason": "too many channels joined"}
                )
            ],
        )

    def test_disconnect_terminates(self) -> None:
        """A dropped connection terminates every channel and forgets the socket."""
        client = self.joined("room:a", "1")
        client.send("2", "2", "room:b", "phx_join", {})
        client.disconnect()
        self.assertEqual(
            sorted(self.recorder.terminated),
            [("room:a", "closed"), ("room:b", "closed")],
        )
        self.assertEqual(self.coordinator.socket_count(), 0)
        self.assertEqual(self.coordinator.local_subscriber_count("room:a"), 0)

    def test_stop_service_closes_1001(self) -> None:
        """Stopping closes sockets with 1001 and waits for them to go, up to the drain timeout."""
        client = self.joined()
        other = self.joined()
        stopped = self.coordinator.stopService()
        assert stopped is not None
        self.assertEqual(client.connection.closed, (1001, "server shutting down"))
        other.disconnect()
        self.assertNoResult(stopped)
        self.assertEqual(self.recorder.terminated, [("room:a", "closed")])
        self.clock.advance(self.coordinator.drain_timeout)
        self.successResultOf(stopped)
        self.assertEqual(self.recorder.terminated, [("room:a", "closed")] * 2)

    def test_socket_opened_while_stopping(self) -> None:
        """A socket accepted after stopping began is told to go (1001) and never counted."""
        first = self.joined()
        stopped = self.coordinator.stopService()
        late = self.client()
        self.assertEqual(late.connection.closed, (1001, "server shutting down"))
        self.assertEqual(self.coordinator.socket_count(), 1)
        first.disconnect()
        assert stopped is not None
        self.successResultOf(stopped)

    def test_stop_service_done_when_sockets_close(self) -> None:
        """Stopping finishes as soon as the last connection has closed."""
        client = self.joined()
        stopped = self.coordinator.stopService()
        assert stopped is not None
        client.disconnect()
        self.successResultOf(stopped)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class AsyncTests(CoordinatorTestCase):
    def test_async_join_queues_messages(self) -> None:
        """Messages after a pending join wait, so the join reply comes first."""
        pending: Deferred[JoinResult[Counter]] = Deferred()
        self.recorder.join_result = pending
        client = self.client()
        client.send("1", "1", "room:a", "phx_join", {})
        client.send("1", "2", "room:a", "echo", {"n": 1})
        client.send(None, "3", "phoenix", "heartbeat", {})
        self.assertEqual(client.take(), [])
        pending.callback(JoinOk(Counter(), reply=None))
        self.assertEqual(
            client.take(),
            [
                _reply("1", "1", "room:a", "ok", {}),
                _reply("1", "2", "room:a", "ok", {"n": 1}),
                _reply(None, "3", "phoenix", "ok", {}),
            ],
        )

    def test_queue_is_bounded(self) -> None:
        """A socket that floods messages while its join is pending is closed with 1008."""
        self.recorder.join_result = Deferred()
        self.coordinator.max_queued = 3
        client = self.client()
        client.send("1", "1", "room:a", "phx_join", {})
        for n in range(3):
            client.send("1", str(n), "room:a", "echo", {})
        self.assertIsNone(client.connection.closed)
        client.send("1", "9", "room:a", "echo", {})
        self.assertEqual(client.connection.closed, (1008, "too many pending messages"))
        self.assertEqual(self.coordinator.socket_count(), 0)

    def test_coroutine_join(self) -> None:
        """A join may be a coroutine."""

        async def join(
            topic: str, payload: Payload, ctx: JoinContext
        ) -> JoinResult[Counter]:
            return JoinOk(Counter(7))

        self.app.channel("async:*", Channel.create(join))
        client = self.client()
        client.send("1", "1", "async:x", "phx_join", {})
        self.assertEqual(client.take(), [_reply("1", "1", "async:x", "ok", {})])

    def test_async_join_failure(self) -> None:
        """A join Deferred that fails is answered 'join crashed' and the queue resumes."""
        pending: Deferred[JoinResult[Counter]] = Deferred()
        self.recorder.join_result = pending
        client = self.client()
        client.send("1", "1", "room:a", "phx_join", {})
        client.send(None, "2", "phoenix", "heartbeat", {})
        pending.errback(RuntimeError("auth service down"))
        self.assertEqual(
            client.take(),
            [
                _reply("1", "1", "room:a", "error", {"reason": "join crashed"}),
                _reply(None, "2", "phoenix", "ok", {}),
            ],
        )
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_async_handle_in_keeps_order(self) -> None:
        """An asynchronous handle_in holds later messages until it answers."""
        client = self.joined()
        client.send("1", "2", "room:a", "async", {})
        client.send("1", "3", "room:a", "echo", {"after": True})
        self.assertEqual(client.take(), [])
        self.recorder.pending.callback(Reply("ok", {"first": True}, Counter()))
        self.assertEqual(
            client.take(),
            [
                _reply("1", "2", "room:a", "ok", {"first": True}),
                _reply("1", "3", "room:a", "ok", {"after": True}),
            ],
        )

    def test_info_after_join(self) -> None:
        """Pushes and infos made during a join follow the join reply."""
        client = self.client()
        client.send("1", "1", "room:a", "phx_join", {"info": True})
        self.assertEqual(
            client.take(),
            [
                _reply("1", "1", "room:a", "ok", {"joined": "room:a"}),
                ["1", None, "room:a", "early", {"during": "join"}],
            ],
        )
        self.clock.advance(0)
        self.assertEqual(
            client.take(), [["1", None, "room:a", "info", {"message": "after_join"}]]
        )

    def test_send_info_later(self) -> None:
        """send_info_later fires after its delay."""
        client = self.joined()
        client.send("1", "2", "room:a", "later", {})
        self.clock.advance(4)
        self.assertEqual(client.take(), [])
        self.clock.advance(1)
        self.assertEqual(
            client.take(), [["1", None, "room:a", "info", {"message": "tick"}]]
        )

    def test_timers_cancelled_on_leave(self) -> None:
        """A channel's pending infos are cancelled when it ends."""
        client = self.joined()
        client.send("1", "2", "room:a", "later", {})
        client.send("1", "3", "room:a", "phx_leave", {})
        self.assertEqual(self.recorder.infos, [])
        self.assertEqual(
            [
                call
                for call in self.clock.getDelayedCalls()
                if getattr(call, "func", None).__name__ == "fire"  # type: ignore[union-attr]
            ],
            [],
        )

    def test_cancelled_timers_not_kept(self) -> None:
        """1,000 set-and-cancel rounds of send_info_later leave no timer held."""
        client = self.joined()
        for n in range(1000):
            client.send("1", str(n), "room:a", "later_then_cancel", {})
        (runtime,) = client.socket.channels.values()
        self.assertEqual(len(runtime.timers or ()), 0)
        self.clock.advance(10)
        self.assertEqual(self.recorder.infos, [])


class LifecycleEdgeTests(CoordinatorTestCase):
    def test_refused_join_leaves_no_presence_or_timers(self) -> None:
        """A join that tracks and sets a timer, then refuses, leaves neither behind."""
        client = self.client()
        client.send(
            "1", "1", "room:a", "phx_join", {"track": "ghost", "then_refuse": True}
        )
        self.assertEqual(self.coordinator.presence.list("room:a"), {})
        self.clock.advance(5)
        self.assertEqual(self.recorder.infos, [])
        client.send("2", "2", "room:a", "phx_join", {"track": "ghost"})
        self.assertEqual(list(self.coordinator.presence.list("room:a")), ["ghost"])
        self.assertEqual(self.recorder.terminated, [])

    def test_crashed_join_leaves_no_presence(self) -> None:
        """A join that tracks and then fails asynchronously untracks again."""
        pending: Deferred[JoinResult[Counter]] = Deferred()

        def join(topic: str, payload: Payload, ctx: JoinContext) -> Any:
            ctx.track("ghost", {})
            return pending

        self.app.channel("slow:*", Channel.create(join))
        client = self.client()
        client.send("1", "1", "slow:x", "phx_join", {})
        self.assertEqual(list(self.coordinator.presence.list("slow:x")), ["ghost"])
        pending.errback(RuntimeError("auth backend down"))
        self.assertEqual(self.coordinator.presence.list("slow:x"), {})
        self.assertEqual(
            client.take(),
            [_reply("1", "1", "slow:x", "error", {"reason": "join crashed"})],
        )
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_socket_gone_during_async_join(self) -> None:
        """A socket that closes while its join is pending gets no channel and no ghost presence."""
        pending: Deferred[JoinResult[Counter]] = Deferred()
        self.recorder.join_result = pending
        client = self.client()
        client.send("1", "1", "room:a", "phx_join", {})
        client.disconnect()
        pending.callback(JoinOk(Counter()))
        self.assertEqual(self.recorder.terminated, [("room:a", "closed")])
        self.assertEqual(self.coordinator.local_subscriber_count("room:a"), 0)
        self.assertEqual(client.take(), [])

    def test_timer_during_async_join_waits_for_reply(self) -> None:
        """send_info_later that fires while the join is pending is handled after the join reply."""
        pending: Deferred[JoinResult[Counter]] = Deferred()

        def join(topic: str, payload: Payload, ctx: JoinContext) -> Any:
            ctx.send_info_later(1, "early timer")
            return pending

        self.app.channel(
            "slow:*", Channel.create(join).with_handle_info(self.recorder.handle_info)
        )
        client = self.client()
        client.send("1", "1", "slow:x", "phx_join", {})
        self.clock.advance(2)
        self.assertEqual(self.recorder.infos, [])
        pending.callback(JoinOk(Counter()))
        self.clock.advance(0)
        self.assertEqual(
            client.take(),
            [
                _reply("1", "1", "slow:x", "ok", {}),
                ["1", None, "slow:x", "info", {"message": "early timer"}],
            ],
        )

    def test_track_after_end_refused(self) -> None:
        """A context kept past its channel's end cannot track a presence."""
        client = self.joined()
        client.send("1", "2", "room:a", "keep_context", {})
        client.send("1", "3", "room:a", "phx_leave", {})
        context = self.recorder.saved_context
        self.assertRaises(ChannelEnded, context.track, "late", {})
        self.assertEqual(self.coordinator.presence.list("room:a"), {})

    def test_duplicate_join_presence(self) -> None:
        """A rejoin that tracks the same key replaces the old channel's presence without a clash."""
        client = self.client()
        client.send("1", "1", "room:a", "phx_join", {"track": "alice"})
        client.send("2", "2", "room:a", "phx_join", {"track": "alice"})
        (metas,) = self.coordinator.presence.list("room:a").values()
        self.assertEqual(len(metas["metas"]), 1)

    def test_async_handle_info_serialized(self) -> None:
        """A pending asynchronous handle_info holds later pushes back, so assigns are not lost."""
        client = self.joined()
        client.send("1", "2", "room:a", "slow_info", {})
        self.clock.advance(0)
        client.send("1", "3", "room:a", "count", {})
        self.assertEqual(client.take(), [])
        self.recorder.pending_info.callback(NoReply(Counter(10)))
        self.assertEqual(
            client.take(), [_reply("1", "3", "room:a", "ok", {"count": 11})]
        )


class ExplodingConnection(FakeConnection):
    def send_prepared(self, prepared: object) -> None:
        raise OSError("host transport broke")


class CountingConnection(FakeConnection):
    prepared = 0

    def prepare(self, frame: Frame) -> object:
        CountingConnection.prepared += 1
        return frame


class BroadcastTests(CoordinatorTestCase):
    def test_broadcast_to_all(self) -> None:
        """A broadcast reaches every subscriber with null refs, sender included."""
        a = self.joined(join_ref="1")
        b = self.joined(join_ref="7")
        a.send("1", "2", "room:a", "shout", {"m": 1})
        frame = [None, None, "room:a", "shout", {"m": 1}]
        self.assertEqual(a.take(), [frame])
        self.assertEqual(b.take(), [frame])

    def test_broadcast_from(self) -> None:
        """broadcast_from skips only the sender's channel."""
        a = self.joined()
        b = self.joined()
        a.send("1", "2", "room:a", "whisper", {"m": 1})
        self.assertEqual(a.take(), [])
        self.assertEqual(b.take(), [[None, None, "room:a", "whisper", {"m": 1}]])

    def test_encode_once_per_serializer(self) -> None:
        """A broadcast is prepared once per serializer, and all sockets get the same bytes."""
        CountingConnection.prepared = 0
        clients = [self.client(connection=CountingConnection()) for _ in range(5)] + [
            self.client(connection=CountingConnection(), serializer=V1_JSON)
            for _ in range(3)
        ]
        for client in clients:
            client.send("1", "1", "room:a", "phx_join", {})
            client.take()
        self.coordinator.broadcast("room:a", "news", {"x": "é"})
        self.assertEqual(CountingConnection.prepared, 2)
        v2 = {id(c.connection.frames[0].data) for c in clients[:5]}
        self.assertEqual(len(v2), 1)
        self.assertEqual(
            clients[5].received(),
            [{"topic": "room:a", "event": "news", "payload": {"x": "é"}, "ref": None}],
        )

    def test_broadcast_counted(self) -> None:
        """Messages and bytes out count each delivery, sender skipped, per serializer, and not V1 sockets skipped for binary."""
        counters = self.coordinator.counters
        v2 = [self.joined() for _ in range(3)]
        for client in v2:
            client.take()
        # one kind of socket
        before = counters.messages_out, counters.bytes_out
        v2[0].send("1", "2", "room:a", "whisper", {"m": 0})
        frames = [f for c in v2 for f in c.connection.frames]
        self.assertEqual(len(frames), 2)
        self.assertEqual(
            (counters.messages_out - before[0], counters.bytes_out - before[1]),
            (2, sum(len(f.data) for f in frames)),
        )
        v1 = [self.client(serializer=V1_JSON) for _ in range(2)]
        for client in v1:
            client.send("1", "1", "room:a", "phx_join", {})
        for client in v2 + v1:
            client.take()

        def sent() -> tuple[int, int]:
            frames = [f for c in v2 + v1 for f in c.connection.frames]
            return len(frames), sum(len(f.data) for f in frames)

        cases = [
            lambda: v2[0].send("1", "2", "room:a", "whisper", {"m": 1}),
            lambda: self.coordinator.broadcast("room:a", "news", {"x": "é"}),
            lambda: self.coordinator.broadcast("room:a", "bin", Binary(b"\x01")),
            lambda: v1[0].send("1", "3", "room:a", "whisper", {"m": 2}),
        ]
        for case, deliveries in zip(cases, (4, 5, 3, 4), strict=True):
            before = counters.messages_out, counters.bytes_out
            for client in v2 + v1:
                client.connection.frames.clear()
            case()
            count, size = sent()
            self.assertEqual(count, deliveries)
            self.assertEqual(
                (counters.messages_out - before[0], counters.bytes_out - before[1]),
                (count, size),
            )

    def test_failing_connection_does_not_stop_fanout(self) -> None:
        """A connection that raises is closed with 1011; the broadcast still reaches everyone else."""
        before = self.joined()
        broken = self.client(connection=ExplodingConnection())
        broken.send("1", "1", "room:a", "phx_join", {})
        after = self.joined()
        self.coordinator.broadcast("room:a", "news", {})
        frame: list[Any] = [None, None, "room:a", "news", {}]
        self.assertEqual(before.take(), [frame])
        self.assertEqual(after.take(), [frame])
        self.assertEqual(broken.connection.closed, (1011, "internal error"))
        self.assertEqual(self.coordinator.socket_count(), 2)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_binary_broadcast(self) -> None:
        """A binary broadcast goes out as a kind-2 frame; V1 sockets are skipped."""
        v2 = self.joined()
        v1 = self.client(serializer=V1_JSON)
        v1.send("1", "1", "room:a", "phx_join", {})
        v1.take()
        self.coordinator.broadcast("room:a", "bin", Binary(b"\x01\x02"))
        self.assertEqual(v2.take(), [b"\x02\x06\x03room:abin\x01\x02"])
        self.assertEqual(v1.take(), [])

    def test_push_to_socket(self) -> None:
        """push_to_socket reaches one socket's channel and reports whether it exists."""
        client = self.joined()
        socket_id = client.socket.socket_id
        self.assertTrue(self.coordinator.push_to_socket(socket_id, "room:a", "hi", {}))
        self.assertFalse(
            self.coordinator.push_to_socket(socket_id, "room:zz", "hi", {})
        )
        self.assertFalse(self.coordinator.push_to_socket("nobody", "room:a", "hi", {}))
        self.assertEqual(client.take(), [["1", None, "room:a", "hi", {}]])


class PresenceAndTimeoutTests(CoordinatorTestCase):
    def test_presence_diff_on_track_and_leave(self) -> None:
        """Tracking broadcasts a presence_diff with joins; leaving one with leaves."""
        a = self.joined()
        b = self.joined()
        a.send("1", "2", "room:a", "track", {"key": "alice"})
        (diff,) = b.take()
        self.assertEqual(diff[:4], [None, None, "room:a", "presence_diff"])
        self.assertEqual(diff[4]["leaves"], {})
        (meta,) = diff[4]["joins"]["alice"]["metas"]
        self.assertEqual(meta["n"], 1)
        a.disconnect()
        (diff,) = b.take()
        self.assertEqual(diff[4], {"joins": {}, "leaves": {"alice": {"metas": [meta]}}})
        self.assertEqual(self.coordinator.presence.list("room:a"), {})

    def test_idle_timeout(self) -> None:
        """A socket that sends nothing for the idle timeout is closed with 1001."""
        self.coordinator.idle_timeout = 60
        quiet = self.client()
        chatty = self.client()
        for _ in range(4):
            self.clock.advance(30)
            chatty.send(None, "1", "phoenix", "heartbeat", {})
        self.assertEqual(quiet.connection.closed, (1001, "idle timeout"))
        self.assertIsNone(chatty.connection.closed)
        self.assertEqual(self.coordinator.socket_count(), 1)

    def test_reject_frame(self) -> None:
        """An undecodable frame closes that socket with 1007 and its reason."""
        bad = self.joined()
        good = self.joined()
        self.coordinator.receive_data(bad.socket, b"not json", False)
        assert bad.connection.closed is not None
        code, reason = bad.connection.closed
        self.assertEqual(code, 1007)
        self.assertTrue(reason.startswith("malformed JSON"), reason)
        good.send("1", "2", "room:a", "echo", {"ok": 1})
        self.assertEqual(good.take(), [_reply("1", "2", "room:a", "ok", {"ok": 1})])
