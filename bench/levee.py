"""
Levee benchmarks against a real ``twistd beryl --levee``:

  - writers: ops/s sequenced and delivered to every writer, for 10 writers
    on one document, with the op log in SQLite (the default) and, as the
    baseline in the same run, in an in-memory SQLite database run on the reactor thread
    (``--levee-data :memory:``);
  - load: time for the real Fluid loader to load a SharedMap document with
    10,000 ops since its last summary, against the same keys held in the
    summary itself (the baseline).

    python bench/levee.py [--writers 10] [--ops 2000] [--load-ops 10000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402
    HERE,
    ROOT,
    beryl_argv,
    best_of,
    free_port,
    pinned,
    wait_for,
)

LEVEE = ["--levee", "--levee-insecure-dev-tokens"]


def writers(data: str, count: int, ops: int, rounds: int) -> tuple[float, float]:
    """Best ops/s and server CPU microseconds per op."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        directory = data if data == ":memory:" else str(Path(tmp) / "data")
        server = beryl_argv(
            port, Path(tmp) / "beryl.log", *LEVEE, "--levee-data", directory
        )
        client = [
            "node",
            str(HERE / "levee_writers.js"),
            f"ws://127.0.0.1:{port}/socket",
            str(count),
            str(ops),
        ]
        return best_of(server, port, client, rounds, "ops")


def load_times(ops: int, rounds: int) -> dict[str, float]:
    """Best load time of a document with C{ops} deltas, and of one without."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen(
            pinned(
                0,
                beryl_argv(
                    port,
                    Path(tmp) / "beryl.log",
                    *LEVEE,
                    "--levee-data",
                    str(Path(tmp) / "data"),
                ),
            ),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for(port)
            client = subprocess.run(
                pinned(
                    1,
                    [
                        "node",
                        str(HERE / "levee_load.js"),
                        f"http://127.0.0.1:{port}",
                        f"ws://127.0.0.1:{port}/socket",
                        str(ops),
                        str(rounds),
                    ],
                ),
                capture_output=True,
                text=True,
                timeout=900,
            )
            result: dict[str, float] = json.loads(
                client.stdout.strip().splitlines()[-1]
            )
            if "error" in result:
                raise RuntimeError(f"levee_load.js: {result['error']}")
            return result
        finally:
            server.terminate()
            server.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--writers", type=int, default=10)
    parser.add_argument("--ops", type=int, default=2000, help="ops per writer")
    parser.add_argument("--load-ops", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sqlite, sqlite_cpu = writers("disk", args.writers, args.ops, args.rounds)
    memory, memory_cpu = writers(":memory:", args.writers, args.ops, args.rounds)
    print(
        f"levee writers W={args.writers} ops={args.writers * args.ops}: "
        f"sqlite {sqlite:,.0f} ops/s ({sqlite_cpu:.0f} us server CPU each), "
        f"in-memory baseline {memory:,.0f} ops/s ({memory_cpu:.0f} us each), "
        f"ratio {sqlite / memory:.2f}"
    )
    times = load_times(args.load_ops, args.rounds)
    print(
        f"levee load: {args.load_ops:,} ops since the last summary "
        f"{times['deltas'] * 1000:,.0f} ms, the same keys in the summary "
        f"(baseline) {times['summary'] * 1000:,.0f} ms, "
        f"ratio {times['deltas'] / times['summary']:.2f}"
    )


if __name__ == "__main__":
    main()
