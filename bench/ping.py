"""
Inbound benchmark: client pushes answered per second.  Many sockets keep
pings in flight on the demo's feed:* channel (each answered with an ok
reply echoing the payload); the baseline is a minimal Autobahn echo server
(bench/baseline_echo.py).  Servers on core 0, the node client on core 1.

    python bench/ping.py [--sockets 200] [--window 10] [--total 200000]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fanout import HERE, ROOT, free_port, raise_file_limit, pinned, run_measured, wait_for  # noqa: E402


def start(kind: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    if kind == "beryl":
        argv = [str(Path(sys.executable).parent / "twistd"), "-n", "--pidfile=",
                f"--logfile={log}", "beryl", "--port", f"tcp:{port}:interface=127.0.0.1:backlog=4096"]
    else:
        argv = [sys.executable, str(HERE / "baseline_echo.py"), str(port)]
    process = subprocess.Popen(pinned(0, argv), cwd=ROOT, stdout=subprocess.DEVNULL)
    wait_for(port)
    return process


def measure(kind: str, sockets: int, window: int, total: int, rounds: int) -> tuple[float, float]:
    port = free_port()
    path = "/socket/websocket?vsn=2.0.0" if kind == "beryl" else "/"
    best = (0.0, 0.0)
    with tempfile.TemporaryDirectory() as tmp:
        server = start(kind, port, Path(tmp) / "server.log")
        try:
            for _ in range(rounds):
                result = run_measured(
                    pinned(1, ["node", str(HERE / "ping_client.js"), f"ws://127.0.0.1:{port}{path}",
                               str(sockets), str(window), str(total), kind]),
                    [server.pid],
                )
                used = result["server_cpu"]
                if result["rate"] > best[0]:
                    best = (result["rate"], used * 1e6 / result["replies"])
        finally:
            server.terminate()
            server.wait(10)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--sockets", type=int, default=200)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--total", type=int, default=200000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    raise_file_limit()
    beryl, beryl_cpu = measure("beryl", args.sockets, args.window, args.total, args.rounds)
    baseline, baseline_cpu = measure("baseline", args.sockets, args.window, args.total, args.rounds)
    print(
        f"ping S={args.sockets} window={args.window}: beryl {beryl:,.0f} replies/s "
        f"({beryl_cpu:.1f} us server CPU each), autobahn echo {baseline:,.0f} replies/s "
        f"({baseline_cpu:.1f} us each), ratio {beryl / baseline:.2f}"
    )


if __name__ == "__main__":
    main()
