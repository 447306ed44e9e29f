"""
Handshake rules shared by the transports: connect parameters parsed with
Plug's semantics, the origin check, and the Phoenix 1.8 auth-token
subprotocol.  Pure functions.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Callable
from urllib.parse import unquote_plus, urlsplit

from beryl.wire import Serializer, serializer_for_vsn

__all__ = [
    "AUTH_TOKEN_PREFIX",
    "HandshakeRefused",
    "check_origin",
    "connect_params",
    "parse_params",
    "split_auth_token",
]

AUTH_TOKEN_PREFIX = "base64url.bearer.phx."


class HandshakeRefused(Exception):
    """
    The connection is refused before the upgrade (HTTP 403).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _set(target: dict[str, Any], path: list[str], value: str) -> None:
    for index, name in enumerate(path[:-1]):
        following = path[index + 1]
        existing = target.get(name)
        if following == "":
            # "a[]=x" collects a list
            if not isinstance(existing, list):
                existing = target[name] = []
            existing.append(value)
            return
        if not isinstance(existing, dict):
            existing = target[name] = {}
        target = existing
    target[path[-1]] = value


def parse_params(uri: str) -> dict[str, Any]:
    """
    The query string of C{uri} as Plug reads it: C{a[b]=1} nests,
    C{a[]=1&a[]=2} makes a list, the last of duplicate plain keys wins,
    empty segments are skipped and a key without C{=} maps to C{""}.
    """
    query = urlsplit(uri).query
    params: dict[str, Any] = {}
    for segment in query.split("&"):
        if not segment:
            continue
        name, _, value = segment.partition("=")
        name = unquote_plus(name)
        value = unquote_plus(value)
        if not name:
            continue
        head, bracket, rest = name.partition("[")
        if not bracket or not rest.endswith("]"):
            params[name] = value
            continue
        path = [head] + rest[:-1].split("][")
        _set(params, path, value)
    return params


def connect_params(uri: str) -> tuple[dict[str, Any], Serializer]:
    """
    The connect parameters of a request (L{parse_params}) and the
    serializer their C{vsn} selects, for every transport alike.

    @raise HandshakeRefused: when C{vsn} is not a supported version (or not
        a string at all, as with C{vsn[]=2.0.0}).
    """
    params = parse_params(uri)
    vsn = params.get("vsn")
    serializer = serializer_for_vsn(vsn) if isinstance(vsn, (str, type(None))) else None
    if serializer is None:
        raise HandshakeRefused(f"unsupported protocol version {vsn!r}")
    return params, serializer


def split_auth_token(protocols: list[str]) -> tuple[list[str], str | None]:
    """
    Take the Phoenix 1.8 auth token out of the offered subprotocols.

    phoenix.js offers C{base64url.bearer.phx.<token>} where the token went
    through the browser's C{btoa} with the padding stripped; both base64
    alphabets are accepted here.  C{btoa} takes text of code points up to
    255, one byte each, so the bytes are decoded as Latin-1: the result is
    exactly the string the client gave phoenix.js.

    @return: the other subprotocols and the token as given to phoenix.js
        (or C{None}).
    @raise HandshakeRefused: for more than one token or one that does not
        decode.
    """
    tokens = [p for p in protocols if p.startswith(AUTH_TOKEN_PREFIX)]
    rest = [p for p in protocols if not p.startswith(AUTH_TOKEN_PREFIX)]
    if not tokens:
        return rest, None
    if len(tokens) > 1:
        raise HandshakeRefused("more than one auth token subprotocol")
    encoded = tokens[0][len(AUTH_TOKEN_PREFIX) :]
    encoded = encoded.replace("-", "+").replace("_", "/")
    encoded += "=" * (-len(encoded) % 4)
    try:
        return rest, base64.b64decode(encoded, validate=True).decode("latin-1")
    except (binascii.Error, ValueError):
        raise HandshakeRefused("malformed auth token") from None


def _host(netloc: str) -> str:
    """
    The host of a C{Host} header value, without port or IPv6 brackets (as
    C{urlsplit} gives C{hostname}).
    """
    if netloc.startswith("["):
        return netloc[1:].split("]")[0]
    return netloc.rsplit(":", 1)[0] if ":" in netloc else netloc


def _origin_allowed(allowed: str, origin: str) -> bool:
    wanted = urlsplit(allowed if "//" in allowed else "//" + allowed)
    actual = urlsplit(origin)
    if wanted.scheme and wanted.scheme != actual.scheme:
        return False
    if wanted.port is not None and wanted.port != actual.port:
        return False
    want_host = (wanted.hostname or "").lower()
    host = (actual.hostname or "").lower()
    if want_host.startswith("*."):
        bare = want_host[2:]
        return host == bare or host.endswith("." + bare)
    return host == want_host


def check_origin(
    rule: str | list[str] | Callable[[str], bool] | None,
    origin: str | None,
    request_host: str,
) -> bool:
    """
    Whether a request's C{Origin} passes the rule; a request without an
    C{Origin} header always does (non-browser clients).

    @param rule: C{None} allows any origin; C{"host"} requires the origin's
        host to equal the host of the request's C{Host} header; a list
        holds allowed origins (C{"https://example.com"}, C{"//other.com:888"},
        C{"//*.example.com"}; scheme and port compared only when given); a
        callable decides by itself.
    """
    if origin is None or rule is None:
        return True
    if callable(rule):
        return rule(origin)
    try:
        if rule == "host":
            host = (urlsplit(origin).hostname or "").lower()
            return bool(host) and host == _host(request_host).lower()
        if isinstance(rule, str):
            rule = [rule]
        return any(_origin_allowed(allowed, origin) for allowed in rule)
    except ValueError:
        # an unparseable Origin (bad IPv6 literal, bad port) is refused
        return False
