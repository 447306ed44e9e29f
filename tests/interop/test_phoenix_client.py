"""
The official phoenix client (npm C{phoenix}, driven by node) against a real
C{twistd beryl} serving the demo application.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.interop.harness import OK_EMPTY, run_scenario, start_server, unique_topic


def joined(key: str, first: bool = True) -> dict[str, Any]:
    """
    A logged phoenix C{Presence.onJoin}: one new meta for C{key}.
    """
    return {"type": "join", "key": key, "first": first, "metas": 1}


def left(key: str, remaining: int = 0) -> dict[str, Any]:
    """
    A logged phoenix C{Presence.onLeave}: one meta of C{key} gone.
    """
    return {"type": "leave", "key": key, "remaining": remaining, "left": 1}


class JoinTests(SynchronousTestCase):
    """
    Joining the demo's C{room:*} and C{feed:*} channels.
    """

    def test_join_room(self) -> None:
        """
        A join naming a user gets C{ok {}}, then, as in Phoenix (track
        first), the C{presence_diff} of its own arrival and a
        C{presence_state} that already holds it; joins without a usable
        user are refused with C{user required}.
        """
        server = start_server(self)
        result = run_scenario(self, "join", server, topic=unique_topic("room"))
        self.assertEqual(result["ok"], OK_EMPTY)
        diff, state = result["events"]
        self.assertEqual(diff["event"], "presence_diff")
        self.assertEqual(diff["payload"]["leaves"], {})
        self.assertEqual(list(diff["payload"]["joins"]), ["alice"])
        [meta] = diff["payload"]["joins"]["alice"]["metas"]
        self.assertEqual(sorted(meta), ["online_at", "phx_ref"])
        self.assertIsInstance(meta["phx_ref"], str)
        self.assertIsInstance(meta["online_at"], int)
        self.assertEqual(
            state, {"event": "presence_state", "payload": {"alice": {"metas": [meta]}}}
        )
        refused = {"status": "error", "response": {"reason": "user required"}}
        self.assertEqual(
            result["refusals"],
            {"missing": refused, "empty": refused, "number": refused},
        )

    def test_feed(self) -> None:
        """
        C{feed:*} accepts any join params, tracks nobody, and broadcasts
        C{new_msg} with the join's C{user}, or null without one.
        """
        server = start_server(self)
        result = run_scenario(self, "feed", server, topic=unique_topic("feed"))
        self.assertEqual(result["joins"], {"anonymous": OK_EMPTY, "dash": OK_EMPTY})
        self.assertEqual(result["replies"], {"anonymous": OK_EMPTY, "dash": OK_EMPTY})
        events = sorted(
            result["events"], key=lambda e: (e["payload"]["body"], e["who"])
        )
        self.assertEqual(
            events,
            [
                {
                    "who": who,
                    "event": "new_msg",
                    "payload": {"user": user, "body": body},
                }
                for user, body in [("dash", "from dash"), (None, "from nobody")]
                for who in ["anonymous", "dash"]
            ],
        )

    def test_too_many_channels(self) -> None:
        """
        With C{--max-channels 2} the third join of a socket is refused with
        C{too many channels joined}; after a leave there is room again.
        """
        server = start_server(self, "--max-channels", "2")
        topics = [unique_topic("feed") for _ in range(3)]
        result = run_scenario(self, "too_many", server, topics=topics)
        self.assertEqual(
            result["joins"],
            [
                OK_EMPTY,
                OK_EMPTY,
                {"status": "error", "response": {"reason": "too many channels joined"}},
            ],
        )
        self.assertEqual(result["left"], OK_EMPTY)
        self.assertEqual(result["retry"], OK_EMPTY)


class PresenceTests(SynchronousTestCase):
    """
    Presence as the phoenix client's C{Presence} helper sees it.
    """

    def test_three_clients(self) -> None:
        """
        Three clients' presence lists converge; a channel leave and a socket
        disconnect each reach the others as one C{onLeave}.  Each client
        sees itself in its first state, then its own arrival's diff again
        (as with Phoenix, which tracks before pushing the state).
        """
        server = start_server(self)
        result = run_scenario(self, "presence", server, topic=unique_topic("room"))
        self.assertEqual(
            result["joins"], {name: OK_EMPTY for name in ["alice", "bob", "carol"]}
        )
        self.assertEqual(result["left"], OK_EMPTY)
        everyone = ["alice", "bob", "carol"]
        self.assertEqual(
            result["lists"],
            {
                "three": [everyone] * 3,
                "afterLeave": [["alice", "bob"]] * 2,
                "afterDisconnect": ["alice"],
            },
        )
        self.assertEqual(
            result["logs"],
            {
                "alice": [
                    joined("alice"),
                    joined("alice", first=False),
                    joined("bob"),
                    joined("carol"),
                    left("carol"),
                    left("bob"),
                ],
                "bob": [
                    joined("alice"),
                    joined("bob"),
                    joined("bob", first=False),
                    joined("carol"),
                    left("carol"),
                ],
                "carol": [
                    joined("alice"),
                    joined("bob"),
                    joined("carol"),
                    joined("carol", first=False),
                ],
            },
        )

    def test_same_user_two_sockets(self) -> None:
        """
        One user on two sockets is one key with two metas (distinct
        C{phx_ref}s); closing one socket leaves the key with the other meta.
        """
        server = start_server(self)
        result = run_scenario(self, "same_user", server, topic=unique_topic("room"))
        both = result["both"]
        self.assertEqual(both["keys"], ["alice", "bob"])
        self.assertEqual(len(set(both["refs"])), 2)
        self.assertEqual(both["metaKeys"], [["online_at", "phx_ref"]] * 2)
        self.assertEqual(
            result["after"], {"keys": ["alice", "bob"], "refs": both["refs"][:1]}
        )
        self.assertEqual(result["logAfterClose"], [left("alice", remaining=1)])
        self.assertEqual(
            result["log"],
            [
                joined("bob"),
                joined("bob", first=False),
                joined("alice"),
                joined("alice", first=False),
                left("alice", 1),
            ],
        )


class MessageTests(SynchronousTestCase):
    """
    The demo's C{new_msg}, C{typing} and C{ping} events.
    """

    def test_new_msg_and_typing(self) -> None:
        """
        C{new_msg} reaches every member, the sender included, as
        C{{user, body}}; C{typing} reaches every member but the sender.
        """
        server = start_server(self)
        result = run_scenario(self, "messages", server, topic=unique_topic("room"))
        self.assertEqual(result["replies"], {"sent": OK_EMPTY, "after": OK_EMPTY})
        hello = {"event": "new_msg", "payload": {"user": "alice", "body": "hello"}}
        typing = {"event": "typing", "payload": {"user": "bob"}}
        after = {"event": "new_msg", "payload": {"user": "bob", "body": "after typing"}}
        self.assertEqual(
            result["logs"],
            {
                "alice": [hello, typing, after],
                "bob": [hello, after],
                "carol": [hello, typing, after],
            },
        )

    def _ping(self, topic: str, params: dict[str, Any]) -> None:
        server = start_server(self)
        payload = {
            "nested": [1, 2.5, None, True, {"text": "ünïcødé ✓ 🙂"}],
            "empty": {},
        }
        data = list(range(256)) + [0, 255]
        result = run_scenario(
            self,
            "ping",
            server,
            topic=topic,
            params=params,
            payload=payload,
            bytes=data,
        )
        self.assertEqual(result["joined"], OK_EMPTY)
        self.assertEqual(result["json"], {"status": "ok", "response": payload})
        self.assertEqual(
            result["binary"], {"status": "ok", "response": {"binary": data}}
        )
        self.assertEqual(result["empty"], {"status": "ok", "response": {"binary": []}})

    def test_ping_room(self) -> None:
        """
        C{ping} on a room replies with the identical payload: JSON as JSON,
        an C{ArrayBuffer} as a binary reply with the same bytes.
        """
        self._ping(unique_topic("room"), {"user": "echo"})

    def test_ping_feed(self) -> None:
        """
        C{ping} on a feed joined without params echoes JSON and binary too.
        """
        self._ping(unique_topic("feed"), {})
