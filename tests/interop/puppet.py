"""
Steer several official phoenix clients in one node process
(C{puppet.js}) from a test, one command at a time, for tests with several
servers (a cluster) where each client talks to its own node.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.interop.harness import INTEROP_DIR, node_executable

__all__ = ["Puppet"]


class Puppet:
    """
    A running C{puppet.js}.  Each method sends one command and returns its
    answer; an C{error} answer fails the test with what the clients saw.
    """

    def __init__(self, testcase: SynchronousTestCase) -> None:
        self.testcase = testcase
        self.process = subprocess.Popen(
            [node_executable(testcase), str(INTEROP_DIR / "puppet.js")],
            cwd=INTEROP_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self._buffer = b""
        testcase.addCleanup(self.stop)

    def stop(self) -> None:
        """
        End the node process.
        """
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()

    def command(self, op: str, timeout: float = 20.0, **fields: Any) -> Any:
        """
        Run one command and return its C{ok} value.
        """
        assert self.process.stdin is not None and self.process.stdout is not None
        fields.setdefault("timeoutMs", int((timeout - 2) * 1000))
        self.process.stdin.write(json.dumps({"op": op, **fields}).encode() + b"\n")
        self.process.stdin.flush()
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(remaining, 0))
            if not ready:
                self.testcase.fail(
                    f"puppet gave no answer to {op} {fields} in {timeout} s"
                )
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                stderr = self.process.stderr.read() if self.process.stderr else b""
                self.testcase.fail(
                    f"puppet exited during {op}: {stderr.decode(errors='replace')}"
                )
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        answer = json.loads(line)
        if "error" in answer:
            self.testcase.fail(f"puppet {op} {fields}: {answer['error']}")
        return answer["ok"]

    def join(self, client: str, url: str, topic: str, **params: Any) -> Any:
        """
        Connect client C{client} to C{url} and join C{topic}; the join reply.
        """
        return self.command("join", id=client, url=url, topic=topic, params=params)

    def join_with(
        self,
        client: str,
        url: str,
        topic: str,
        params: dict[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        """
        L{join} with client options: C{package} (C{"phoenix17"} for the 1.7
        client), C{transport} (C{"longpoll"}), C{serializer} (C{"v1"}),
        C{socketOptions}.
        """
        return self.command(
            "join", id=client, url=url, topic=topic, params=params or {}, **options
        )

    def leave(self, client: str) -> Any:
        """
        Leave the channel and wait for the reply.
        """
        return self.command("leave", id=client)

    def transport(self, client: str) -> str:
        """
        The transport C{client}'s socket uses now: C{"WebSocket"} or
        C{"LongPoll"}.
        """
        result: str = self.command("transport", id=client)
        return result

    def push(self, client: str, event: str, payload: Any = None) -> Any:
        """
        Push and wait for the reply (C{{"status", "response"}}).
        """
        return self.command("push", id=client, event=event, payload=payload or {})

    def push_binary(self, client: str, event: str, data: bytes) -> Any:
        """
        Push C{data} as an ArrayBuffer (a V2 binary frame) and wait for the
        reply.
        """
        return self.command("push", id=client, event=event, binary=list(data))

    def cast(self, client: str, event: str, payload: Any = None) -> None:
        """
        Push without waiting for a reply.
        """
        self.command("cast", id=client, event=event, payload=payload or {})

    def wait(
        self, client: str, event: str, count: int = 1, timeout: float = 20.0
    ) -> list[Any]:
        """
        Wait until C{client} has received C{count} C{event}s; all of them.
        """
        result: list[Any] = self.command(
            "wait", timeout, id=client, event=event, count=count
        )
        return result

    def wait_for(
        self, client: str, event: str, payload: Any, timeout: float = 20.0
    ) -> list[Any]:
        """
        Wait until C{client} has received C{event} with exactly C{payload};
        all the C{event}s it received.
        """
        result: list[Any] = self.command(
            "wait_for", timeout, id=client, event=event, payload=payload
        )
        return result

    def events(self, client: str, event: str) -> list[Any]:
        """
        The C{event}s C{client} has received so far.
        """
        result: list[Any] = self.command("events", id=client, event=event)
        return result

    def wait_presence(
        self, client: str, keys: dict[str, int], timeout: float = 20.0
    ) -> dict[str, int]:
        """
        Wait until C{client}'s Presence lists exactly C{keys} (key: number
        of metas).
        """
        result: dict[str, int] = self.command(
            "wait_presence", timeout, id=client, keys=keys
        )
        return result

    def presence(self, client: str) -> dict[str, Any]:
        """
        C{client}'s Presence list and the keys its onJoin / onLeave saw
        arrive and go.
        """
        result: dict[str, Any] = self.command("presence", id=client)
        return result

    def close(self, client: str) -> None:
        """
        Disconnect C{client}'s socket.
        """
        self.command("close", id=client)
