"""
Topic routes: exact topics (C{room:lobby}) and trailing wildcards
(C{room:*}).  Pure functions and values; no I/O.
"""

from __future__ import annotations

from typing import Generic, Iterable, TypeVar

import attrs

__all__ = ["Router", "extract_topic_id", "topic_matches"]

T = TypeVar("T")


def topic_matches(pattern: str, topic: str) -> bool:
    """
    Whether C{topic} is routed by C{pattern}: equal, or C{pattern} ends in
    C{*} and C{topic} starts with what comes before it.
    """
    if pattern.endswith("*"):
        return topic.startswith(pattern[:-1])
    return pattern == topic


def extract_topic_id(pattern: str, topic: str) -> str:
    """
    The part of C{topic} that C{pattern}'s wildcard stands for:
    C{extract_topic_id("room:*", "room:123") == "123"}.

    @raise ValueError: when C{pattern} does not match C{topic}.
    """
    if not topic_matches(pattern, topic):
        raise ValueError(f"topic {topic!r} does not match {pattern!r}")
    if pattern.endswith("*"):
        return topic[len(pattern) - 1 :]
    return ""


@attrs.define
class Router(Generic[T]):
    """
    An ordered table of routes; the first registered pattern that matches a
    topic wins.  Matching happens once per join, so a scan is enough.
    """

    _routes: list[tuple[str, T]] = attrs.field(factory=list)

    def add(self, pattern: str, target: T) -> None:
        """
        Register C{target} for C{pattern}.

        @raise ValueError: for an empty pattern or a C{*} that is not last.
        """
        if not pattern:
            raise ValueError("a topic pattern must not be empty")
        if "*" in pattern[:-1]:
            raise ValueError(
                f"{pattern!r}: the wildcard '*' may only end a topic pattern"
            )
        self._routes.append((pattern, target))

    def match(self, topic: str) -> tuple[str, T] | None:
        """
        The first route that matches C{topic}, as C{(pattern, target)}.
        """
        for pattern, target in self._routes:
            if topic_matches(pattern, topic):
                return pattern, target
        return None

    def patterns(self) -> Iterable[str]:
        """
        The registered patterns, in order.
        """
        return [pattern for pattern, _ in self._routes]
