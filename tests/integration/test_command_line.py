"""
C{twistd beryl} and C{twist beryl} as a user runs them: bad options and a
port already in use give one line naming the option and the fix, not the
usage text or a traceback.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

ROOT = Path(__file__).resolve().parents[2]

_RUN = {
    "twistd": "import sys; from twisted.scripts.twistd import run; "
    "sys.argv[0] = 'twistd'; run()",
    "twist": "import sys; from twisted.application.twist._twist import Twist; "
    "sys.argv[0] = 'twist'; Twist.main(sys.argv)",
}


def run(program: str, *argv: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """
    Run C{twistd -n beryl ...} or C{twist beryl ...} to its end; its exit
    status and everything it printed.
    """
    prefix = ["-n", "--pidfile="] if program == "twistd" else []
    environ = {**os.environ, **(env or {})}
    environ["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, "-c", _RUN[program], *prefix, "beryl", *argv],
        capture_output=True,
        text=True,
        env=environ,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    return done.returncode, done.stdout + done.stderr


class UsageErrorTests(SynchronousTestCase):
    def assertOneLine(self, program: str, output: str, *words: str) -> None:
        lines = output.splitlines()
        self.assertEqual(len(lines), 2, output)
        self.assertTrue(lines[0].startswith(f"{program} beryl: "), output)
        for word in words:
            self.assertIn(word, lines[0])
        self.assertEqual(lines[1], f"Run '{program} beryl --help' for every option.")

    def test_bad_option(self) -> None:
        """An unknown option gives one line naming it, then the --help hint, for twistd and twist."""
        for program in ("twistd", "twist"):
            status, output = run(program, "--max-chanels", "5")
            self.assertEqual(status, 2, output)
            self.assertOneLine(program, output, "--max-chanels", "not recognized")

    def test_port_out_of_range(self) -> None:
        """--port 99999 gives one line naming --port and the valid range."""
        status, output = run("twistd", "--port", "99999")
        self.assertEqual(status, 2, output)
        self.assertOneLine("twistd", output, "--port", "1 to 65535")

    def test_environment_error_names_variable(self) -> None:
        """A bad BERYL_ variable gives one line naming the option and the variable."""
        status, output = run("twist", env={"BERYL_MAX_CHANNELS": "0"})
        self.assertEqual(status, 2, output)
        self.assertOneLine("twist", output, "--max-channels", "BERYL_MAX_CHANNELS")

    def test_port_in_use(self) -> None:
        """A port in use gives one line naming --port and the fix, and no traceback."""
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            status, output = run("twist", "--port", f"tcp:{port}:interface=127.0.0.1")
        self.assertEqual(status, 1, output)
        self.assertNotIn("Traceback", output)
        self.assertOneLine(
            "twist", output, "--port: cannot listen on", "choose another --port"
        )

    def test_cluster_port_in_use(self) -> None:
        """A cluster port in use stops the node with status 1 and a line naming --cluster-port, rather than running unclustered."""
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            status, output = run(
                "twist",
                "--port",
                "tcp:0:interface=127.0.0.1",
                "--cluster-port",
                f"tcp:{port}:interface=127.0.0.1",
            )
        self.assertEqual(status, 1, output)
        self.assertNotIn("Traceback", output)
        lines = output.splitlines()
        expected = (
            f"twist beryl: --cluster-port: cannot listen on port {port}: Address "
            "already in use; stop what uses it or choose another --cluster-port"
        )
        self.assertIn(expected, lines)
        self.assertEqual(
            lines[lines.index(expected) + 1],
            "Run 'twist beryl --help' for every option.",
        )
