"""
The Phoenix 1.8 C{authToken}: phoenix.js offers it as the subprotocol
C{base64url.bearer.phx.<base64>} next to C{phoenix}; the server decodes it
into C{ConnectInfo.auth_token} for the application's connect hook
(C{tests/interop/authapp.py} accepts only C{secret-token}).
"""

from __future__ import annotations

import base64
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.interop.harness import (
    RawWebSocket,
    assert_refused,
    run_scenario,
    start_server,
    unique_topic,
)

APP = "tests.interop.authapp:app"
PREFIX = "base64url.bearer.phx."


def token_protocol(token: bytes) -> str:
    """
    The subprotocol phoenix.js makes of a token: C{btoa}, padding stripped.
    """
    return PREFIX + base64.b64encode(token).decode().rstrip("=")


class AuthTokenTests(SynchronousTestCase):
    """
    An application whose connect hook checks the auth token.
    """

    def setUp(self) -> None:
        self.server = start_server(self, "--app", APP)

    def assertRefused(self, **kwargs: Any) -> None:
        """
        The handshake is answered with HTTP 403 and no upgrade.
        """
        assert_refused(self, self.server.port, **kwargs)

    def test_phoenix_client_with_token(self) -> None:
        """
        A phoenix client with C{authToken: "secret-token"} is accepted, its
        connection uses the C{phoenix} subprotocol, and channels see what
        the connect hook assigned.
        """
        result = run_scenario(
            self,
            "auth",
            self.server,
            topic=unique_topic("private"),
            authToken="secret-token",
        )
        self.assertEqual(
            result,
            {
                "opened": 1,
                "joined": {"status": "ok", "response": {"socket_user": "token-holder"}},
                "pong": {"status": "ok", "response": {"hello": "token"}},
                "protocol": "phoenix",
            },
        )

    def test_phoenix_client_wrong_token(self) -> None:
        """
        A phoenix client with the wrong token, or none, never opens; the
        server keeps serving clients with the right one.
        """
        for token in ["wrong-token", None]:
            args: dict[str, Any] = {"expectRefusal": True}
            if token is not None:
                args["authToken"] = token
            result = run_scenario(self, "auth", self.server, **args)
            self.assertEqual(result["opened"], 0)
            self.assertGreaterEqual(result["errors"], 2)
        result = run_scenario(
            self,
            "auth",
            self.server,
            topic=unique_topic("private"),
            authToken="secret-token",
        )
        self.assertEqual(result["opened"], 1)

    def test_raw_token(self) -> None:
        """
        The token is accepted with or without padding and in either base64
        alphabet; the response echoes only C{phoenix}.
        """
        token = b"secret-token"
        padded = PREFIX + base64.b64encode(token).decode()
        urlsafe = PREFIX + base64.urlsafe_b64encode(token).decode().rstrip("=")
        for protocol in [token_protocol(token), padded, urlsafe]:
            client = RawWebSocket.connect(
                self.server.port, protocols=["phoenix", protocol]
            )
            self.addCleanup(client.close)
            self.assertEqual(client.headers.get("sec-websocket-protocol"), "phoenix")
            topic = unique_topic("private")
            self.assertEqual(
                client.request(["1", "1", topic, "phx_join", {}]),
                [
                    "1",
                    "1",
                    topic,
                    "phx_reply",
                    {"status": "ok", "response": {"socket_user": "token-holder"}},
                ],
            )

    def test_refusals(self) -> None:
        """
        A wrong token, no token, a malformed token, two tokens, or a token
        offered with only foreign subprotocols are all refused with HTTP 403.
        """
        good = token_protocol(b"secret-token")
        self.assertRefused(protocols=["phoenix", token_protocol(b"wrong-token")])
        self.assertRefused(protocols=["phoenix"])
        self.assertRefused()
        self.assertRefused(protocols=["phoenix", PREFIX + "!!not base64!!"])
        self.assertRefused(protocols=["phoenix", PREFIX + "abcde"])
        self.assertRefused(protocols=["phoenix", good, token_protocol(b"other")])
        self.assertRefused(protocols=["mqtt", good])
        client = RawWebSocket.connect(self.server.port, protocols=["phoenix", good])
        self.addCleanup(client.close)
        self.assertEqual(client.heartbeat("1")[3], "phx_reply")

    def test_token_without_phoenix_refused(self) -> None:
        """
        A client offering the token subprotocol but not C{phoenix} has
        offered subprotocols without C{phoenix}: HTTP 403 (accepting it would
        answer without C{Sec-WebSocket-Protocol}, which browsers reject).
        """
        self.assertRefused(protocols=[token_protocol(b"secret-token")])
