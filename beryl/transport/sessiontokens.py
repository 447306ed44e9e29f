"""
Signed long-poll session tokens: which node and which session a token
stands for, with C{itsdangerous} doing the signing (HMAC) and the expiry.
"""

from __future__ import annotations

import secrets
from typing import Any

from itsdangerous import BadSignature, TimestampSigner, URLSafeTimedSerializer
from twisted.internet.interfaces import IReactorTime

__all__ = ["SessionTokens"]


class _ClockSigner(TimestampSigner):
    """
    An C{itsdangerous} timestamp signer that reads the injected clock.
    """

    def __init__(self, *args: Any, clock: IReactorTime, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._clock = clock

    def get_timestamp(self) -> int:
        return int(self._clock.seconds())


class SessionTokens:
    """
    Signed long-poll session tokens: C{itsdangerous} URL-safe timed tokens
    carrying the node name and the session id.

    @param secret: the signing key; a random one (so tokens die with the
        process, as its sessions do) when not given.
    @param max_age: seconds a token stays valid (Phoenix: two weeks).
    """

    def __init__(
        self,
        node_name: str,
        clock: IReactorTime,
        secret: bytes | None = None,
        max_age: int = 14 * 24 * 3600,
    ) -> None:
        self.node_name = node_name
        self._max_age = max_age
        self._serializer = URLSafeTimedSerializer(
            secret if secret is not None else secrets.token_bytes(32),
            salt="beryl.longpoll.session",
            signer=_ClockSigner,
            signer_kwargs={"clock": clock},
        )

    def issue(self, session_id: str) -> str:
        """
        A token for session C{session_id} of this node.
        """
        return self._serializer.dumps([self.node_name, session_id])

    def read(self, token: str) -> tuple[str, str] | None:
        """
        The node name and session id a token carries, or C{None} for a
        token that is forged, damaged or expired.
        """
        try:
            value = self._serializer.loads(token, max_age=self._max_age)
        except BadSignature:
            return None
        return _named(value)

    def claimed_node(self, token: str) -> str | None:
        """
        The node a token that did not verify claims to come from (another
        node signs with its own key), for the log; C{None} if it names none.
        """
        try:
            _, value = self._serializer.loads_unsafe(token)
        except Exception:
            return None
        named = _named(value)
        return None if named is None else named[0]


def _named(value: Any) -> tuple[str, str] | None:
    """
    A token's payload as C{(node name, session id)}, if it is one.
    """
    if (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(part, str) for part in value)
    ):
        return value[0], value[1]
    return None
