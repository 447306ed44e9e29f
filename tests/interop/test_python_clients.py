"""
Third-party Python Phoenix clients against a real C{twistd beryl} demo
(docs/clients.md): C{phxsocket} and C{phoenix-channels-python-client}
(with protocol V1).  Each client runs in its own process and prints what
it saw as JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.interop.harness import (
    BerylServer,
    RawWebSocket,
    _unavailable,
    start_server,
    unique_topic,
)

PHXSOCKET = """
import json, sys, threading
from phxsocket import Client

url, topic = sys.argv[1], sys.argv[2]
client = Client(url, {"token": "ignored"})
client.connect()
room = client.channel(topic, {"user": "py"})
joined = room.join()
heard = threading.Event()
messages = []
def on_new_msg(payload):
    messages.append(payload)
    heard.set()
room.on("new_msg", on_new_msg)
reply = room.push("new_msg", {"body": "from phxsocket"}, reply=True).wait_for_response()
heard.wait(30)
ping = room.push("ping", {"n": 1}, reply=True).wait_for_response()
client.close()
print(json.dumps({"joined": joined, "reply": reply, "messages": messages, "ping": ping}))
"""

PHOENIX_CHANNELS = """
import asyncio, json, sys
from phoenix_channels_python_client import PHXChannelsClient, PhoenixChannelsProtocolVersion

url, topic = sys.argv[1], sys.argv[2]

async def main():
    received = asyncio.Queue()

    async def on_message(message):
        await received.put({"event": message.event, "payload": message.payload})

    async with PHXChannelsClient(
        url, "api-key", protocol_version=PhoenixChannelsProtocolVersion.V1
    ) as client:
        await client.subscribe_to_topic(topic, on_message)
        print(json.dumps({"joined": client.is_topic_joined(topic)}), flush=True)
        message = await asyncio.wait_for(received.get(), 30)
        await client.unsubscribe_from_topic(topic)
        await client.shutdown("done")
    print(json.dumps({"message": message}), flush=True)

asyncio.run(main())
"""


def _require(testcase: SynchronousTestCase, module: str) -> None:
    try:
        __import__(module)
    except ImportError:
        _unavailable(testcase, f"{module} is missing: pip install -e '.[test]'")


def _run(script: str, *argv: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", script, *argv],
        capture_output=True,
        text=True,
        timeout=90,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        raise AssertionError(f"client exited {done.returncode}:\n{done.stderr}")
    result: dict[str, Any] = {}
    for line in done.stdout.splitlines():
        result.update(json.loads(line))
    return result


class PhxsocketTests(SynchronousTestCase):
    def test_chat(self) -> None:
        """phxsocket joins a demo room, pushes a message it hears back as a broadcast, and gets replies."""
        _require(self, "phxsocket")
        server = start_server(self)
        topic = unique_topic("room")
        result = _run(
            PHXSOCKET, f"ws://127.0.0.1:{server.port}/socket/websocket", topic
        )
        self.assertEqual(result["joined"], {})
        self.assertEqual(result["reply"], {"status": "ok", "response": {}})
        self.assertEqual(result["messages"], [{"user": "py", "body": "from phxsocket"}])
        self.assertEqual(result["ping"], {"status": "ok", "response": {"n": 1}})


class PhoenixChannelsClientTests(SynchronousTestCase):
    def test_v1_receives_broadcasts(self) -> None:
        """phoenix-channels-python-client with protocol V1 joins a feed and receives another client's broadcast."""
        _require(self, "phoenix_channels_python_client")
        server = start_server(self)
        topic = unique_topic("feed")
        process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                PHOENIX_CHANNELS,
                f"ws://127.0.0.1:{server.port}/socket/websocket",
                topic,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        self.addCleanup(lambda: None if process.poll() is not None else process.kill())
        assert process.stdout is not None
        first = process.stdout.readline()
        self.assertEqual(
            json.loads(first or "{}"), {"joined": True}, self._stderr(process)
        )
        self.broadcast(server, topic)
        stdout, stderr = process.communicate(timeout=60)
        self.assertEqual(process.returncode, 0, stderr)
        self.assertEqual(
            json.loads(stdout)["message"],
            {"event": "new_msg", "payload": {"user": "raw", "body": "to the feed"}},
        )

    def _stderr(self, process: subprocess.Popen[str]) -> str:
        if process.poll() is None:
            return "(still running)"
        assert process.stderr is not None
        return process.stderr.read()

    def broadcast(self, server: BerylServer, topic: str) -> None:
        sender = RawWebSocket.connect(server.port)
        self.addCleanup(sender.close)
        sender.request(["1", "1", topic, "phx_join", {"user": "raw"}])
        sender.send_json(["1", "2", topic, "new_msg", {"body": "to the feed"}])
        while (frame := sender.recv_json())[3] != "phx_reply":
            pass
        self.assertEqual(frame[4], {"status": "ok", "response": {}})
