"""
Log bursts: identical lines repeated many times in a short while (Twisted
logs three lines for every connection it cannot accept when file
descriptors run out) are passed a few times, then counted and reported as
one line.
"""

from __future__ import annotations

from typing import Any, Callable

import attrs
from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import (
    ILogObserver,
    LogEvent,
    LogLevel,
    LogPublisher,
    formatEvent,
    globalLogPublisher,
)
from zope.interface import implementer

__all__ = ["BurstLimiter", "LogBurstLimitService", "limit_bursts"]


@attrs.define
class _Window:
    start: float
    passed: int = 1
    suppressed: int = 0
    report: IDelayedCall | None = None
    sample: LogEvent | None = None


@implementer(ILogObserver)
class BurstLimiter:
    """
    An observer that passes events on to another, except that of identical
    lines (same namespace, level and text) at most C{burst} pass in each
    C{period} seconds.  The rest are counted, and at the end of the period
    one line says how many were suppressed.
    """

    def __init__(
        self,
        observer: ILogObserver,
        clock: IReactorTime,
        burst: int = 3,
        period: float = 10.0,
    ) -> None:
        self._observer = observer
        self._clock = clock
        self.burst = burst
        self.period = period
        self._windows: dict[tuple[Any, Any, str], _Window] = {}

    def __call__(self, event: LogEvent) -> None:
        try:
            text = formatEvent(event)
        except Exception:
            self._observer(event)
            return
        key = (event.get("log_namespace"), event.get("log_level"), text)
        now = self._clock.seconds()
        window = self._windows.get(key)
        if window is None or now - window.start >= self.period:
            if window is not None:
                self._report(key, window)
            if len(self._windows) > 1000:
                self._forget_old(now)
            self._windows[key] = _Window(start=now)
            self._observer(event)
        elif window.passed < self.burst:
            window.passed += 1
            self._observer(event)
        else:
            window.suppressed += 1
            window.sample = event
            if window.report is None:
                window.report = self._clock.callLater(
                    window.start + self.period - now, self._report, key, window
                )

    def _report(self, key: tuple[Any, Any, str], window: _Window) -> None:
        """
        Say how many copies of a line the window suppressed, if any.
        """
        if window.report is not None and window.report.active():
            window.report.cancel()
        window.report = None
        if self._windows.get(key) is window and (
            self._clock.seconds() - window.start >= self.period
        ):
            del self._windows[key]
        if not window.suppressed:
            return
        count, window.suppressed = window.suppressed, 0
        sample = window.sample or {}
        self._observer(
            {
                "log_format": "{log_suppressed} more identical log lines in "
                "{log_period} s were suppressed: {log_line}",
                "log_namespace": "beryl.logs",
                "log_level": sample.get("log_level", LogLevel.warn),
                "log_time": self._clock.seconds(),
                "log_suppressed": count,
                "log_period": self.period,
                "log_line": key[2],
                "log_line_namespace": key[0],
            }
        )

    def _forget_old(self, now: float) -> None:
        for key, window in list(self._windows.items()):
            if now - window.start >= self.period:
                self._report(key, window)
                self._windows.pop(key, None)


def limit_bursts(
    clock: IReactorTime,
    publisher: LogPublisher = globalLogPublisher,
    burst: int = 3,
    period: float = 10.0,
) -> Callable[[], None]:
    """
    Put a L{BurstLimiter} in front of every observer of C{publisher} (the
    log file or stdout that twistd and twist set up).

    @return: a function that puts the observers back.
    """
    # LogPublisher offers no public way to list its observers.
    observers: list[ILogObserver] = list(getattr(publisher, "_observers", []))
    for observer in observers:
        publisher.removeObserver(observer)
    limiter = BurstLimiter(LogPublisher(*observers), clock, burst, period)
    publisher.addObserver(limiter)

    def undo() -> None:
        publisher.removeObserver(limiter)
        for observer in observers:
            publisher.addObserver(observer)

    return undo


class LogBurstLimitService(Service):
    """
    Limits log bursts while running.  It starts limiting once the reactor
    runs, when C{twistd} and C{twist} have set up their log observers.
    """

    name = "log-burst-limit"

    def __init__(
        self, reactor: Any, publisher: LogPublisher = globalLogPublisher
    ) -> None:
        self._reactor = reactor
        self._publisher = publisher
        self._undo: Callable[[], None] | None = None
        self._pending: Any = None

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._pending = self._reactor.callWhenRunning(self._install)

    def _install(self) -> None:
        self._pending = None
        if self.running and self._undo is None:
            self._undo = limit_bursts(self._reactor, self._publisher)

    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]
        if self._undo is not None:
            self._undo()
            self._undo = None
