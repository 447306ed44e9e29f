"""
Cluster broadcast benchmark: N sockets spread evenly over three ``twistd
beryl`` nodes linked over AMP, one sender on node 1, M broadcasts;
deliveries per second and server CPU per delivery (all three nodes),
against a single node with the same N in the same run.

    python bench/cluster_fanout.py [--sockets 2000] [--messages 100]

The three nodes share this machine's two cores with the load client, so
the figure measures the cluster's cost per delivery (each broadcast crosses
to each remote node once, then fans out there), not a three-machine
throughput.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    HERE,
    ROOT,
    beryl_argv,
    free_port,
    raise_file_limit,
    run_measured,
    wait_for,
)  # noqa: E402


def start_node(
    port: int, cluster_port: int, peers: list[int], log: Path
) -> subprocess.Popen[bytes]:
    argv = beryl_argv(
        port, log, "--cluster-port", f"tcp:{cluster_port}:interface=127.0.0.1"
    )
    if peers:
        argv += ["--peers", ",".join(f"127.0.0.1:{p}" for p in peers)]
    process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL)
    wait_for(port)
    return process


def wait_for_mesh(logs: list[Path], timeout: float = 20.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(log.read_text().count(" is up ") >= len(logs) - 1 for log in logs):
            return
        time.sleep(0.2)
    raise RuntimeError("the cluster did not form")


def measure(
    nodes: int, sockets: int, messages: int, rounds: int
) -> tuple[float, float]:
    ports = [free_port() for _ in range(nodes)]
    cluster_ports = [free_port() for _ in range(nodes)]
    processes = []
    with tempfile.TemporaryDirectory() as tmp:
        logs = [Path(tmp) / f"node{i}.log" for i in range(nodes)]
        try:
            for i in range(nodes):
                processes.append(
                    start_node(
                        ports[i],
                        cluster_ports[i],
                        cluster_ports[:1] if i else [],
                        logs[i],
                    )
                )
            if nodes > 1:
                wait_for_mesh(logs)
            urls = ",".join(
                f"ws://127.0.0.1:{p}/socket/websocket?vsn=2.0.0" for p in ports
            )
            best = (0.0, 0.0)
            for _ in range(rounds):
                result = run_client_multi(
                    urls, sockets, messages, [p.pid for p in processes]
                )
                if result[0] > best[0]:
                    best = result
            return best
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(10)


def run_client_multi(
    urls: str, sockets: int, messages: int, pids: list[int]
) -> tuple[float, float]:
    result = run_measured(
        [
            "node",
            str(HERE / "fanout_client.js"),
            urls,
            str(sockets),
            str(messages),
            "beryl",
            "1",
        ],
        pids,
    )
    return result["rate"], result["server_cpu"] * 1e6 / result["deliveries"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--sockets", type=int, default=2000)
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    raise_file_limit()
    single, single_cpu = measure(1, args.sockets, args.messages, args.rounds)
    cluster, cluster_cpu = measure(3, args.sockets, args.messages, args.rounds)
    print(
        f"cluster fanout N={args.sockets} M={args.messages}: 3 nodes {cluster:,.0f} deliveries/s "
        f"({cluster_cpu:.1f} us server CPU each, all nodes), single node {single:,.0f} deliveries/s "
        f"({single_cpu:.1f} us each), ratio {cluster / single:.2f}"
    )


if __name__ == "__main__":
    main()
