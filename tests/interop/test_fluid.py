"""
The real Fluid loader and runtime from npm (container-loader, fluid-static,
map) on a small driver of the tests' own (fluid_driver.js: Beryl's storage
REST API and a Phoenix-channel delta stream) against real C{twistd beryl
--levee} processes: create and attach, a second client loads, concurrent
writes converge, the runtime's summarizer gets two summaries acknowledged
(Beryl writes their .protocol tree, as scribe does), the server restarts,
and a third client loads from the newest summary plus deltas.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.interop.harness import INTEROP_DIR, BerylServer, free_port, node_executable

TENANT = "fluid"
SECRET = "an-interop-secret-of-at-least-32-bytes"


class FluidLoaderTests(SynchronousTestCase):
    """A SharedMap container through create, collaboration, summary and restart."""

    def server(self, directory: Path, number: int) -> BerylServer:
        """Start twistd beryl --levee on the document data in C{directory}."""
        server = BerylServer(
            directory / f"beryl{number}.log",
            [
                "--levee",
                "--levee-tenant",
                f"{TENANT}:{SECRET}",
                "--levee-dev-token-mint",
                "--levee-data",
                str(directory / "data"),
            ],
            free_port(),
        )
        self.addCleanup(server.stop)
        server.start()
        return server

    def run_stage(self, server: BerylServer, stage: str, **args: Any) -> Any:
        """Run one stage of fluid_e2e.js; return its result."""
        base = f"127.0.0.1:{server.port}"
        argument = {
            "stage": stage,
            "httpUrl": f"http://{base}",
            "socketUrl": f"ws://{base}/socket",
            "tenantId": TENANT,
            **args,
        }
        process = subprocess.run(
            [node_executable(self), "fluid_e2e.js", json.dumps(argument)],
            cwd=INTEROP_DIR,
            capture_output=True,
            timeout=150,
        )
        lines = process.stdout.decode(errors="replace").strip().splitlines()
        report = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
        if process.returncode != 0 or "result" not in report:
            self.fail(
                f"fluid_e2e.js {stage} exited with {process.returncode}: "
                f"{lines[-1:] or 'no output'}\nserver log:\n{server.log()[-4000:]}"
            )
        return report["result"]

    def test_shared_map_end_to_end(self) -> None:
        """Create, load, converge, summarize, restart, reload from summary plus deltas."""
        directory = Path(self.mktemp())
        directory.mkdir(parents=True)
        first = self.server(directory, 1)
        result = self.run_stage(first, "collaborate")
        self.assertEqual(result["bobFirst"], {"alice": 1, "created": "before attach"})
        converged = result["converged"]
        self.assertEqual(converged["shared"], "bob-14")
        self.assertEqual(
            {key for key in converged if key[0] in "ab" and key[1:].isdigit()},
            {f"{who}{i}" for who in "ab" for i in range(15)},
        )
        acks = [s for s in result["summaries"] if s["type"] == "summaryAck"]
        self.assertGreaterEqual(len(acks), 2)
        self.assertEqual([len(ack["contents"]["handle"]) for ack in acks[:2]], [40, 40])
        self.assertEqual(
            [s["type"] for s in result["summaries"]], ["summaryAck"] * len(acks)
        )
        later = {f"c{i}": i for i in range(25)}
        self.assertEqual(result["final"], {**converged, **later, "after summary": True})
        first.stop()
        self.assertIn("Server Shut Down.", first.log())

        second = self.server(directory, 2)
        reloaded = self.run_stage(second, "reload", documentId=result["documentId"])
        self.assertEqual(reloaded["values"], result["final"])
        # Loaded from the newest acknowledged summary: it was made after the
        # first summary's summarize op.
        first_proposal = acks[0]["contents"]["summaryProposal"]["summarySequenceNumber"]
        self.assertGreater(reloaded["initialSequenceNumber"], first_proposal)
