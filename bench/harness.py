"""
What the benchmarks share: free ports, pinning to a core, starting a
server and running a load client while measuring the server's CPU time.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

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


def run_measured(
    argv: list[str], pids: list[int], timeout: float = 180
) -> dict[str, float]:
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


def beryl_argv(port: int, log: Path, *options: str) -> list[str]:
    """
    A real C{twistd beryl} (the demo app) on loopback C{port}.  Load
    clients send far faster than a person: the per-socket message rate
    limit is raised out of their way (it is still checked on every
    message, so its cost is measured).
    """
    twistd = str(Path(sys.executable).parent / "twistd")
    return [
        twistd,
        "-n",
        "--pidfile=",
        f"--logfile={log}",
        "beryl",
        "--port",
        f"tcp:{port}:interface=127.0.0.1:backlog=4096",
        "--max-message-rate",
        "1000000",
        "--message-burst",
        "1000000",
        *options,
    ]


def best_of(
    server_argv: list[str], port: int, client_argv: list[str], rounds: int, count: str
) -> tuple[float, float]:
    """
    Start a server pinned to core 0, run the client (pinned to core 1)
    C{rounds} times, and return its best C{rate} and the least server CPU
    microseconds per C{count} (the result field counting the work) over
    the rounds.
    """
    ((rate, cpu),) = _interleaved(
        [(server_argv, port)], lambda _: client_argv, rounds, count
    )
    return rate, cpu


def _interleaved(
    servers: list[tuple[list[str], int]],
    client: Callable[[int], list[str]],
    rounds: int,
    count: str,
) -> list[tuple[float, float]]:
    """
    Start every server of C{servers} (argv and port; all pinned to core 0,
    only one loaded at a time) and run C{client(port)} (pinned to core 1)
    against each in turn, C{rounds} times over.  Taking turns puts any
    drift of the machine on all of them alike, which matters when they
    differ by a few percent.

    @return: for each server, its best C{rate} and its least server CPU
        microseconds per C{count} over the rounds.
    """
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for argv, port in servers:
            processes.append(
                subprocess.Popen(
                    pinned(0, argv),
                    cwd=ROOT,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            wait_for(port)
        best = [(0.0, float("inf")) for _ in servers]
        for _ in range(rounds):
            for i, ((_, port), process) in enumerate(
                zip(servers, processes, strict=True)
            ):
                result = run_measured(pinned(1, client(port)), [process.pid])
                rate, cpu = best[i]
                best[i] = (
                    max(rate, result["rate"]),
                    min(cpu, result["server_cpu"] * 1e6 / result[count]),
                )
        return best
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(10)


def compare_metrics(
    name: str, client: Callable[[str], list[str]], rounds: int, count: str
) -> str:
    """
    Run C{client(url)} against Beryl with metrics on (the default) and with
    C{--no-metrics}, taking turns (L{_interleaved}), and say what metrics
    cost in server CPU per C{count}.
    """
    with tempfile.TemporaryDirectory() as tmp:
        on_port, off_port = free_port(), free_port()
        (on, on_cpu), (off, off_cpu) = _interleaved(
            [
                (beryl_argv(on_port, Path(tmp) / "on.log"), on_port),
                (beryl_argv(off_port, Path(tmp) / "off.log", "--no-metrics"), off_port),
            ],
            lambda port: client(f"ws://127.0.0.1:{port}/socket/websocket?vsn=2.0.0"),
            rounds,
            count,
        )
    return (
        f"{name} metrics: on {on:,.0f} {count}/s ({on_cpu:.2f} us server CPU "
        f"each), off {off:,.0f} {count}/s ({off_cpu:.2f} us each), CPU cost "
        f"{(on_cpu / off_cpu - 1) * 100:+.1f}%"
    )
