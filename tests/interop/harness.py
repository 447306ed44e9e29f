"""
The machinery of the interop suite: a real C{twistd beryl} subprocess on
loopback, node scenario runs that report JSON, and a small blocking
WebSocket client for byte-level checks.

Everything here blocks; the tests using it are
L{twisted.trial.unittest.SynchronousTestCase}s and never run a reactor.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import unittest
import uuid
from pathlib import Path
from typing import Any, Mapping, Sequence

from twisted.trial.unittest import SynchronousTestCase

__all__ = [
    "INTEROP_DIR",
    "BerylServer",
    "ConnectionClosed",
    "HandshakeRefused",
    "NodeScenario",
    "OK_EMPTY",
    "RawWebSocket",
    "assert_refused",
    "free_port",
    "node_executable",
    "run_scenario",
    "start_server",
    "unique_topic",
]

INTEROP_DIR = Path(__file__).resolve().parent
REPO_ROOT = INTEROP_DIR.parent.parent
SCENARIOS = INTEROP_DIR / "scenarios.js"

# Runs twistd with this very interpreter, wherever the venv put (or did not
# put) its console scripts.
_TWISTD = (
    "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"
)

OK_EMPTY = {"status": "ok", "response": {}}
"""What phoenix.js reports for an ok reply with an empty response."""

STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
SCENARIO_TIMEOUT = 30.0


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def _unavailable(testcase: SynchronousTestCase, reason: str) -> None:
    """
    Skip for a missing prerequisite, except under C{CI=true}, where a
    silently skipped interop suite would hide a broken build.
    """
    if _in_ci():
        testcase.fail(
            f"interop prerequisite missing (CI=true, so this fails): {reason}"
        )
    raise unittest.SkipTest(reason)


def node_executable(testcase: SynchronousTestCase) -> str:
    """
    The path of C{node}, once it is known that the pinned npm packages are
    installed in C{tests/interop/node_modules}.
    """
    node = shutil.which("node")
    if node is None:
        _unavailable(
            testcase, "node is not installed (needed to drive the phoenix client)"
        )
        raise AssertionError("unreachable")
    for package in ("phoenix", "phoenix17", "ws"):
        if not (INTEROP_DIR / "node_modules" / package / "package.json").is_file():
            _unavailable(
                testcase,
                f"tests/interop/node_modules/{package} is missing; run `npm ci` in tests/interop",
            )
    return node


def unique_topic(prefix: str) -> str:
    """
    A topic no other test uses (C{room:3f0c...}).
    """
    return f"{prefix}:{uuid.uuid4().hex[:12]}"


_GIVEN_PORTS: set[int] = set()


def free_port() -> int:
    """
    A loopback TCP port that nothing listens on right now and that this
    process has not handed out before: the kernel may offer the same free
    port twice in a row, and a node given it as both its client and its
    cluster port cannot start.
    """
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        if port not in _GIVEN_PORTS:
            _GIVEN_PORTS.add(port)
            return port


class BerylServer:
    """
    One C{twistd -n beryl} process listening on C{127.0.0.1:port}, its log
    (stdout and stderr) written to C{log_path}.
    """

    def __init__(self, log_path: Path, options: Sequence[str], port: int) -> None:
        self.log_path = log_path
        self.options = list(options)
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """
        The socket endpoint as phoenix.js wants it (it appends C{/websocket}).
        """
        return f"ws://127.0.0.1:{self.port}/socket"

    def start(self) -> None:
        """
        Start the process and wait until it accepts TCP connections.
        """
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO_ROOT)] + [p for p in [env.get("PYTHONPATH")] if p]
        )
        env["PYTHONUNBUFFERED"] = "1"
        command = [
            sys.executable,
            "-c",
            _TWISTD,
            "-n",
            "--pidfile=",
            "beryl",
            "--port",
            f"tcp:{self.port}:interface=127.0.0.1",
            *self.options,
        ]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"$ {' '.join(command)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.log_path.parent,
                env=env,
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"twistd beryl exited with {self.process.returncode} before "
                    f"listening; log:\n{self.log()}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise AssertionError(
                        f"twistd beryl did not listen on port {self.port} within "
                        f"{STARTUP_TIMEOUT:.0f} s; log:\n{self.log()}"
                    ) from None
                time.sleep(0.05)

    def stop(self) -> int | None:
        """
        SIGTERM, then SIGKILL if it will not go; returns the exit status.
        Safe to call more than once.
        """
        process = self.process
        if process is None:
            return None
        self.process = None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    def log(self) -> str:
        """
        Everything the server has logged so far.
        """
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


def start_server(
    testcase: SynchronousTestCase, *options: str, port: int | None = None
) -> BerylServer:
    """
    Start a server for one test (stopped in its cleanup), with extra
    C{twistd beryl} options.
    """
    directory = Path(testcase.mktemp())
    directory.mkdir(parents=True)
    count = len(list(directory.glob("beryl*.log")))
    server = BerylServer(
        directory / f"beryl{count}.log",
        options,
        port if port is not None else free_port(),
    )
    testcase.addCleanup(server.stop)
    server.start()
    return server


class NodeScenario:
    """
    One run of C{scenarios.js <name> <json args>}: it prints JSON lines
    (intermediate C{{"stage": ...}} reports and a final result) and exits.
    """

    def __init__(
        self,
        testcase: SynchronousTestCase,
        name: str,
        server: BerylServer | None = None,
        **args: Any,
    ) -> None:
        node = node_executable(testcase)
        self.name = name
        self.server = server
        if server is not None:
            args.setdefault("url", server.url)
        args.setdefault("timeoutMs", int(SCENARIO_TIMEOUT * 1000) - 5000)
        self.process = subprocess.Popen(
            [node, str(SCENARIOS), name, json.dumps(args)],
            cwd=INTEROP_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self._buffer = b""
        testcase.addCleanup(self.kill)

    def kill(self) -> None:
        """
        Make sure the node process is gone.
        """
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()

    def _explain(self, what: str) -> str:
        stderr = b""
        if self.process.poll() is not None and self.process.stderr is not None:
            stderr = self.process.stderr.read()
        server_log = self.server.log()[-4000:] if self.server is not None else ""
        return (
            f"scenario {self.name!r}: {what}\n--- node stderr:\n"
            f"{stderr.decode(errors='replace')}\n--- server log (tail):\n{server_log}"
        )

    def read(self, timeout: float = SCENARIO_TIMEOUT) -> dict[str, Any]:
        """
        The next JSON line the scenario prints.  A line with an C{error} key
        (the scenario gave up) fails the test with everything it observed.
        """
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill()
                raise AssertionError(self._explain(f"no output within {timeout:.0f} s"))
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    self.process.wait()
                    raise AssertionError(
                        self._explain(
                            f"exited ({self.process.returncode}) without a result; "
                            f"partial output {self._buffer!r}"
                        )
                    )
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            result: dict[str, Any] = json.loads(line)
        except ValueError:
            raise AssertionError(self._explain(f"printed non-JSON {line!r}")) from None
        if "error" in result:
            self.kill()
            raise AssertionError(
                self._explain(f"gave up: {json.dumps(result, indent=1)}")
            )
        return result

    def send(self, message: Mapping[str, Any]) -> None:
        """
        Tell the scenario something (one JSON line on its stdin).
        """
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message).encode() + b"\n")
        self.process.stdin.flush()

    def result(self, timeout: float = SCENARIO_TIMEOUT) -> dict[str, Any]:
        """
        The final JSON line; the process must then exit with status 0.
        """
        result = self.read(timeout)
        try:
            status = self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                self._explain("did not exit after its result")
            ) from None
        if status != 0:
            raise AssertionError(self._explain(f"exited with {status}"))
        return result


def run_scenario(
    testcase: SynchronousTestCase,
    name: str,
    server: BerylServer | None = None,
    **args: Any,
) -> dict[str, Any]:
    """
    Run a node scenario to completion and return the JSON it reports.
    """
    return NodeScenario(testcase, name, server, **args).result()


# A tiny blocking WebSocket client (RFC 6455), for byte-level checks.

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class HandshakeRefused(Exception):
    """
    The server answered the upgrade request with something other than 101.
    """

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.headers = headers
        self.body = body


class ConnectionClosed(Exception):
    """
    A close frame (or the end of the TCP stream) came instead of data.
    """

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"closed with {code} {reason!r}")
        self.code = code
        self.reason = reason


def _read_http_head(sock: socket.socket) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(
                f"connection closed during the handshake after {data!r}"
            )
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def assert_refused(
    testcase: SynchronousTestCase, port: int, **kwargs: Any
) -> HandshakeRefused:
    """
    Check that a handshake made with C{kwargs} (see L{RawWebSocket.connect})
    is answered with HTTP 403 and no upgrade.
    """
    try:
        client = RawWebSocket.connect(port, **kwargs)
    except HandshakeRefused as refusal:
        testcase.assertEqual(refusal.status, 403)
        testcase.assertNotIn("upgrade", refusal.headers)
        testcase.assertNotIn("sec-websocket-accept", refusal.headers)
        return refusal
    client.close()
    raise testcase.failureException(f"the handshake with {kwargs!r} was accepted")


class RawWebSocket:
    """
    A blocking client WebSocket over a plain socket.  Frames it sends are
    masked, as RFC 6455 requires of clients; frames are read one by one,
    close frames included.
    """

    def __init__(
        self, sock: socket.socket, buffer: bytes, headers: dict[str, str]
    ) -> None:
        self.sock = sock
        self._buffer = buffer
        self.headers = headers
        self.closed: tuple[int | None, str] | None = None

    @classmethod
    def connect(
        cls,
        port: int,
        query: str | None = "vsn=2.0.0",
        path: str = "/socket/websocket",
        headers: Mapping[str, str] | None = None,
        protocols: Sequence[str] | None = None,
        timeout: float = 10.0,
    ) -> RawWebSocket:
        """
        Open a WebSocket; L{HandshakeRefused} when the server does not
        switch protocols.
        """
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        target = path if query is None else f"{path}?{query}"
        lines = [
            f"GET {target} HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ]
        if protocols:
            lines.append(f"Sec-WebSocket-Protocol: {', '.join(protocols)}")
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}")
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        try:
            head, rest = _read_http_head(sock)
        except BaseException:
            sock.close()
            raise
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        response_headers: dict[str, str] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            response_headers[name.strip().lower()] = value.strip()
        if status != 101:
            body = rest
            length = int(response_headers.get("content-length", "-1"))
            try:
                while length < 0 or len(body) < length:
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    body += chunk
            except OSError:
                pass
            sock.close()
            raise HandshakeRefused(status, response_headers, body)
        expected = base64.b64encode(
            hashlib.sha1(key.encode() + _GUID).digest()
        ).decode()
        if response_headers.get("sec-websocket-accept") != expected:
            sock.close()
            raise AssertionError(f"bad Sec-WebSocket-Accept in {response_headers!r}")
        return cls(sock, rest, response_headers)

    # sending

    def send_frame(self, opcode: int, payload: bytes, fin: bool = True) -> None:
        """
        Send one masked frame.
        """
        first = (0x80 if fin else 0) | opcode
        length = len(payload)
        if length < 126:
            header = struct.pack("!BB", first, 0x80 | length)
        elif length < 65536:
            header = struct.pack("!BBH", first, 0x80 | 126, length)
        else:
            header = struct.pack("!BBQ", first, 0x80 | 127, length)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def send_text(self, data: str | bytes) -> None:
        """
        A text frame; bytes are sent as they are (even if not UTF-8).
        """
        self.send_frame(
            OP_TEXT, data.encode("utf-8") if isinstance(data, str) else data
        )

    def send_binary(self, data: bytes) -> None:
        """
        A binary frame.
        """
        self.send_frame(OP_BINARY, data)

    def send_json(self, value: Any) -> None:
        """
        A text frame holding C{value} as compact JSON.
        """
        self.send_text(json.dumps(value, separators=(",", ":")))

    # receiving

    def _read_exactly(self, count: int, deadline: float) -> bytes:
        while len(self._buffer) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"no complete frame within the timeout; have {self._buffer!r}"
                )
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                raise ConnectionClosed(
                    None, "TCP connection closed without a close frame"
                )
            self._buffer += chunk
        data, self._buffer = self._buffer[:count], self._buffer[count:]
        return data

    def recv_frame(self, timeout: float = 10.0) -> tuple[int, bytes]:
        """
        The next whole message as C{(opcode, payload)}; continuation frames
        are joined.  Control frames are returned as they come.
        """
        deadline = time.monotonic() + timeout
        opcode: int | None = None
        parts: list[bytes] = []
        while True:
            first, second = self._read_exactly(2, deadline)
            length = second & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", self._read_exactly(2, deadline))
            elif length == 127:
                (length,) = struct.unpack("!Q", self._read_exactly(8, deadline))
            mask = self._read_exactly(4, deadline) if second & 0x80 else None
            payload = self._read_exactly(length, deadline)
            if mask is not None:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            frame_opcode = first & 0x0F
            if frame_opcode >= 0x8:
                return frame_opcode, payload
            if frame_opcode != OP_CONTINUATION:
                opcode = frame_opcode
            parts.append(payload)
            if first & 0x80:
                assert opcode is not None
                return opcode, b"".join(parts)

    def recv_data(self, timeout: float = 10.0) -> tuple[int, bytes]:
        """
        The next text or binary message; a close frame raises
        L{ConnectionClosed} (after answering it), a ping is answered.
        """
        while True:
            opcode, payload = self.recv_frame(timeout)
            if opcode == OP_CLOSE:
                code = (
                    struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                )
                reason = payload[2:].decode("utf-8", "replace")
                self.closed = (code, reason)
                try:
                    self.send_frame(OP_CLOSE, payload[:2])
                except OSError:
                    pass
                raise ConnectionClosed(code, reason)
            if opcode == OP_PING:
                self.send_frame(OP_PONG, payload)
                continue
            if opcode == OP_PONG:
                continue
            return opcode, payload

    def recv_json(self, timeout: float = 10.0) -> Any:
        """
        The next message, which must be a text frame holding JSON.
        """
        opcode, payload = self.recv_data(timeout)
        if opcode != OP_TEXT:
            raise AssertionError(
                f"expected a text frame, got opcode {opcode}: {payload!r}"
            )
        return json.loads(payload.decode("utf-8"))

    def recv_close(
        self, timeout: float = 10.0
    ) -> tuple[int | None, str, list[tuple[int, bytes]]]:
        """
        Read until the server closes: the close code, its reason and the
        messages that came before it.
        """
        before: list[tuple[int, bytes]] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                before.append(self.recv_data(max(0.01, deadline - time.monotonic())))
            except ConnectionClosed as closed:
                return closed.code, closed.reason, before

    def close(self) -> None:
        """
        Drop the TCP connection.
        """
        self.sock.close()

    # Phoenix conveniences (V2)

    def request(self, message: list[Any], timeout: float = 10.0) -> Any:
        """
        Send a V2 message and return the next message that comes back.
        """
        self.send_json(message)
        return self.recv_json(timeout)

    def heartbeat(self, ref: str) -> Any:
        """
        Send a heartbeat and return the next message (normally its reply);
        since a socket's messages are handled in order, everything caused
        by earlier messages has been written before it.
        """
        return self.request([None, ref, "phoenix", "heartbeat", {}])


def self_signed_certificate(directory: Path, host: str) -> tuple[Path, Path]:
    """
    A self-signed certificate for C{host} (an IP address or a DNS name),
    usable as its own root: its key and the certificate, as PEM files in
    C{directory}.
    """
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    try:
        alternative: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        alternative = x509.DNSName(host)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([alternative]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = directory / f"{host}.key", directory / f"{host}.crt"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path
