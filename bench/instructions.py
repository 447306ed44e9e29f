"""
Instructions per ping: the CPU instructions a real C{twistd beryl} spends
per ping reply, counted by valgrind's callgrind over a fixed number of
pings from bench/ping_client.js.  A count does not move with the machine's
load the way a rate does, so it can show a difference of a few percent
(the cost of metrics, a change to the hot path) that timings on a busy
machine hide.  It needs C{valgrind}; the server runs about 50 times slower
under it.

    python bench/instructions.py [--pings 20000] [--compare-metrics]

Without C{--compare-metrics} it counts the default server once; with it,
the server with metrics on (the default) against C{--no-metrics}.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

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


def measure(options: tuple[str, ...], sockets: int, pings: int) -> float:
    """
    Server instructions per ping reply: a warm-up round, then the counters
    are zeroed and C{pings} pings are counted.
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
        try:
            wait_for(port, timeout=300)
            ping(port, sockets, max(pings // 10, 1000))
            subprocess.run(
                ["callgrind_control", "--zero", str(server.pid)],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            ping(port, sockets, pings)
            subprocess.run(
                ["callgrind_control", "--dump=measured", str(server.pid)],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        finally:
            server.terminate()
            server.wait(120)
        (dump,) = Path(tmp).glob("callgrind.out.*")
        return total_instructions(dump) / pings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--sockets", type=int, default=20)
    parser.add_argument("--pings", type=int, default=20000)
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
    on = measure((), args.sockets, args.pings)
    if not args.compare_metrics:
        print(f"instructions: {on:,.0f} per ping reply ({args.pings} pings)")
        return
    off = measure(("--no-metrics",), args.sockets, args.pings)
    print(
        f"instructions metrics: on {on:,.0f} per ping reply, off {off:,.0f}, "
        f"cost {(on / off - 1) * 100:+.1f}% ({args.pings} pings)"
    )


if __name__ == "__main__":
    main()
