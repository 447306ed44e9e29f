"""
A real C{redis-server} (or C{valkey-server}) on a free loopback port with
persistence off, for the backplane tests.  Missing, the tests skip with a
reason; under C{CI=true} they fail.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.interop.harness import _unavailable, free_port

__all__ = ["RedisServer", "start_redis"]


def redis_executable(testcase: SynchronousTestCase) -> str:
    """
    The path of C{redis-server} (or C{valkey-server}).
    """
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found is not None:
            return found
    _unavailable(
        testcase,
        "redis-server is not installed (Debian: apt-get install redis-server; "
        "scripts/test.sh installs it when CI=true)",
    )
    raise AssertionError("unreachable")


class RedisServer:
    """
    One C{redis-server} process that can be stopped and started again on
    the same port, its output in C{log_path}.
    """

    def __init__(self, executable: str, log_path: Path) -> None:
        self.executable = executable
        self.port = free_port()
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """
        The backplane URL of this server.
        """
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """
        Start the server and wait until it accepts connections.
        """
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    self.executable,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.log_path.parent,
            )
        deadline = time.monotonic() + 20
        while True:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"redis-server exited: {self.log_path.read_text(errors='replace')}"
                )
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError("redis-server did not listen") from None
                time.sleep(0.05)

    def stop(self) -> None:
        """
        Stop the server (safe to call more than once).
        """
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def version(self) -> str:
        """
        The server's version line.
        """
        return subprocess.run(
            [self.executable, "--version"], capture_output=True, text=True
        ).stdout.strip()


def start_redis(testcase: SynchronousTestCase) -> RedisServer:
    """
    A running Redis for one test, stopped in its cleanup.
    """
    directory = Path(testcase.mktemp())
    directory.mkdir(parents=True)
    server = RedisServer(redis_executable(testcase), directory / "redis.log")
    testcase.addCleanup(server.stop)
    server.start()
    return server
