"""
Instructions per ping: the CPU instructions a real C{twistd beryl} spends
per ping reply, counted by valgrind's callgrind over a fixed number of
pings from bench/ping_client.js.  A count does not move with the machine's
load the way a rate does, so it can show a difference of a few percent
(the cost of metrics, a change to the hot path) that timings on a busy
machine hide.  It needs C{valgrind}; the server runs about 50 times slower
under it.

    python bench/instructions.py [--pings 20000] [--compare-metrics]
    python bench/instructions.py --fanout [--subscribers 200] [--messages 250]

C{--fanout} counts per broadcast delivery instead.  Without
C{--compare-metrics} it counts the default server once; with it, the
server with metrics on (the default) against C{--no-metrics}.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import HERE, ROOT, beryl_argv, free_port, wait_for  # noqa: E402


def total_instructions(dump: Path) -> int:
    """
    The instruction total of a callgrind output file.
    """
    for line in dump.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {dump}")


def ping(port: int, sockets: int, pings: int) -> None:
    """
    Join C{sockets} sockets and send C{pings} pings, ten in flight on each.
    """
    url = f"ws://127.0.0.1:{port}/socket/websocket?vsn=2.0.0"
    subprocess.run(
        [
            "node",
            str(HERE / "ping_client.js"),
            url,
            str(sockets),
            "10",
            str(pings),
            "beryl",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        timeout=600,
    )


def fanout(port: int, sockets: int, messages: int) -> None:
    """
    Join C{sockets} sockets and broadcast C{messages} messages to them all,
    one at a time.
    """
    url = f"ws://127.0.0.1:{port}/socket/websocket?vsn=2.0.0"
    subprocess.run(
        [
            "node",
            str(HERE / "fanout_client.js"),
            url,
            str(sockets),
            str(messages),
            "beryl",
            "1",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        timeout=600,
    )


def counted(
    options: tuple[str, ...],
    warm_up: Callable[[int], None],
    *runs: Callable[[int], None],
) -> list[int]:
    """
    Start a server under callgrind, run C{warm_up} against it, then each of
    C{runs}, and return the instructions each run took: the counters are
    zeroed before a run and dumped after it.
    """
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        argv = beryl_argv(port, Path(tmp) / "beryl.log", *options)
        server = subprocess.Popen(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                sys.executable,
                *argv,
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        totals: list[int] = []
        try:
            wait_for(port, timeout=300)
            warm_up(port)
            for number, run in enumerate(runs, 1):
                control(server.pid, "--zero")
                run(port)
                control(server.pid, f"--dump=run{number}")
                (dump,) = Path(tmp).glob(f"callgrind.out.{number}*")
                totals.append(total_instructions(dump))
        finally:
            server.terminate()
            server.wait(120)
        return totals


def control(pid: int, command: str) -> None:
    subprocess.run(
        ["callgrind_control", command, str(pid)],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def per_ping(options: tuple[str, ...], sockets: int, pings: int) -> float:
    """
    Server instructions per ping reply.
    """
    (total,) = counted(
        options,
        lambda port: ping(port, sockets, max(pings // 10, 1000)),
        lambda port: ping(port, sockets, pings),
    )
    return total / pings


def per_delivery(options: tuple[str, ...], sockets: int, messages: int) -> float:
    """
    Server instructions per broadcast delivery: the difference between
    C{messages} broadcasts and a fifth of them, so that the sockets'
    connects and joins cancel out.
    """
    few = max(messages // 5, 1)
    fewer, more = counted(
        options,
        lambda port: fanout(port, sockets, few),
        lambda port: fanout(port, sockets, few),
        lambda port: fanout(port, sockets, messages),
    )
    return (more - fewer) / (sockets * (messages - few))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--sockets", type=int, default=20)
    parser.add_argument("--pings", type=int, default=20000)
    parser.add_argument(
        "--fanout",
        action="store_true",
        help="count per broadcast delivery (--subscribers sockets, --messages "
        "broadcasts) instead of per ping",
    )
    parser.add_argument("--subscribers", type=int, default=200)
    parser.add_argument("--messages", type=int, default=250)
    parser.add_argument(
        "--compare-metrics",
        action="store_true",
        help="count with metrics on and off (--no-metrics)",
    )
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit(
            "bench/instructions.py needs valgrind (apt-get install valgrind)"
        )
    if args.fanout:
        unit = "delivery"
        detail = f"{args.subscribers} sockets, {args.messages} broadcasts"

        def measure(options: tuple[str, ...]) -> float:
            return per_delivery(options, args.subscribers, args.messages)

    else:
        unit = "ping reply"
        detail = f"{args.pings} pings"

        def measure(options: tuple[str, ...]) -> float:
            return per_ping(options, args.sockets, args.pings)

    on = measure(())
    if not args.compare_metrics:
        print(f"instructions: {on:,.0f} per {unit} ({detail})")
        return
    off = measure(("--no-metrics",))
    print(
        f"instructions metrics: on {on:,.0f} per {unit}, off {off:,.0f}, "
        f"cost {(on / off - 1) * 100:+.1f}% ({detail})"
    )


if __name__ == "__main__":
    main()
