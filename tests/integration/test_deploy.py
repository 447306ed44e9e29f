"""
docs/deploy/beryl.service works: its C{Environment=} lines and
C{ExecStart} (C{twist --log-format=json beryl}) run a real server that
serves the application from the unit's working directory, and every log
line is JSON, Beryl's with their structured fields.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.interop.harness import RawWebSocket, free_port, unique_topic

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "docs" / "deploy" / "beryl.service"

_TWIST = (
    "import sys; from twisted.application.twist._twist import Twist; "
    "sys.argv[0] = 'twist'; Twist.main(sys.argv)"
)


def service_section(path: Path) -> list[tuple[str, str]]:
    """
    The C{[Service]} section's settings, in order, comments left out.
    """
    settings = []
    section = None
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            key, _, value = line.partition("=")
            settings.append((key, value))
    return settings


class SystemdUnitTests(SynchronousTestCase):
    def test_unit_runs(self) -> None:
        """The unit's environment and ExecStart serve its app from its working directory, logging JSON lines."""
        settings = service_section(UNIT)
        environment = dict(
            assignment.split("=", 1)
            for key, value in settings
            if key == "Environment"
            for assignment in shlex.split(value)
        )
        (exec_start,) = [value for key, value in settings if key == "ExecStart"]
        (working_directory,) = [
            value for key, value in settings if key == "WorkingDirectory"
        ]
        argv = shlex.split(exec_start)
        self.assertTrue(argv[0].endswith("/twist"), argv)
        self.assertEqual(argv[1:], ["--log-format=json", "beryl"])
        self.assertTrue(all(name.startswith("BERYL_") for name in environment))

        # The deployment's own parts: its directory (the app in it) and port.
        port = free_port()
        self.assertIn(":4000:", environment["BERYL_PORT"])
        environment["BERYL_PORT"] = environment["BERYL_PORT"].replace(
            ":4000:", f":{port}:"
        )
        app_dir = Path(self.mktemp()).resolve()
        app_dir.mkdir(parents=True)
        module = environment["BERYL_APP"].split(":")[0]
        shutil.copy(
            ROOT / "docs" / "examples" / "step4_presence.py", app_dir / f"{module}.py"
        )
        self.assertTrue(working_directory.startswith("/"))

        env = {k: v for k, v in os.environ.items() if not k.startswith("BERYL_")}
        env.update(environment)
        env["PYTHONPATH"] = str(ROOT)  # Beryl itself; the app comes from the cwd
        log_path = app_dir / "journal.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-c", _TWIST, *argv[1:]],
                cwd=app_dir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.addCleanup(lambda: None if process.poll() is not None else process.kill())
        client = self.connect(port, process, log_path)
        topic = unique_topic("room")
        self.assertEqual(
            client.request(["1", "1", topic, "phx_join", {}])[4],
            {"status": "ok", "response": {}},
        )
        self.assertEqual(list(client.recv_json()[4]["joins"]), ["alice"])
        self.assertEqual(list(client.recv_json()[4]), ["alice"])
        # A frame that does not decode makes Beryl log a warning.
        client.send_text("not a phoenix message")
        client.recv_close()
        process.send_signal(signal.SIGTERM)
        process.wait(30)
        # twist ends by the signal it got, which systemd counts as a clean stop.
        self.assertIn(process.returncode, (0, -signal.SIGTERM), log_path.read_text())
        # RFC 7464 JSON text sequences: each record starts with RS (0x1e).
        records = log_path.read_text().split("\x1e")
        self.assertEqual(records[0], "")
        events = [json.loads(record) for record in records[1:]]
        ours = [e for e in events if e["log_namespace"].startswith("beryl")]
        self.assertNotEqual(ours, [], log_path.read_text())
        for event in ours:
            fields = set(re.findall(r"\{(\w+)", event["log_format"]))
            self.assertLessEqual(fields, set(event), event)

    def connect(
        self, port: int, process: subprocess.Popen[bytes], log: Path
    ) -> RawWebSocket:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                self.fail(f"twist exited with {process.returncode}: {log.read_text()}")
            try:
                client = RawWebSocket.connect(
                    port, query="token=alice-secret&vsn=2.0.0"
                )
            except OSError:
                if time.monotonic() > deadline:
                    self.fail(f"twist never listened: {log.read_text()}")
                time.sleep(0.1)
                continue
            self.addCleanup(client.close)
            return client
