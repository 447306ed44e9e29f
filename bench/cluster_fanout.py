"""
Cluster broadcast benchmark: N sockets spread evenly over three ``twistd
beryl`` nodes linked over AMP, one sender on node 1, M broadcasts;
deliveries per second and server CPU per delivery (all three nodes),
against a single node with the same N in the same run.

    python bench/cluster_fanout.py [--sockets 2000] [--messages 100]
    python bench/cluster_fanout.py --backplane redis   # also three nodes over Redis

With ``--backplane redis`` the same three nodes linked through a
``redis-server`` (started on a free port, persistence off) are measured in
the same run; their CPU per delivery is given for the nodes alone and with
the Redis server's CPU added.

The three nodes share this machine's two cores with the load client, so
the figure measures the cluster's cost per delivery (each broadcast crosses
to each remote node once, then fans out there), not a three-machine
throughput.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    HERE,
    ROOT,
    beryl_argv,
    cpu_seconds,
    free_port,
    raise_file_limit,
    run_measured,
    wait_for,
)  # noqa: E402


def start_node(
    port: int,
    cluster_port: int,
    peers: list[int],
    log: Path,
    backplane: str | None = None,
    name: str = "",
) -> subprocess.Popen[bytes]:
    if backplane is not None:
        argv = beryl_argv(port, log, "--backplane", backplane, "--node-name", name)
    else:
        argv = beryl_argv(
            port, log, "--cluster-port", f"tcp:{cluster_port}:interface=127.0.0.1"
        )
    if peers and backplane is None:
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


def start_redis(directory: str) -> tuple[subprocess.Popen[bytes], str]:
    """
    A redis-server on a free loopback port, persistence off; its URL.
    """
    executable = shutil.which("redis-server") or shutil.which("valkey-server")
    if executable is None:
        raise SystemExit(
            "--backplane redis needs redis-server (apt-get install redis-server)"
        )
    port = free_port()
    process = subprocess.Popen(
        [
            executable,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        cwd=directory,
        stdout=subprocess.DEVNULL,
    )
    wait_for(port)
    return process, f"redis://127.0.0.1:{port}/0"


def measure(
    nodes: int, sockets: int, messages: int, rounds: int, redis: bool = False
) -> tuple[float, float, float]:
    """
    The best rate, with the server CPU per delivery of the nodes and of the
    nodes plus Redis, in that round.
    """
    ports = [free_port() for _ in range(nodes)]
    cluster_ports = [free_port() for _ in range(nodes)]
    processes = []
    with tempfile.TemporaryDirectory() as tmp:
        logs = [Path(tmp) / f"node{i}.log" for i in range(nodes)]
        redis_process, backplane = start_redis(tmp) if redis else (None, None)
        try:
            for i in range(nodes):
                processes.append(
                    start_node(
                        ports[i],
                        cluster_ports[i],
                        cluster_ports[:1] if i else [],
                        logs[i],
                        backplane,
                        f"n{i + 1}",
                    )
                )
            if nodes > 1:
                wait_for_mesh(logs)
            urls = ",".join(
                f"ws://127.0.0.1:{p}/socket/websocket?vsn=2.0.0" for p in ports
            )
            best = (0.0, 0.0, 0.0)
            pids = [p.pid for p in processes]
            for _ in range(rounds):
                before = cpu_seconds(redis_process.pid) if redis_process else 0.0
                rate, cpu, deliveries = run_client_multi(urls, sockets, messages, pids)
                after = cpu_seconds(redis_process.pid) if redis_process else 0.0
                if rate > best[0]:
                    best = (rate, cpu, cpu + (after - before) * 1e6 / deliveries)
            return best
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(10)
            if redis_process is not None:
                redis_process.terminate()
                redis_process.wait(10)


def run_client_multi(
    urls: str, sockets: int, messages: int, pids: list[int]
) -> tuple[float, float, float]:
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
    deliveries = result["deliveries"]
    return result["rate"], result["server_cpu"] * 1e6 / deliveries, deliveries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--sockets", type=int, default=2000)
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--backplane", choices=["redis"], default=None)
    args = parser.parse_args()
    raise_file_limit()
    single, single_cpu, _ = measure(1, args.sockets, args.messages, args.rounds)
    cluster, cluster_cpu, _ = measure(3, args.sockets, args.messages, args.rounds)
    print(
        f"cluster fanout N={args.sockets} M={args.messages}: 3 nodes over AMP {cluster:,.0f} deliveries/s "
        f"({cluster_cpu:.1f} us server CPU each, all nodes), single node {single:,.0f} deliveries/s "
        f"({single_cpu:.1f} us each), ratio {cluster / single:.2f}"
    )
    if args.backplane == "redis":
        redis, redis_cpu, with_redis = measure(
            3, args.sockets, args.messages, args.rounds, redis=True
        )
        print(
            f"  3 nodes over Redis {redis:,.0f} deliveries/s ({redis_cpu:.1f} us server CPU "
            f"each, all nodes; {with_redis:.1f} us with redis-server), ratio to single "
            f"{redis / single:.2f}, to AMP {redis / cluster:.2f}"
        )


if __name__ == "__main__":
    main()
