"""
Tests for L{beryl.topics}: topic patterns, wildcard ids and the router.
"""

from __future__ import annotations

from hypothesis import assume, given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from beryl.topics import Router, extract_topic_id, topic_matches

# Topic text without the wildcard character, so it can start a pattern.
plain = st.text().filter(lambda text: "*" not in text)


class TopicMatchesTests(SynchronousTestCase):
    """
    L{topic_matches} decides whether a pattern routes a topic.
    """

    def test_exact(self) -> None:
        """
        An exact pattern matches only the identical topic.
        """
        self.assertTrue(topic_matches("room:lobby", "room:lobby"))
        self.assertFalse(topic_matches("room:lobby", "room:lobby2"))
        self.assertFalse(topic_matches("room:lobby", "room:lobb"))
        self.assertFalse(topic_matches("room:lobby", "Room:lobby"))
        self.assertFalse(topic_matches("room:lobby", ""))

    def test_wildcard(self) -> None:
        """
        A trailing-wildcard pattern matches every topic starting with its
        prefix, including an empty remainder.
        """
        self.assertTrue(topic_matches("room:*", "room:123"))
        self.assertTrue(topic_matches("room:*", "room:a:b:c"))
        self.assertTrue(topic_matches("room:*", "room:"))
        self.assertFalse(topic_matches("room:*", "room"))
        self.assertFalse(topic_matches("room:*", "rooms:1"))
        self.assertFalse(topic_matches("room:*", "xroom:1"))

    def test_bareWildcard(self) -> None:
        """
        The pattern C{*} matches every topic, even the empty one.
        """
        for topic in ["", "room:lobby", "phoenix", "*"]:
            self.assertTrue(topic_matches("*", topic))

    def test_starInTopicIsLiteral(self) -> None:
        """
        A C{*} in a topic is an ordinary character: an exact pattern
        C{room:} does not match C{room:*}.
        """
        self.assertFalse(topic_matches("room:", "room:*"))
        self.assertTrue(topic_matches("room:*", "room:*"))

    @given(prefix=plain, rest=st.text())
    def test_wildcardMatchesAnySuffix(self, prefix: str, rest: str) -> None:
        """
        C{prefix*} matches C{prefix} followed by anything.
        """
        self.assertTrue(topic_matches(prefix + "*", prefix + rest))

    @given(pattern=plain, topic=st.text())
    def test_exactIsEquality(self, pattern: str, topic: str) -> None:
        """
        Without a wildcard, matching is string equality.
        """
        self.assertEqual(topic_matches(pattern, topic), pattern == topic)


class ExtractTopicIdTests(SynchronousTestCase):
    """
    L{extract_topic_id} returns what a wildcard stands for.
    """

    def test_wildcard(self) -> None:
        """
        The id is the part of the topic after the pattern's prefix.
        """
        self.assertEqual(extract_topic_id("room:*", "room:123"), "123")
        self.assertEqual(extract_topic_id("room:*", "room:a:b"), "a:b")
        self.assertEqual(extract_topic_id("room:*", "room:"), "")
        self.assertEqual(extract_topic_id("*", "anything"), "anything")

    def test_exact(self) -> None:
        """
        An exact pattern has no wildcard, so the id is empty.
        """
        self.assertEqual(extract_topic_id("room:lobby", "room:lobby"), "")

    def test_mismatch(self) -> None:
        """
        A topic the pattern does not match raises L{ValueError} naming both.
        """
        error = self.assertRaises(ValueError, extract_topic_id, "room:*", "user:1")
        self.assertIn("user:1", str(error))
        self.assertIn("room:*", str(error))
        self.assertRaises(ValueError, extract_topic_id, "room:lobby", "room:other")

    @given(prefix=plain, rest=st.text())
    def test_roundTrip(self, prefix: str, rest: str) -> None:
        """
        The id extracted from C{prefix + rest} by C{prefix*} is C{rest}.
        """
        self.assertEqual(extract_topic_id(prefix + "*", prefix + rest), rest)

    @given(prefix=plain, topic=st.text())
    def test_mismatchAlwaysRaises(self, prefix: str, topic: str) -> None:
        """
        Whenever a pattern does not match, extraction raises.
        """
        assume(not topic.startswith(prefix))
        self.assertRaises(ValueError, extract_topic_id, prefix + "*", topic)


class RouterTests(SynchronousTestCase):
    """
    L{Router} finds the first registered pattern that matches a topic.
    """

    def test_empty(self) -> None:
        """
        A router without routes matches nothing.
        """
        router: Router[str] = Router()
        self.assertIsNone(router.match("room:lobby"))
        self.assertEqual(list(router.patterns()), [])

    def test_exactBeforeWildcard(self) -> None:
        """
        An exact route registered before a wildcard wins for its topic; the
        wildcard takes the rest.
        """
        router: Router[str] = Router()
        router.add("room:lobby", "lobby")
        router.add("room:*", "rooms")
        self.assertEqual(router.match("room:lobby"), ("room:lobby", "lobby"))
        self.assertEqual(router.match("room:42"), ("room:*", "rooms"))

    def test_wildcardBeforeExact(self) -> None:
        """
        A wildcard registered first shadows a later exact route: first
        match wins, not most specific.
        """
        router: Router[str] = Router()
        router.add("room:*", "rooms")
        router.add("room:lobby", "lobby")
        self.assertEqual(router.match("room:lobby"), ("room:*", "rooms"))

    def test_wildcardOrder(self) -> None:
        """
        Between overlapping wildcards the earlier registration wins.
        """
        router: Router[str] = Router()
        router.add("room:vip:*", "vip")
        router.add("room:*", "rooms")
        self.assertEqual(router.match("room:vip:1"), ("room:vip:*", "vip"))
        self.assertEqual(router.match("room:1"), ("room:*", "rooms"))

        reversed_router: Router[str] = Router()
        reversed_router.add("room:*", "rooms")
        reversed_router.add("room:vip:*", "vip")
        self.assertEqual(reversed_router.match("room:vip:1"), ("room:*", "rooms"))

    def test_duplicatePattern(self) -> None:
        """
        Registering the same pattern twice keeps the first target in force.
        """
        router: Router[str] = Router()
        router.add("room:*", "first")
        router.add("room:*", "second")
        self.assertEqual(router.match("room:1"), ("room:*", "first"))
        self.assertEqual(list(router.patterns()), ["room:*", "room:*"])

    def test_noMatch(self) -> None:
        """
        A topic no route matches gives L{None}.
        """
        router: Router[str] = Router()
        router.add("room:*", "rooms")
        router.add("user:lobby", "lobby")
        self.assertIsNone(router.match("user:1"))
        self.assertIsNone(router.match("room"))

    def test_catchAll(self) -> None:
        """
        A bare C{*} route catches every topic not routed earlier.
        """
        router: Router[str] = Router()
        router.add("room:lobby", "lobby")
        router.add("*", "all")
        self.assertEqual(router.match("room:lobby"), ("room:lobby", "lobby"))
        self.assertEqual(router.match("x"), ("*", "all"))
        self.assertEqual(router.match(""), ("*", "all"))

    def test_patternsInOrder(self) -> None:
        """
        L{Router.patterns} lists patterns in registration order.
        """
        router: Router[int] = Router()
        for index, pattern in enumerate(["b:*", "a", "c:*"]):
            router.add(pattern, index)
        self.assertEqual(list(router.patterns()), ["b:*", "a", "c:*"])

    def test_invalidPatterns(self) -> None:
        """
        Empty patterns and patterns with a C{*} anywhere but last are
        rejected with L{ValueError}, and the router is left unchanged.
        """
        router: Router[str] = Router()
        for pattern in ["", "room:*:x", "*room", "**", "room*:*", "a*b"]:
            self.assertRaises(ValueError, router.add, pattern, "target")
        self.assertEqual(list(router.patterns()), [])
        self.assertIsNone(router.match("room:*:x"))

    def test_invalidPatternMessage(self) -> None:
        """
        The error for a misplaced wildcard names the pattern.
        """
        router: Router[str] = Router()
        error = self.assertRaises(ValueError, router.add, "room:*:x", "target")
        self.assertIn("room:*:x", str(error))

    @given(
        routes=st.lists(
            st.tuples(plain, st.booleans())
            .map(lambda pair: pair[0] + ("*" if pair[1] else ""))
            .filter(bool),
            max_size=6,
        ),
        topic=st.text(max_size=10),
    )
    def test_firstMatchWins(self, routes: list[str], topic: str) -> None:
        """
        For any valid routes, the router returns the earliest pattern that
        matches the topic, or L{None} if none does.
        """
        router: Router[int] = Router()
        for index, pattern in enumerate(routes):
            router.add(pattern, index)
        expected = next(
            (
                (pattern, index)
                for index, pattern in enumerate(routes)
                if topic_matches(pattern, topic)
            ),
            None,
        )
        self.assertEqual(router.match(topic), expected)
