"""
Tests for L{beryl.levee.channel}: the Levee document channel driven through
a real coordinator by fake sockets, and end to end by a scripted Fluid-like
client on the official C{phoenix} npm client against a real C{twistd beryl}.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.interop.harness import INTEROP_DIR, node_executable, start_server

TENANT = "acme"
DOCUMENT = "doc"
TOPIC = f"document:{TENANT}:{DOCUMENT}"
FLUID_VERSIONS = ["^0.4.0", "^0.3.0", "^0.2.0", "^0.1.0"]


def run_node(testcase: SynchronousTestCase, script: str, **args: Any) -> Any:
    """Run a node script from tests/interop to completion; return its C{result}."""
    node = node_executable(testcase)
    process = subprocess.run(
        [node, script, json.dumps(args)],
        cwd=INTEROP_DIR,
        capture_output=True,
        timeout=60,
    )
    lines = process.stdout.decode(errors="replace").strip().splitlines()
    report = json.loads(lines[-1]) if lines else {}
    if process.returncode != 0 or "result" not in report:
        testcase.fail(
            f"{script} exited with {process.returncode}: {lines[-1:] or 'no output'}\n"
            f"stderr:\n{process.stderr.decode(errors='replace')}"
        )
    return report["result"]


class InteropTests(SynchronousTestCase):
    """A scripted Fluid-like phoenix client against a real `twistd beryl --levee`."""

    def test_fluid_like_session(self) -> None:
        """Writers and a reader through twistd: ordered ops, MSN, signals, nacks, catch-up, leave, reconnect."""
        server = start_server(self, "--levee", "--levee-insecure-dev-tokens")
        result = run_node(self, "levee_client.js", url=server.url)
        alice, bob, rita = result["alice"], result["bob"], result["rita"]
        ids = {alice["clientId"], bob["clientId"], rita["clientId"]}
        self.assertEqual(len(ids), 3)
        self.assertEqual(
            [(c["mode"], c["nonce"]) for c in (alice, bob, rita)],
            [("write", "alice-nonce"), ("write", "bob-nonce"), ("read", "rita-nonce")],
        )
        self.assertEqual(
            rita["initialClients"],
            [alice["clientId"], bob["clientId"], rita["clientId"]],
        )
        # Everyone saw one and the same consecutive stream from where it came in.
        self.assertEqual([op[0] for op in alice["ops"]], [1, 2, 3, 4, 5])
        self.assertEqual(bob["ops"][:-1], alice["ops"][1:])
        self.assertEqual(rita["ops"], bob["ops"][1:])
        self.assertEqual([op[1] for op in alice["ops"][:2]], ["join", "join"])
        self.assertEqual(
            sorted((op[2], op[3]) for op in alice["ops"][2:]),
            sorted(
                [(alice["clientId"], 1), (alice["clientId"], 2), (bob["clientId"], 1)]
            ),
        )
        self.assertEqual(bob["ops"][-1][:3], [6, "leave", None])
        for client in (alice, bob, rita):
            self.assertEqual(client["msns"], sorted(client["msns"]))
            self.assertEqual(client["signals"], [[alice["clientId"], '{"cursor":7}']])
        self.assertEqual(bob["nacks"], [[[400, "Gap detected in incoming op"]]])
        self.assertEqual(alice["nacks"] + rita["nacks"], [])
        self.assertEqual(rita["replay"], [[1, 2, 3, 4, 5]])
        self.assertEqual(alice["replay"] + bob["replay"], [])
        self.assertEqual(bob["systemSignals"], ["join", "join", "leave"])
        carl = result["carl"]
        # noops raised both writers' references, so the MSN moved up.
        self.assertGreater(carl["msnAfter"], carl["msnBefore"])
        self.assertLessEqual(carl["msnAfter"], carl["sequenceNumberAfter"])
        ((code, message),) = carl["staleNack"]
        self.assertEqual(code, 400)
        self.assertTrue(message.startswith("Refseq 0 < "), message)
        self.assertNotEqual(carl["oldId"], carl["newId"])
        self.assertTrue(carl["bobSawNewJoin"])
