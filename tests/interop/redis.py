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

from tests.interop.harness import _unavailable, free_port, self_signed_certificate

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

    def __init__(
        self,
        executable: str,
        log_path: Path,
        password: str | None = None,
        tls: bool = False,
    ) -> None:
        self.executable = executable
        self.port = free_port()
        self.log_path = log_path
        self.password = password
        self.ca: Path | None = None
        self.extra: list[str] = []
        if password is not None:
            self.extra += ["--requirepass", password]
        if tls:
            cert, key = _self_signed(log_path.parent)
            self.ca = cert
            self.extra += [
                "--port",
                "0",
                "--tls-port",
                str(self.port),
                "--tls-cert-file",
                str(cert),
                "--tls-key-file",
                str(key),
                "--tls-auth-clients",
                "no",
            ]
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """
        The backplane URL of this server, with its password and CA.
        """
        scheme = "rediss" if self.ca is not None else "redis"
        auth = f":{self.password}@" if self.password is not None else ""
        query = f"?ca={self.ca}" if self.ca is not None else ""
        return f"{scheme}://{auth}127.0.0.1:{self.port}/0{query}"

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
                    *self.extra,
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


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """
    A certificate for 127.0.0.1 and its key, for redis-server's TLS port.
    """
    key, cert = self_signed_certificate(directory, "127.0.0.1")
    return cert, key


def start_redis(
    testcase: SynchronousTestCase, password: str | None = None, tls: bool = False
) -> RedisServer:
    """
    A running Redis for one test, stopped in its cleanup.
    """
    directory = Path(testcase.mktemp()).resolve()
    directory.mkdir(parents=True)
    server = RedisServer(
        redis_executable(testcase), directory / "redis.log", password, tls
    )
    testcase.addCleanup(server.stop)
    server.start()
    return server
