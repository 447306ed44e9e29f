"""
Fan-out benchmark: N sockets joined to one topic, M broadcasts, deliveries
per second.  Runs Beryl (a real ``twistd beryl`` with the demo's feed:*
channel) and a minimal Autobahn broadcast server (bench/baseline_autobahn.py)
in the same run, each pinned to core 0 with the node load client on core 1,
and prints both rates and their ratio.

    python bench/fanout.py [--sockets 2000] [--messages 50] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listening on {port}")


def pinned(core: int, argv: list[str]) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", str(core)] + argv
    return argv


def start_server(kind: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    if kind == "beryl":
        twistd = str(Path(sys.executable).parent / "twistd")
        argv = [twistd, "-n", "--pidfile=", f"--logfile={log}", "beryl",
                "--port", f"tcp:{port}:interface=127.0.0.1:backlog=4096"]
    else:
        argv = [sys.executable, str(HERE / "baseline_autobahn.py"), str(port)]
    process = subprocess.Popen(pinned(0, argv), cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=open(log, "ab"))
    wait_for(port)
    return process


def run_measured(argv: list[str], pids: list[int], timeout: float = 180) -> dict[str, float]:
    """
    Run a load client that prints READY when its measured phase starts and
    then one JSON result line; add C{server_cpu}, the CPU seconds the
    server processes C{pids} used in between.
    """
    client = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert client.stdout is not None
    before = 0.0
    line = ""
    for line in client.stdout:
        if line.strip() == "READY":
            before = sum(cpu_seconds(pid) for pid in pids)
        else:
            break
    after = sum(cpu_seconds(pid) for pid in pids)
    client.wait(timeout)
    result: dict[str, float] = json.loads(line)
    if "error" in result:
        raise RuntimeError(f"{argv[1]}: {result}")
    result["server_cpu"] = after - before
    return result


def run_client(
    kind: str, port: int, sockets: int, messages: int, paced: bool, server: int
) -> dict[str, float]:
    """
    One fan-out round against one server.
    """
    path = "/socket/websocket?vsn=2.0.0" if kind == "beryl" else "/"
    argv = pinned(1, ["node", str(HERE / "fanout_client.js"), f"ws://127.0.0.1:{port}{path}",
                      str(sockets), str(messages), kind, "1" if paced else "0"])
    return run_measured(argv, [server])


def raise_file_limit() -> None:
    """
    Let this process and the servers and clients it starts open as many
    sockets as the machine allows.
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def cpu_seconds(pid: int) -> float:
    """
    User plus system CPU time of a process (and its children), from /proc.
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = sum(int(value) for value in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def measure(kind: str, sockets: int, messages: int, rounds: int, paced: bool) -> tuple[float, float]:
    """
    The best delivery rate over the rounds, and the server's CPU
    microseconds per delivery in that round.
    """
    port = free_port()
    best = (0.0, 0.0)
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(kind, port, Path(tmp) / f"{kind}.log")
        try:
            for _ in range(rounds):
                result = run_client(kind, port, sockets, messages, paced, server.pid)
                if result["rate"] > best[0]:
                    best = (result["rate"], result["server_cpu"] * 1e6 / result["deliveries"])
        finally:
            server.terminate()
            server.wait(10)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--sockets", type=int, default=2000)
    parser.add_argument("--messages", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--burst", action="store_true",
        help="send all messages at once (broadcasts batch into one send() per socket)",
    )
    args = parser.parse_args()
    raise_file_limit()
    paced = not args.burst
    beryl, beryl_cpu = measure("beryl", args.sockets, args.messages, args.rounds, paced)
    baseline, baseline_cpu = measure("baseline", args.sockets, args.messages, args.rounds, paced)
    mode = "burst" if args.burst else "paced"
    print(
        f"fanout ({mode}) N={args.sockets} M={args.messages}: "
        f"beryl {beryl:,.0f} deliveries/s ({beryl_cpu:.1f} us server CPU each), "
        f"autobahn baseline {baseline:,.0f} deliveries/s ({baseline_cpu:.1f} us each), "
        f"ratio {beryl / baseline:.2f}"
    )


if __name__ == "__main__":
    main()
