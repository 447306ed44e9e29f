"""
The code blocks of README.md and docs/guide.md work as written, so the docs
cannot rot:

  - JavaScript blocks run under node with the phoenix and ws packages
    against a real C{twistd beryl} (the port of C{ws://localhost:4000} is
    swapped for the test server's);
  - HTML blocks load in headless Chromium, with C{phoenix} resolved by an
    import map;
  - Python blocks are type-checked with C{mypy --strict} and imported; a
    block whose first line names a file (C{# docs/examples/step1.py}) must
    be an excerpt of that file, which is checked and tested itself.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from mypy import api
from twisted.trial.unittest import SynchronousTestCase

from tests.interop.harness import (
    INTEROP_DIR,
    REPO_ROOT,
    BerylServer,
    RawWebSocket,
    free_port,
    node_executable,
    start_server,
    unique_topic,
)

DOCS = ("README.md", "docs/guide.md")

_BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.M | re.S)
_EXCERPT = re.compile(r"\A# (docs/examples/\S+\.py)\n")


def code_blocks(language: str) -> list[tuple[str, int, str]]:
    """
    Every block of one language in the docs: (document, index, text).
    """
    found = []
    for document in DOCS:
        text = (REPO_ROOT / document).read_text(encoding="utf-8")
        for index, match in enumerate(_BLOCK.finditer(text)):
            if match.group(1) == language:
                found.append((document, index, match.group(2)))
    return found


def standalone_python() -> list[tuple[str, str]]:
    """
    The Python blocks that are whole modules: (module name, source).
    """
    modules = []
    for document, index, text in code_blocks("python"):
        if _EXCERPT.match(text):
            continue
        stem = Path(document).stem.replace("-", "_").lower()
        modules.append((f"{stem}_block{index}", text))
    return modules


def _local(source: str, port: int) -> str:
    return source.replace("ws://localhost:4000", f"ws://127.0.0.1:{port}")


class PythonBlockTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = Path(self.mktemp()).resolve()
        self.directory.mkdir(parents=True)
        self.modules = standalone_python()
        for name, source in self.modules:
            (self.directory / f"{name}.py").write_text(source)

    def test_blocks_found(self) -> None:
        """The README has Python blocks to check (the extraction is not silently empty)."""
        self.assertIn("readme", {name.split("_block")[0] for name, _ in self.modules})

    def test_mypy_strict(self) -> None:
        """Every standalone Python block passes mypy --strict."""
        stdout, stderr, status = api.run(
            [
                "--strict",
                "--no-incremental",
                "--cache-dir=/dev/null",
                f"--config-file={REPO_ROOT / 'pyproject.toml'}",
                *[str(self.directory / f"{name}.py") for name, _ in self.modules],
            ]
        )
        self.assertEqual(status, 0, stdout + stderr)

    def test_examples_mypy_strict(self) -> None:
        """Every file in docs/examples, whose excerpts the docs show, passes mypy --strict."""
        files = sorted(
            str(path) for path in (REPO_ROOT / "docs" / "examples").glob("*.py")
        )
        self.assertIn("step1_ping.py", "".join(files))
        stdout, stderr, status = api.run(
            [
                "--strict",
                "--no-incremental",
                "--cache-dir=/dev/null",
                f"--config-file={REPO_ROOT / 'pyproject.toml'}",
                *files,
            ]
        )
        self.assertEqual(status, 0, stdout + stderr)

    def test_blocks_import(self) -> None:
        """Every standalone Python block imports (runs its module body) without error."""
        for name, _ in self.modules:
            done = subprocess.run(
                [sys.executable, "-c", f"import {name}"],
                cwd=self.directory,
                env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
                capture_output=True,
                text=True,
                timeout=120,
            )
            self.assertEqual(done.returncode, 0, f"{name}:\n{done.stderr}")

    def test_excerpts_match_files(self) -> None:
        """A block that names a docs/examples file is a verbatim excerpt of it."""
        for document, index, text in code_blocks("python"):
            match = _EXCERPT.match(text)
            if match is None:
                continue
            path = REPO_ROOT / match.group(1)
            self.assertTrue(path.exists(), f"{document} block {index}: no {path}")
            body = text[match.end() :]
            self.assertIn(
                body.strip("\n"),
                path.read_text(encoding="utf-8"),
                f"{document} block {index} is not an excerpt of {match.group(1)}",
            )


class ReadmeChannelTests(SynchronousTestCase):
    def test_shout_app_served(self) -> None:
        """The README's shout app runs under twistd --app from its own directory, and a string payload gets an error reply, not a crash."""
        (source,) = [
            text
            for document, _, text in code_blocks("python")
            if document == "README.md" and "def handle_info" in text
        ]
        directory = Path(self.mktemp()).resolve()
        directory.mkdir(parents=True)
        (directory / "shout.py").write_text(source)
        server = BerylServer(
            directory / "beryl.log", ["--app", "shout:app"], free_port()
        )
        self.addCleanup(server.stop)
        server.start()
        topic = unique_topic("room")
        client = RawWebSocket.connect(server.port)
        self.addCleanup(client.close)
        client.send_json(["1", "1", topic, "phx_join", {"user": "ann"}])
        self.assertEqual(client.recv_json()[4], {"status": "ok", "response": {}})
        frames = [client.recv_json(), client.recv_json()]
        self.assertEqual([f[3] for f in frames], ["presence_diff", "presence_state"])
        self.assertEqual(list(frames[1][4]), ["ann"])
        self.assertEqual(
            client.request(["1", "2", topic, "shout", "just a string"])[4],
            {"status": "error", "response": {"reason": "expected shout with a text"}},
        )
        client.send_json(["1", "3", topic, "shout", {"text": "hi"}])
        self.assertEqual(
            client.recv_json(),
            [None, None, topic, "shout", {"user": "ann", "text": "hi"}],
        )
        self.assertEqual(client.recv_json()[4], {"status": "ok", "response": {}})


class NodeBlockTests(SynchronousTestCase):
    def test_node_client(self) -> None:
        """The README's Node 20 client runs as written: it joins over WebSocket, sees itself online, reads its message and exits 0."""
        node = node_executable(self)
        (source,) = [text for _, _, text in code_blocks("js") if 'from "ws"' in text]
        server = start_server(self)
        directory = Path(self.mktemp()).resolve()
        directory.mkdir(parents=True)
        (directory / "node_modules").symlink_to(INTEROP_DIR / "node_modules")
        # One line added after the README's code: which transport was used.
        report = '\nprocess.on("exit", () => console.log("transport:", socket.transport.name))\n'
        (directory / "client.mjs").write_text(_local(source, server.port) + report)
        done = subprocess.run(
            [node, "client.mjs"],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        lines = done.stdout.splitlines()
        self.assertIn("online: alice", lines)
        self.assertIn("alice: hello", lines)
        self.assertIn("transport: WebSocket", lines)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class BrowserBlockTests(SynchronousTestCase):
    def test_browser_client(self) -> None:
        """The README's browser block, loaded in headless Chromium, joins and lists its user."""
        from tests.integration.test_demo_browser import _browser_paths, open_chromium

        chromium, chromedriver = _browser_paths(self)
        (source,) = [text for _, _, text in code_blocks("html")]
        phoenix = INTEROP_DIR / "node_modules" / "phoenix" / "priv" / "static"
        if not (phoenix / "phoenix.mjs").exists():
            node_executable(self)  # skips, or fails under CI, without npm packages
        server = start_server(self)
        site = Path(self.mktemp()).resolve()
        site.mkdir(parents=True)
        shutil.copy(phoenix / "phoenix.mjs", site / "phoenix.mjs")
        importmap = '<script type="importmap">{"imports": {"phoenix": "/phoenix.mjs"}}</script>\n'
        (site / "index.html").write_text(
            "<!doctype html>\n" + importmap + _local(source, server.port)
        )
        httpd = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(site))
        )
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        self.addCleanup(thread.join, 10)
        self.addCleanup(httpd.shutdown)
        driver = open_chromium(self, chromium, chromedriver)
        driver.get(f"http://127.0.0.1:{httpd.server_address[1]}/")
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(driver, 30, poll_frequency=0.1).until(
            lambda d: d.find_element("id", "online").text == "bob"
        )
