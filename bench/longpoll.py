"""
Long-poll benchmark: broadcast throughput and server memory per session
over long-poll, against the WebSocket path in the same run (same server,
same official phoenix client, same channel).

    python bench/longpoll.py [--sockets 200] [--messages 200] [--sessions 1000]

Throughput: N clients join C{feed:bench}; one pushes M messages, each
broadcast to all N; the rate is deliveries per second until every client
has every message, with the server's CPU microseconds per delivery.
Memory: the server's RSS growth per joined session, for S idle sessions
of each kind.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402
    HERE,
    ROOT,
    beryl_argv,
    free_port,
    pinned,
    raise_file_limit,
    run_measured,
    wait_for,
)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def client_argv(
    port: int, transport: str, count: int, messages: int, mode: str
) -> list[str]:
    return [
        "node",
        str(HERE / "longpoll_client.js"),
        f"ws://127.0.0.1:{port}/socket",
        transport,
        str(count),
        str(messages),
        mode,
    ]


def memory_per_session(transport: str, sessions: int) -> float:
    """
    The RSS growth in KiB per joined session of C{transport}, on a fresh
    server (memory freed by an earlier run would hide the cost).
    """
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen(
            pinned(0, beryl_argv(port, Path(tmp) / "server.log")),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )
        try:
            wait_for(port)
            time.sleep(0.5)
            before = rss_kib(server.pid)
            client = subprocess.Popen(
                pinned(1, client_argv(port, transport, sessions, 0, "memory")),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert client.stdin is not None and client.stdout is not None
            line = client.stdout.readline().strip()
            if line != "READY":
                raise RuntimeError(f"{transport} memory client: {line}")
            time.sleep(1)
            after = rss_kib(server.pid)
            client.stdin.write("done\n")
            client.stdin.flush()
            client.wait(60)
        finally:
            server.terminate()
            server.wait(10)
    return (after - before) / sessions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--sockets", type=int, default=200)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    raise_file_limit()
    port = free_port()
    results: dict[str, tuple[float, float]] = {}
    memory: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen(
            pinned(0, beryl_argv(port, Path(tmp) / "server.log")),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )
        try:
            wait_for(port)
            time.sleep(0.5)
            for transport in ("websocket", "longpoll"):
                best = (0.0, 0.0)
                for _ in range(args.rounds):
                    result = run_measured(
                        pinned(
                            1,
                            client_argv(
                                port,
                                transport,
                                args.sockets,
                                args.messages,
                                "throughput",
                            ),
                        ),
                        [server.pid],
                    )
                    if result["rate"] > best[0]:
                        best = (
                            result["rate"],
                            result["server_cpu"] * 1e6 / result["deliveries"],
                        )
                results[transport] = best
        finally:
            server.terminate()
            server.wait(10)
    for transport in ("websocket", "longpoll"):
        memory[transport] = memory_per_session(transport, args.sessions)
    ws_rate, ws_cpu = results["websocket"]
    lp_rate, lp_cpu = results["longpoll"]
    print(
        f"longpoll: {args.sockets} clients x {args.messages} broadcasts: "
        f"long-poll {lp_rate:,.0f} deliveries/s ({lp_cpu:.1f} us server CPU each) vs "
        f"WebSocket (baseline) {ws_rate:,.0f}/s ({ws_cpu:.1f} us), "
        f"ratio {lp_rate / ws_rate:.2f}; memory per joined session: long-poll "
        f"{memory['longpoll']:.1f} KiB vs WebSocket {memory['websocket']:.1f} KiB "
        f"({args.sessions} each)"
    )


if __name__ == "__main__":
    main()
