"""
Tests for L{beryl.logs}: bursts of identical log lines are limited.
"""

from __future__ import annotations

import ast
import string
from collections.abc import Iterator
from pathlib import Path
from typing import cast

from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogEvent, LogLevel, LogPublisher, formatEvent
from twisted.trial.unittest import SynchronousTestCase

import beryl
from beryl.logs import BurstLimiter, LogBurstLimitService, limit_bursts


def event(text: str, namespace: str = "twisted.internet.tcp") -> LogEvent:
    return {
        "log_format": "{what}",
        "what": text,
        "log_namespace": namespace,
        "log_level": LogLevel.error,
        "log_time": 0.0,
    }


class BurstLimiterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.seen: list[LogEvent] = []
        self.limiter = BurstLimiter(
            cast(ILogObserver, self.seen.append), self.clock, burst=3, period=10
        )

    def texts(self) -> list[str]:
        return [formatEvent(e) for e in self.seen]

    def test_burst_limited_then_counted(self) -> None:
        """Of 100 identical lines in a burst, 3 pass and one line at the period's end counts the other 97."""
        for _ in range(100):
            self.limiter(event("Could not accept new connection (EMFILE)"))
        self.assertEqual(len(self.seen), 3)
        self.clock.advance(10)
        self.assertEqual(len(self.seen), 4)
        summary = self.seen[-1]
        self.assertEqual(summary["log_suppressed"], 97)
        self.assertEqual(summary["log_namespace"], "beryl.logs")
        self.assertEqual(
            self.texts()[-1],
            "97 more identical log lines in 10 s were suppressed: "
            "Could not accept new connection (EMFILE)",
        )

    def test_different_lines_pass(self) -> None:
        """Different lines, or the same text from another namespace, are not limited together."""
        for n in range(10):
            self.limiter(event(f"line {n}"))
        for _ in range(3):
            self.limiter(event("line 0", namespace="beryl.coordinator"))
        self.assertEqual(len(self.seen), 13)
        self.clock.advance(10)
        self.assertEqual(len(self.seen), 13)

    def test_new_period_passes_again(self) -> None:
        """After the period the line passes again, and nothing is reported when nothing was suppressed."""
        for _ in range(3):
            self.limiter(event("x"))
        self.clock.advance(11)
        self.limiter(event("x"))
        self.assertEqual(self.texts(), ["x"] * 4)

    def test_structured_fields_kept(self) -> None:
        """Passed events are the very events logged, fields and all."""
        original = event("hello")
        original["extra"] = 7
        self.limiter(original)
        self.assertIs(self.seen[0], original)


class InstallTests(SynchronousTestCase):
    def test_limit_bursts_wraps_observers(self) -> None:
        """limit_bursts puts the limiter before a publisher's observers, and undo restores them."""
        clock = Clock()
        seen: list[LogEvent] = []
        publisher = LogPublisher(cast(ILogObserver, seen.append))
        undo = limit_bursts(clock, publisher)
        for _ in range(5):
            publisher(event("again"))
        self.assertEqual(len(seen), 3)
        undo()
        publisher(event("again"))
        self.assertEqual(len(seen), 4)

    def test_service_installs_when_running(self) -> None:
        """The service limits bursts once the reactor runs, and stops limiting when stopped."""
        from twisted.internet.testing import MemoryReactorClock

        reactor = MemoryReactorClock()
        seen: list[LogEvent] = []
        publisher = LogPublisher(cast(ILogObserver, seen.append))
        service = LogBurstLimitService(reactor, publisher)
        service.startService()
        reactor.run()
        for _ in range(5):
            publisher(event("again"))
        self.assertEqual(len(seen), 3)
        service.stopService()
        for _ in range(5):
            publisher(event("again"))
        self.assertEqual(len(seen), 8)


_LEVELS = {"debug", "info", "warn", "error", "critical", "failure"}


def _log_calls(path: Path) -> Iterator[tuple[int, str, set[str]]]:
    """
    Every C{<something>log.<level>(...)} call in a source file: its line,
    its format (or a marker when it is not a string literal) and the
    keyword names it passes.
    """
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in _LEVELS
            and isinstance(node.func.value, (ast.Attribute, ast.Name))
            and str(
                getattr(node.func.value, "attr", None)
                or getattr(node.func.value, "id", "")
            ).endswith("log")
        ):
            continue
        first = node.args[0] if node.args else None
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            format = first.value
        elif isinstance(first, ast.Name):
            format = ""  # a helper passing on its caller's format
        else:
            format = "<built at run time>"  # an f-string, % or .format()
        yield node.lineno, format, {k.arg for k in node.keywords if k.arg}


class StructuredLogTests(SynchronousTestCase):
    def test_every_log_call_structured(self) -> None:
        """Every log call in beryl/ has a literal format (never an f-string) whose every field is passed as a keyword, so JSON logs carry the values as fields."""
        root = Path(beryl.__file__).parent
        problems = []
        count = 0
        for path in sorted(root.rglob("*.py")):
            for line, format, keywords in _log_calls(path):
                count += 1
                where = f"{path.relative_to(root.parent)}:{line}"
                if format == "<built at run time>":
                    problems.append(f"{where}: the format is built, not a literal")
                    continue
                names = {
                    field.split(".")[0].split("[")[0]
                    for _, field, _, _ in string.Formatter().parse(format)
                    if field
                }
                missing = names - keywords - {"log_source"}
                if missing:
                    problems.append(f"{where}: {sorted(missing)} not passed")
        self.assertGreater(count, 20)
        self.assertEqual(problems, [])
