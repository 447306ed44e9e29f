"""
C{twistd beryl --port ssl:...} serves C{wss://}: the official phoenix
client connects over TLS with a certificate generated for the test.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from beryl.tap import tls_available
from tests.interop.harness import (
    INTEROP_DIR,
    _unavailable,
    free_port,
    node_executable,
    self_signed_certificate,
    start_server,
)

CLIENT = """
import {Socket} from "phoenix"
import WebSocket from "ws"

const socket = new Socket(process.argv[2], {transport: WebSocket})
socket.onError((error) => console.log("socket error", String(error && error.message)))
socket.connect()
const room = socket.channel("room:tls", {user: "secure"})
room.join()
  .receive("ok", () => room.push("ping", {over: "tls"}).receive("ok", (reply) => {
    console.log(JSON.stringify({ping: reply}))
    socket.disconnect(() => process.exit(0))
  }))
  .receive("error", (error) => { console.log(JSON.stringify({error})); process.exit(1) })
setTimeout(() => { console.log("timed out"); process.exit(2) }, 30000)
"""


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """
    A self-signed certificate for 127.0.0.1 and its key, as PEM files.
    """
    return self_signed_certificate(directory, "127.0.0.1")


class SecureWebSocketTests(SynchronousTestCase):
    def test_phoenix_client_over_wss(self) -> None:
        """The phoenix client joins and pings over wss:// served from --port ssl:... with a generated certificate."""
        if not tls_available():
            _unavailable(self, "TLS support is missing: pip install -e '.[test]'")
        node = node_executable(self)
        directory = Path(self.mktemp()).resolve()
        directory.mkdir(parents=True)
        key, cert = make_certificate(directory)
        port = free_port()
        server = start_server(
            self,
            "--port",
            f"ssl:{port}:interface=127.0.0.1:privateKey={key}:certKey={cert}",
            port=port,
        )
        (directory / "node_modules").symlink_to(INTEROP_DIR / "node_modules")
        (directory / "tls_client.mjs").write_text(CLIENT)
        done = subprocess.run(
            [node, "tls_client.mjs", f"wss://127.0.0.1:{server.port}/socket"],
            cwd=directory,
            env={**os.environ, "NODE_EXTRA_CA_CERTS": str(cert)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(
            done.returncode, 0, done.stdout + done.stderr + "\n" + server.log()[-2000:]
        )
        self.assertIn('{"ping":{"over":"tls"}}', done.stdout.splitlines())
