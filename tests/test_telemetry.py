"""
Tests for L{beryl.telemetry}: observers by event class.
"""

from __future__ import annotations

from typing import cast

from twisted.internet.task import Clock
from twisted.logger import ILogObserver, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from beryl import (
    App,
    Channel,
    HandleResult,
    JoinContext,
    JoinOk,
    JoinResult,
    Payload,
    SocketContext,
    telemetry,
)
from beryl.coordinator import Coordinator
from beryl.demo import demo_app
from beryl.testing import FakeClient


class TelemetryTests(SynchronousTestCase):
    """
    L{telemetry.Telemetry} hands events to the observers of their class.
    """

    def test_observers_by_class(self) -> None:
        """An observer sees the events of its class only, in order."""
        events = telemetry.Telemetry()
        seen: list[object] = []
        events.on(telemetry.SocketConnected, seen.append)
        events.emit(telemetry.SocketConnected("s1", "websocket"))
        events.emit(telemetry.SocketClosed("s1", "websocket"))
        events.emit(telemetry.SocketConnected("s2", "longpoll"))
        self.assertEqual(
            seen,
            [
                telemetry.SocketConnected("s1", "websocket"),
                telemetry.SocketConnected("s2", "longpoll"),
            ],
        )

    def test_observed(self) -> None:
        """Only observed event classes report as observed, until stopped."""
        events = telemetry.Telemetry()
        self.assertFalse(events.observed(telemetry.HandlerFinished))
        stop = events.on(telemetry.HandlerFinished, lambda event: None)
        self.assertTrue(events.observed(telemetry.HandlerFinished))
        self.assertFalse(events.observed(telemetry.ChannelJoined))
        stop()
        self.assertFalse(events.observed(telemetry.HandlerFinished))

    def test_failing_observer(self) -> None:
        """An observer that raises is logged, and later observers still run."""
        events = telemetry.Telemetry()
        seen: list[object] = []

        def broken(event: telemetry.ChannelCrashed) -> None:
            raise RuntimeError("observer bug")

        events.on(telemetry.ChannelCrashed, broken)
        events.on(telemetry.ChannelCrashed, seen.append)
        event = telemetry.ChannelCrashed("s1", "room:1", "room:*")
        events.emit(event)
        self.assertEqual(seen, [event])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class DurationsTests(SynchronousTestCase):
    """
    L{telemetry.Durations} counts durations by powers of two nanoseconds.
    """

    def test_buckets(self) -> None:
        """A duration of d ns is counted under d's bit length: below 2**bits for at_most(bits)."""
        durations = telemetry.Durations()
        for ns in (0, 1, 1023, 1024, 5000, 3 * 10**9):
            durations.record(ns)
        self.assertEqual(durations.at_most(0), 1)
        self.assertEqual(durations.at_most(10), 3)  # 0, 1, 1023 < 1024
        self.assertEqual(durations.at_most(13), 5)  # 1024 and 5000 < 8192
        self.assertEqual(durations.at_most(31), 5)
        self.assertEqual(durations.at_most(32), 6)
        self.assertEqual(durations.total_ns, 1 + 1023 + 1024 + 5000 + 3 * 10**9)

    def test_out_of_range(self) -> None:
        """A negative duration counts as none; one past 64 bits lands in the last bucket."""
        durations = telemetry.Durations()
        durations.record(-5)
        durations.record(2**70)
        self.assertEqual(durations.counts[0], 1)
        self.assertEqual(durations.counts[64], 1)


class CoordinatorEventTests(SynchronousTestCase):
    """
    A coordinator tells an app's observers what happens, with route
    patterns rather than topics.
    """

    def setUp(self) -> None:
        self.events: list[object] = []
        self.durations: list[telemetry.HandlerFinished] = []
        self.clock = Clock()

    def start(self, app: App) -> Coordinator:
        """Observe C{app}'s events and serve it."""
        for kind in (
            telemetry.SocketConnected,
            telemetry.SocketClosed,
            telemetry.ChannelJoined,
            telemetry.JoinFailed,
            telemetry.ChannelLeft,
            telemetry.ChannelCrashed,
        ):
            app.on_event(kind, self.events.append)
        app.on_event(telemetry.HandlerFinished, self.durations.append)
        coordinator = Coordinator(app, clock=self.clock)
        coordinator.startService()
        self.addCleanup(coordinator.stopService)
        return coordinator

    def test_lifecycle(self) -> None:
        """Connect, a refused join, a join, a ping, a leave and a close are told in order."""
        client = FakeClient(self.start(demo_app()))
        socket_id = client.socket.socket_id
        client.send("1", "1", "room:a", "phx_join", {})
        client.send("2", "2", "room:a", "phx_join", {"user": "ann"})
        client.send("2", "3", "room:a", "ping", {"n": 1})
        client.send("2", "4", "room:a", "phx_leave", {})
        client.disconnect()
        self.assertEqual(
            self.events,
            [
                telemetry.SocketConnected(socket_id, "fake"),
                telemetry.JoinFailed(socket_id, "room:a", "room:*", False),
                telemetry.ChannelJoined(socket_id, "room:a", "room:*"),
                telemetry.ChannelLeft(socket_id, "room:a", "room:*", "leave"),
                telemetry.SocketClosed(socket_id, "fake"),
            ],
        )
        timed = [(d.route, d.callback) for d in self.durations]
        self.assertEqual(timed.count(("room:*", "join")), 2)
        self.assertEqual(timed.count(("room:*", "handle_in")), 1)
        self.assertTrue(all(d.seconds >= 0 for d in self.durations))

    def test_durations_counted_in_place(self) -> None:
        """With durations measured, every callback is counted in them, pushes answered at once and Deferreds alike, with or without observers."""
        app = demo_app()
        durations = app.telemetry.measure_durations()
        self.assertIs(app.telemetry.measure_durations(), durations)
        client = FakeClient(self.start(app))
        client.send("1", "1", "room:a", "phx_join", {"user": "ann"})
        for ref in range(2, 7):
            client.send("1", str(ref), "room:a", "ping", {"n": ref})
        # one join and five pings, counted once each
        self.assertEqual(sum(durations.counts), 6)
        self.assertEqual(len(self.durations), 6)
        self.assertGreaterEqual(durations.total_ns, 0)

    def test_presence_diffs(self) -> None:
        """A presence diff published on a topic is told with its sizes."""
        app = demo_app()
        changes: list[telemetry.PresenceChanged] = []
        app.on_event(telemetry.PresenceChanged, changes.append)
        client = FakeClient(self.start(app))
        client.send("1", "1", "room:a", "phx_join", {"user": "ann"})
        self.clock.advance(5)
        self.assertIn(telemetry.PresenceChanged("room:a", 1, 0), changes)

    def test_crash(self) -> None:
        """A crashing handler is told as a crash, then as a leave for "crash"."""

        def join(topic: str, payload: Payload, ctx: JoinContext) -> JoinResult[None]:
            return JoinOk(None)

        def handle_in(
            event: str, payload: Payload, ctx: SocketContext[None]
        ) -> HandleResult[None]:
            raise RuntimeError("handler bug")

        app = App().channel("crash:*", Channel.create(join).with_handle_in(handle_in))
        client = FakeClient(self.start(app))
        socket_id = client.socket.socket_id
        client.send("1", "1", "crash:a", "phx_join", {})
        client.send("1", "2", "crash:a", "boom", {})
        self.assertEqual(
            self.events[-2:],
            [
                telemetry.ChannelCrashed(socket_id, "crash:a", "crash:*"),
                telemetry.ChannelLeft(socket_id, "crash:a", "crash:*", "crash"),
            ],
        )
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class ExampleTests(SynchronousTestCase):
    """
    docs/examples/telemetry_app.py.
    """

    def test_slow_handlers_logged(self) -> None:
        """The example's observer logs callbacks slower than its threshold."""
        from docs.examples import telemetry_app

        self.patch(telemetry_app, "SLOW", -1.0)
        logged: list[dict[str, object]] = []
        observer = cast(ILogObserver, logged.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        coordinator = Coordinator(telemetry_app.make_app(), clock=Clock())
        coordinator.startService()
        self.addCleanup(coordinator.stopService)
        client = FakeClient(coordinator)
        client.send("1", "1", "room:a", "phx_join", {"user": "ann"})
        client.send("1", "2", "room:a", "ping", {})
        callbacks = [
            e["callback"] for e in logged if e.get("log_namespace") == "telemetry_app"
        ]
        self.assertIn("join", callbacks)
        self.assertIn("handle_in", callbacks)
