"""
Connection lifecycle against a real C{twistd beryl}: heartbeats and the
idle timeout, sockets dropped without a close handshake, server shutdown,
and the phoenix client reconnecting and rejoining after a restart.
"""

from __future__ import annotations

import time

from twisted.trial.unittest import SynchronousTestCase

from tests.interop.harness import (
    OK_EMPTY,
    NodeScenario,
    RawWebSocket,
    start_server,
    unique_topic,
)

CLOSE_GOING_AWAY = 1001


class IdleTimeoutTests(SynchronousTestCase):
    """
    C{--heartbeat-timeout 2}.
    """

    def test_heartbeats_keep_alive(self) -> None:
        """
        A phoenix client sending heartbeats every 500 ms stays connected for
        well past the 2 s idle timeout, while a silent raw socket opened at
        the same time is closed with 1001.
        """
        server = start_server(self, "--heartbeat-timeout", "2")
        silent = RawWebSocket.connect(server.port)
        self.addCleanup(silent.close)
        scenario = NodeScenario(
            self,
            "heartbeat",
            server,
            topic=unique_topic("feed"),
            heartbeatIntervalMs=500,
            durationMs=5000,
        )
        code, reason, before = silent.recv_close(timeout=15)
        self.assertEqual((code, reason, before), (CLOSE_GOING_AWAY, "idle timeout", []))
        result = scenario.result()
        self.assertEqual(result["joined"], OK_EMPTY)
        self.assertEqual(result["closes"], [])
        self.assertTrue(result["connected"])
        self.assertEqual(
            result["pong"], {"status": "ok", "response": {"still": "here"}}
        )
        self.assertGreaterEqual(len(result["heartbeats"]), 2)
        self.assertEqual(set(result["heartbeats"]), {"ok"})

    def test_raw_heartbeats_keep_alive(self) -> None:
        """
        Heartbeats alone (no channel) keep a raw socket open across several
        idle timeouts, and it is closed once they stop.
        """
        server = start_server(self, "--heartbeat-timeout", "2")
        client = RawWebSocket.connect(server.port)
        self.addCleanup(client.close)
        for n in range(8):
            self.assertEqual(
                client.heartbeat(str(n)),
                [None, str(n), "phoenix", "phx_reply", OK_EMPTY],
            )
            time.sleep(0.5)
        code, reason, before = client.recv_close(timeout=10)
        self.assertEqual((code, reason, before), (CLOSE_GOING_AWAY, "idle timeout", []))


class DisconnectTests(SynchronousTestCase):
    """
    Sockets that go away.
    """

    def test_dropped_socket_untracked(self) -> None:
        """
        A socket whose TCP connection drops without a close handshake is
        cleaned up: the others see its presence leave.
        """
        server = start_server(self)
        topic = unique_topic("room")
        watcher = RawWebSocket.connect(server.port)
        self.addCleanup(watcher.close)
        watcher.send_json(["1", "1", topic, "phx_join", {"user": "watcher"}])
        self.assertEqual(watcher.recv_json()[3], "phx_reply")
        self.assertEqual(list(watcher.recv_json()[4]["joins"]), ["watcher"])
        self.assertEqual(list(watcher.recv_json()[4]), ["watcher"])  # presence_state
        ghost = RawWebSocket.connect(server.port)
        ghost.send_json(["1", "1", topic, "phx_join", {"user": "ghost"}])
        self.assertEqual(ghost.recv_json()[3], "phx_reply")
        arrival = watcher.recv_json()
        self.assertEqual(arrival[:4], [None, None, topic, "presence_diff"])
        self.assertEqual(
            (list(arrival[4]["joins"]), arrival[4]["leaves"]), (["ghost"], {})
        )
        ghost_meta = arrival[4]["joins"]["ghost"]
        ghost.close()
        departure = watcher.recv_json()
        self.assertEqual(
            departure,
            [
                None,
                None,
                topic,
                "presence_diff",
                {"joins": {}, "leaves": {"ghost": ghost_meta}},
            ],
        )

    def test_shutdown_closes_with_1001(self) -> None:
        """
        Stopping the server (SIGTERM) closes its sockets with 1001, so
        clients reconnect, and the process shuts down in an orderly way.
        """
        server = start_server(self)
        client = RawWebSocket.connect(server.port)
        self.addCleanup(client.close)
        topic = unique_topic("feed")
        self.assertEqual(
            client.request(["1", "1", topic, "phx_join", {}]),
            ["1", "1", topic, "phx_reply", OK_EMPTY],
        )
        server.stop()
        self.assertIn("Server Shut Down.", server.log())
        code, reason, before = client.recv_close()
        self.assertEqual(
            (code, reason, before), (CLOSE_GOING_AWAY, "server shutting down", [])
        )


class RestartTests(SynchronousTestCase):
    """
    The server restarts under a connected phoenix client.
    """

    def test_rejoin_after_restart(self) -> None:
        """
        After the server is stopped and a new one starts on the same port,
        the phoenix client (told 1001) reconnects, rejoins, gets a fresh
        C{presence_state}, and C{new_msg} works again.
        """
        server = start_server(self)
        topic = unique_topic("room")
        scenario = NodeScenario(self, "restart", server, topic=topic)
        self.assertEqual(scenario.read(), {"stage": "joined", "before": OK_EMPTY})
        server.stop()
        self.assertIn("Server Shut Down.", server.log())
        start_server(self, port=server.port)
        scenario.send({"restarted": True})
        result = scenario.result()
        self.assertEqual(
            result["closes"][0],
            {"code": CLOSE_GOING_AWAY, "reason": "server shutting down"},
        )
        self.assertEqual(result["joins"], [OK_EMPTY, OK_EMPTY])
        self.assertEqual(result["states"], 2)
        self.assertEqual(result["after"], OK_EMPTY)
        self.assertEqual(
            result["messages"],
            [
                {"user": "phoenix", "body": "before"},
                {"user": "phoenix", "body": "after"},
            ],
        )
