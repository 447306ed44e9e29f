"""
Tests for L{beryl.transport.handshake}: connect parameters with Plug's
semantics, the auth-token subprotocol and the origin check.
"""

from __future__ import annotations

import base64
from typing import Callable, Union
from urllib.parse import quote

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from beryl.transport.handshake import (
    AUTH_TOKEN_PREFIX,
    HandshakeRefused,
    check_origin,
    parse_params,
    split_auth_token,
)

OriginRule = Union[str, list[str], Callable[[str], bool], None]
"""The rule types L{check_origin} accepts."""


class ParseParamsTests(SynchronousTestCase):
    """
    L{parse_params} reads a query string the way Plug does.
    """

    def test_nestedVector(self) -> None:
        """
        The WS-8 vector: brackets nest, numeric indices stay map keys and
        the last duplicate plain key wins.
        """
        self.assertEqual(
            parse_params(
                "/socket/websocket?a[b]=1&ids[0]=x&ids[1]=y&t=1&t=2&vsn=2.0.0"
            ),
            {"a": {"b": "1"}, "ids": {"0": "x", "1": "y"}, "t": "2", "vsn": "2.0.0"},
        )

    def test_emptyBracketsMakeList(self) -> None:
        """
        C{foo[]=a&foo[]=b} collects a list in order.
        """
        self.assertEqual(parse_params("/?foo[]=a&foo[]=b"), {"foo": ["a", "b"]})

    def test_nestedList(self) -> None:
        """
        Empty brackets at the end of a nested key make a nested list.
        """
        self.assertEqual(
            parse_params("/?a[b][]=1&a[b][]=2&a[c]=3"),
            {"a": {"b": ["1", "2"], "c": "3"}},
        )

    def test_deepNesting(self) -> None:
        """
        Several bracket levels nest as deep as written and merge.
        """
        self.assertEqual(
            parse_params(
                "/?user[address][city]=Paris&user[address][zip]=75&user[name]=A"
            ),
            {"user": {"address": {"city": "Paris", "zip": "75"}, "name": "A"}},
        )

    def test_keyWithoutEquals(self) -> None:
        """
        A key without C{=} maps to the empty string.
        """
        self.assertEqual(parse_params("/?flag&a=1"), {"flag": "", "a": "1"})
        self.assertEqual(parse_params("/?a="), {"a": ""})

    def test_emptySegmentsSkipped(self) -> None:
        """
        Empty segments (C{&&}, leading or trailing C{&}) are ignored, as
        phoenix.js long-poll clients send a trailing C{&}.
        """
        self.assertEqual(parse_params("/?&a=1&&b=2&"), {"a": "1", "b": "2"})

    def test_emptyNameSkipped(self) -> None:
        """
        A segment with an empty name (C{=value}) is ignored.
        """
        self.assertEqual(parse_params("/?=x&a=1"), {"a": "1"})

    def test_noQuery(self) -> None:
        """
        A URI without a query string gives no parameters.
        """
        self.assertEqual(parse_params("/socket/websocket"), {})
        self.assertEqual(parse_params("/socket/websocket?"), {})

    def test_percentDecoding(self) -> None:
        """
        Names and values are percent-decoded as UTF-8.
        """
        self.assertEqual(
            parse_params("/?na%20me=caf%C3%A9&x=%26%3D%2B"),
            {"na me": "café", "x": "&=+"},
        )

    def test_plusIsSpace(self) -> None:
        """
        C{+} decodes to a space (form encoding); an encoded C{%2B} stays
        C{+}.
        """
        self.assertEqual(
            parse_params("/?q=a+b&r=a%2Bb&s+t=1"), {"q": "a b", "r": "a+b", "s t": "1"}
        )

    def test_encodedBrackets(self) -> None:
        """
        Percent-encoded brackets in a name nest like literal ones, as the
        name is decoded before it is split.
        """
        self.assertEqual(parse_params("/?a%5Bb%5D=1"), {"a": {"b": "1"}})

    def test_valueWithEquals(self) -> None:
        """
        Only the first C{=} separates name from value.
        """
        self.assertEqual(
            parse_params("/?token=abc==&b=x=y"), {"token": "abc==", "b": "x=y"}
        )

    def test_unclosedBracket(self) -> None:
        """
        A name with an unclosed bracket is kept as a plain key.
        """
        self.assertEqual(parse_params("/?a[b=1"), {"a[b": "1"})

    def test_lastDuplicateNestedWins(self) -> None:
        """
        A repeated nested key keeps its last value.
        """
        self.assertEqual(parse_params("/?a[b]=1&a[b]=2"), {"a": {"b": "2"}})

    def test_vsnArray(self) -> None:
        """
        C{vsn[]=...} gives a list, not a string (the transport refuses it).
        """
        self.assertEqual(parse_params("/?vsn[]=2.0.0"), {"vsn": ["2.0.0"]})

    @given(
        params=st.dictionaries(
            st.text(min_size=1).filter(lambda name: "[" not in name), st.text()
        )
    )
    def test_flatRoundTrip(self, params: dict[str, str]) -> None:
        """
        Any flat mapping, percent-encoded as phoenix.js's
        C{encodeURIComponent} would, parses back unchanged.
        """
        query = "&".join(
            f"{quote(name, safe='')}={quote(value, safe='')}"
            for name, value in params.items()
        )
        self.assertEqual(parse_params("/socket/websocket?" + query), params)

    @given(values=st.lists(st.text(), min_size=1, max_size=5))
    def test_lastDuplicateWins(self, values: list[str]) -> None:
        """
        Of any number of occurrences of a plain key, the last one wins
        (not C{parse_qs}'s first).
        """
        query = "&".join(f"k={quote(value, safe='')}" for value in values)
        self.assertEqual(parse_params("/?" + query), {"k": values[-1]})


def _phoenix_js_token(token: bytes) -> str:
    """
    The subprotocol phoenix.js 1.8 offers for C{token}: C{btoa} (standard
    alphabet) with the padding stripped.
    """
    return AUTH_TOKEN_PREFIX + base64.b64encode(token).decode("ascii").rstrip("=")


class SplitAuthTokenTests(SynchronousTestCase):
    """
    L{split_auth_token} takes the Phoenix 1.8 auth token out of the offered
    subprotocols.
    """

    def test_noToken(self) -> None:
        """
        Without a token subprotocol the list is returned unchanged with no
        token.
        """
        self.assertEqual(
            split_auth_token(["phoenix", "mqtt"]), (["phoenix", "mqtt"], None)
        )
        self.assertEqual(split_auth_token([]), ([], None))

    def test_standardAlphabet(self) -> None:
        """
        A token in the standard alphabet (C{+}, C{/}) without padding is
        decoded and removed; the other subprotocols are kept in order.
        """
        token = b"\xfb\xff\xbfuser:1"
        offered = ["phoenix", _phoenix_js_token(token), "other"]
        self.assertIn("+", offered[1])
        self.assertIn("/", offered[1])
        self.assertEqual(
            split_auth_token(offered), (["phoenix", "other"], token.decode("latin-1"))
        )

    def test_urlSafeAlphabet(self) -> None:
        """
        A token in the URL-safe alphabet (C{-}, C{_}) is decoded too.
        """
        token = b"\xfb\xff\xbfuser:1"
        encoded = base64.urlsafe_b64encode(token).decode("ascii").rstrip("=")
        self.assertIn("-", encoded)
        self.assertIn("_", encoded)
        self.assertEqual(
            split_auth_token([AUTH_TOKEN_PREFIX + encoded, "phoenix"]),
            (["phoenix"], token.decode("latin-1")),
        )

    def test_paddingOptional(self) -> None:
        """
        A token that kept its C{=} padding decodes the same.
        """
        self.assertEqual(
            split_auth_token([AUTH_TOKEN_PREFIX + "dG9rZW4="]), ([], "token")
        )
        self.assertEqual(
            split_auth_token([AUTH_TOKEN_PREFIX + "dG9rZW4"]), ([], "token")
        )

    @given(token=st.binary(), url_safe=st.booleans())
    def test_roundTrip(self, token: bytes, url_safe: bool) -> None:
        """
        Any token encoded in either alphabet, padding stripped, comes back
        as the same string (its bytes read as Latin-1, the inverse of btoa).
        """
        encode = base64.urlsafe_b64encode if url_safe else base64.b64encode
        encoded = encode(token).decode("ascii").rstrip("=")
        self.assertEqual(
            split_auth_token(["phoenix", AUTH_TOKEN_PREFIX + encoded]),
            (["phoenix"], token.decode("latin-1")),
        )

    def test_twoTokens(self) -> None:
        """
        More than one token subprotocol refuses the handshake.
        """
        error = self.assertRaises(
            HandshakeRefused,
            split_auth_token,
            ["phoenix", _phoenix_js_token(b"a"), _phoenix_js_token(b"b")],
        )
        self.assertIn("more than one", error.reason)

    def test_malformed(self) -> None:
        """
        A token that is not base64 refuses the handshake instead of raising
        anything else.
        """
        for encoded in ["abc!", "a", "ab=c", "dG9rZW4===", "tök", "a b"]:
            error = self.assertRaises(
                HandshakeRefused, split_auth_token, [AUTH_TOKEN_PREFIX + encoded]
            )
            self.assertEqual(error.reason, "malformed auth token")

    def test_prefixCaseSensitive(self) -> None:
        """
        Only the exact prefix marks a token; anything else is an ordinary
        subprotocol.
        """
        offered = ["Base64url.bearer.phx.dG9rZW4", "base64url.bearer.phx"]
        self.assertEqual(split_auth_token(offered), (offered, None))

    def test_reasonIsMessage(self) -> None:
        """
        L{HandshakeRefused} carries its reason as attribute and message.
        """
        refusal = HandshakeRefused("why")
        self.assertEqual(refusal.reason, "why")
        self.assertEqual(str(refusal), "why")


class CheckOriginTests(SynchronousTestCase):
    """
    L{check_origin} applies the configured origin rule (reference 10.3).
    """

    def test_noRule(self) -> None:
        """
        Rule L{None} allows every origin.
        """
        for origin in ["https://evil.com", "null", "http://[::1"]:
            self.assertTrue(check_origin(None, origin, "example.com"))

    def test_noOrigin(self) -> None:
        """
        A request without an C{Origin} header passes every rule, and a
        callable rule is not even asked.
        """
        calls: list[str] = []

        def rule(origin: str) -> bool:
            calls.append(origin)
            return False

        rules: list[OriginRule] = ["host", [], ["https://other.com"], rule]
        for each in rules:
            self.assertTrue(check_origin(each, None, "example.com"))
        self.assertEqual(calls, [])

    def test_hostRuleMatches(self) -> None:
        """
        Rule C{"host"} accepts an origin whose host equals the request's
        C{Host}, whatever the scheme and ports, ignoring case.
        """
        for origin, host in [
            ("https://example.com", "example.com"),
            ("http://example.com:8080", "example.com"),
            ("https://example.com", "example.com:4000"),
            ("http://EXAMPLE.com", "example.COM:80"),
            ("https://example.com/", "example.com"),
        ]:
            self.assertTrue(check_origin("host", origin, host), (origin, host))

    def test_hostRuleRejects(self) -> None:
        """
        Rule C{"host"} refuses other hosts, including look-alike suffixes
        and subdomains.
        """
        for origin in [
            "https://evil.com",
            "https://example.com.evil.com",
            "https://sub.example.com",
            "https://notexample.com",
            "null",
        ]:
            self.assertFalse(check_origin("host", origin, "example.com"), origin)

    def test_hostRuleIPv6(self) -> None:
        """
        Rule C{"host"} compares IPv6 literals without their brackets.
        """
        self.assertTrue(check_origin("host", "http://[::1]:3000", "[::1]:4000"))
        self.assertTrue(check_origin("host", "http://[::1]", "[::1]"))
        self.assertFalse(check_origin("host", "http://[::2]:3000", "[::1]:4000"))

    def test_hostRuleNoHost(self) -> None:
        """
        An origin without a host (C{null}) is refused even when the request
        has no C{Host} header.
        """
        self.assertFalse(check_origin("host", "null", ""))

    def test_schemeAndHost(self) -> None:
        """
        An entry with a scheme requires that scheme; without a port any
        port is accepted.
        """
        rule = ["https://example.com"]
        self.assertTrue(check_origin(rule, "https://example.com", "x"))
        self.assertTrue(check_origin(rule, "https://example.com:8443", "x"))
        self.assertFalse(check_origin(rule, "http://example.com", "x"))
        self.assertFalse(check_origin(rule, "https://other.com", "x"))

    def test_hostAndPort(self) -> None:
        """
        An entry C{//host:port} requires that port and accepts any scheme.
        """
        rule = ["//another.com:888"]
        self.assertTrue(check_origin(rule, "https://another.com:888", "x"))
        self.assertTrue(check_origin(rule, "http://another.com:888", "x"))
        self.assertFalse(check_origin(rule, "https://another.com:889", "x"))
        self.assertFalse(check_origin(rule, "https://another.com", "x"))

    def test_hostOnly(self) -> None:
        """
        An entry C{//host} (or a bare host) accepts any scheme and port.
        """
        for rule in (["//other.com"], ["other.com"]):
            self.assertTrue(check_origin(rule, "http://other.com", "x"))
            self.assertTrue(check_origin(rule, "https://other.com:1234", "x"))
            self.assertFalse(check_origin(rule, "https://another.com", "x"))

    def test_wildcardSubdomain(self) -> None:
        """
        C{//*.other.com} accepts the bare domain and any subdomain, but not
        look-alike domains.
        """
        rule = ["//*.other.com"]
        for origin in [
            "https://other.com",
            "https://a.other.com",
            "http://a.b.other.com:81",
        ]:
            self.assertTrue(check_origin(rule, origin, "x"), origin)
        for origin in [
            "https://evilother.com",
            "https://other.com.evil.com",
            "https://other.org",
        ]:
            self.assertFalse(check_origin(rule, origin, "x"), origin)

    def test_wildcardWithScheme(self) -> None:
        """
        A wildcard entry with a scheme also requires the scheme.
        """
        rule = ["https://*.example.com"]
        self.assertTrue(check_origin(rule, "https://app.example.com", "x"))
        self.assertFalse(check_origin(rule, "http://app.example.com", "x"))

    def test_anyEntry(self) -> None:
        """
        An origin passes a list when any entry allows it; an empty list
        allows none.
        """
        rule = ["https://example.com", "//another.com:888", "//*.other.com"]
        self.assertTrue(check_origin(rule, "https://example.com", "x"))
        self.assertTrue(check_origin(rule, "http://another.com:888", "x"))
        self.assertTrue(check_origin(rule, "http://x.other.com", "x"))
        self.assertFalse(check_origin(rule, "http://example.com", "x"))
        self.assertFalse(check_origin([], "https://example.com", "example.com"))

    def test_singleOriginString(self) -> None:
        """
        A single origin string (other than C{"host"}) acts as a one-entry
        list and ignores the request's host.
        """
        self.assertTrue(check_origin("https://example.com", "https://example.com", "x"))
        self.assertFalse(check_origin("https://example.com", "https://x", "x"))

    def test_callable(self) -> None:
        """
        A callable rule receives the origin and decides.
        """
        seen: list[str] = []

        def rule(origin: str) -> bool:
            seen.append(origin)
            return origin.endswith(".trusted")

        self.assertTrue(check_origin(rule, "https://a.trusted", "x"))
        self.assertFalse(check_origin(rule, "https://a.untrusted", "x"))
        self.assertEqual(seen, ["https://a.trusted", "https://a.untrusted"])

    def test_malformedOrigin(self) -> None:
        """
        An Origin header that does not parse where the rule looks (bad IPv6
        literal; bad or out-of-range port against an entry with a port) is
        refused rather than raising.
        """
        rules: list[OriginRule] = ["host", ["//example.com"], ["//example.com:80"]]
        for rule in rules:
            self.assertFalse(check_origin(rule, "http://[::1", "example.com"), rule)
        for origin in ["http://example.com:abc", "http://example.com:99999"]:
            self.assertFalse(
                check_origin(["//example.com:80"], origin, "example.com"), origin
            )
