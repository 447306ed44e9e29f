"""
Workers benchmark: ``twistd beryl --workers 2`` against ``--workers 1``
in one run, for fan-out (deliveries per second) and inbound pings (replies
per second), with the server CPU per delivery or reply summed over the
parent and every worker.  ``--spread`` instead compares how evenly the two
ways of sharing the port spread connections over the workers
(``SO_REUSEPORT``, the default, against one socket inherited from the
parent).

    python bench/workers.py [--sockets 2000] [--messages 100] [--rounds 2]
    python bench/workers.py --spread [--connections 400]

Nothing is pinned: the workers and the node load client share this
machine's cores, so with two cores the client competes with the second
worker and the throughput figure says more about the cost per delivery
than about what a machine with spare cores gains.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import (  # noqa: E402
    HERE,
    ROOT,
    beryl_argv,
    free_port,
    raise_file_limit,
    run_measured,
)

from tests.interop.workers import connections_per_worker, worker_pids  # noqa: E402


class Server:
    """
    A running ``twistd beryl --workers N`` and the pids of its processes.
    """

    def __init__(self, workers: int, directory: str, sockets: str = "") -> None:
        self.port = free_port()
        self.workers = workers
        self.log = Path(directory) / f"workers{workers}-{self.port}.log"
        env = dict(os.environ)
        if sockets:
            env["BERYL_WORKER_SOCKETS"] = sockets
        argv = beryl_argv(self.port, self.log, "--workers", str(workers))
        self.process = subprocess.Popen(
            argv, cwd=ROOT, stdout=subprocess.DEVNULL, env=env
        )
        deadline = time.monotonic() + 60
        ready = "serving on" if workers > 1 else "Site starting on"
        while self._text().count(ready) < workers:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"the server did not start:\n{self._text()[-2000:]}")
            time.sleep(0.1)
        if workers > 1:
            while self._text().count(" is up ") < workers * (workers - 1):
                if time.monotonic() > deadline:
                    raise RuntimeError("the workers did not link up")
                time.sleep(0.1)

    def _text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def pids(self) -> list[int]:
        """
        The parent and every worker.
        """
        return [self.process.pid, *worker_pids(self._text()).values()]

    def worker_pids(self) -> dict[int, int]:
        return worker_pids(self._text()) or {1: self.process.pid}

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


def best(
    server: Server, client: list[str], rounds: int, count: str
) -> tuple[float, float]:
    """
    The best rate over the rounds, with the server CPU microseconds (all
    processes) per C{count} in that round.
    """
    result = (0.0, 0.0)
    for _ in range(rounds):
        measured = run_measured(client, server.pids())
        if measured["rate"] > result[0]:
            result = (
                measured["rate"],
                measured["server_cpu"] * 1e6 / measured[count],
            )
    return result


def fanout(workers: int, args: argparse.Namespace) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(workers, tmp)
        try:
            url = f"ws://127.0.0.1:{server.port}/socket/websocket?vsn=2.0.0"
            client = [
                "node",
                str(HERE / "fanout_client.js"),
                url,
                str(args.sockets),
                str(args.messages),
                "beryl",
                "1",
            ]
            return best(server, client, args.rounds, "deliveries")
        finally:
            server.stop()


def ping(workers: int, args: argparse.Namespace) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(workers, tmp)
        try:
            url = f"ws://127.0.0.1:{server.port}/socket/websocket?vsn=2.0.0"
            client = [
                "node",
                str(HERE / "ping_client.js"),
                url,
                str(args.ping_sockets),
                "10",
                str(args.pings),
                "beryl",
            ]
            return best(server, client, args.rounds, "replies")
        finally:
            server.stop()


def spread(how: str, connections: int) -> list[int]:
    """
    Open C{connections} TCP connections one after another to a two-worker
    server sharing its port C{how}; the number each worker accepted.
    """
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(2, tmp, sockets=how)
        opened = []
        try:
            for _ in range(connections):
                opened.append(socket.create_connection(("127.0.0.1", server.port)))
            time.sleep(1.0)
            pids = server.worker_pids()
            counts = connections_per_worker(server.port, pids.values())
            return [counts[pid] for _, pid in sorted(pids.items())]
        finally:
            for each in opened:
                each.close()
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--sockets", type=int, default=2000)
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--ping-sockets", type=int, default=200)
    parser.add_argument("--pings", type=int, default=100000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--spread", action="store_true")
    parser.add_argument("--connections", type=int, default=400)
    args = parser.parse_args()
    raise_file_limit()
    if args.spread:
        for how in ("reuseport", "inherit"):
            counts = spread(how, args.connections)
            print(
                f"spread of {args.connections} connections over 2 workers "
                f"({how}): {counts}, largest share {max(counts) / sum(counts):.0%}"
            )
        return
    one, one_cpu = fanout(1, args)
    two, two_cpu = fanout(2, args)
    print(
        f"fanout N={args.sockets} M={args.messages}: --workers 2 {two:,.0f} deliveries/s "
        f"({two_cpu:.1f} us server CPU each, all processes), --workers 1 {one:,.0f} "
        f"deliveries/s ({one_cpu:.1f} us each); rate x{two / one:.2f}, "
        f"CPU per delivery x{two_cpu / one_cpu:.2f}"
    )
    one, one_cpu = ping(1, args)
    two, two_cpu = ping(2, args)
    print(
        f"ping S={args.ping_sockets}: --workers 2 {two:,.0f} replies/s "
        f"({two_cpu:.1f} us server CPU each, all processes), --workers 1 {one:,.0f} "
        f"replies/s ({one_cpu:.1f} us each); rate x{two / one:.2f}, "
        f"CPU per reply x{two_cpu / one_cpu:.2f}"
    )


if __name__ == "__main__":
    main()
