"""
Capacity and memory benchmark: N sockets on one ``twistd beryl``, each
joined to a demo room (100 users a room) and tracked in presence; reports
the server's RSS growth per joined socket, against the RSS of the same
server with no sockets (the baseline in the same run).

    python bench/capacity.py [--sockets 18000]

The server needs N + a few file descriptors; this machine allows 20,000
per process.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    HERE,
    ROOT,
    beryl_argv,
    free_port,
    pinned,
    raise_file_limit,
    wait_for,
)  # noqa: E402


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--sockets", type=int, default=18000)
    parser.add_argument("--per-room", type=int, default=100)
    args = parser.parse_args()
    raise_file_limit()
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        argv = beryl_argv(port, Path(tmp) / "server.log")
        server = subprocess.Popen(pinned(0, argv), cwd=ROOT, stdout=subprocess.DEVNULL)
        try:
            wait_for(port)
            time.sleep(0.5)
            idle = rss_kib(server.pid)
            started = time.monotonic()
            client = subprocess.Popen(
                pinned(
                    1,
                    [
                        "node",
                        str(HERE / "capacity_client.js"),
                        f"ws://127.0.0.1:{port}/socket/websocket?vsn=2.0.0",
                        str(args.sockets),
                        str(args.per_room),
                    ],
                ),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert client.stdout is not None and client.stdin is not None
            line = client.stdout.readline().strip()
            if line != "READY":
                raise RuntimeError(f"client: {line}")
            seconds = time.monotonic() - started
            time.sleep(1)
            loaded = rss_kib(server.pid)
            client.stdin.write("done\n")
            client.stdin.flush()
            client.wait(60)
        finally:
            server.terminate()
            server.wait(10)
    per_socket = (loaded - idle) * 1024 / args.sockets
    print(
        f"capacity: {args.sockets} joined sockets with presence in {seconds:.1f} s; "
        f"server RSS {idle / 1024:.0f} MiB idle (baseline) -> {loaded / 1024:.0f} MiB, "
        f"{per_socket / 1024:.1f} KiB per joined socket"
    )


if __name__ == "__main__":
    main()
