"""
Inbound benchmark: client pushes answered per second.  Many sockets keep
pings in flight on the demo's feed:* channel (each answered with an ok
reply echoing the payload); the baseline is a minimal Autobahn echo server
(bench/baseline_echo.py).  Servers on core 0, the node client on core 1.

    python bench/ping.py [--sockets 200] [--window 10] [--total 200000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402
    HERE,
    beryl_argv,
    best_of,
    compare_metrics,
    free_port,
    raise_file_limit,
)


def measure(
    kind: str,
    sockets: int,
    window: int,
    total: int,
    rounds: int,
    options: tuple[str, ...] = (),
) -> tuple[float, float]:
    """
    The best reply rate over the rounds, and the server's CPU microseconds
    per reply in that round.
    """
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        if kind == "beryl":
            server = beryl_argv(port, Path(tmp) / "beryl.log", *options)
            url = f"ws://127.0.0.1:{port}/socket/websocket?vsn=2.0.0"
        else:
            server = [sys.executable, str(HERE / "baseline_echo.py"), str(port)]
            url = f"ws://127.0.0.1:{port}/"
        client = client_argv(url, sockets, window, total, kind)
        return best_of(server, port, client, rounds, "replies")


def client_argv(
    url: str, sockets: int, window: int, total: int, kind: str
) -> list[str]:
    """
    The load client's command line.
    """
    return [
        "node",
        str(HERE / "ping_client.js"),
        url,
        str(sockets),
        str(window),
        str(total),
        kind,
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--sockets", type=int, default=200)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--total", type=int, default=200000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--compare-metrics",
        action="store_true",
        help="instead of the baseline, run Beryl with metrics on and off (--no-metrics), taking turns; reports the least CPU per reply of each",
    )
    args = parser.parse_args()
    raise_file_limit()
    if args.compare_metrics:
        print(
            compare_metrics(
                "ping",
                lambda url: client_argv(
                    url, args.sockets, args.window, args.total, "beryl"
                ),
                args.rounds,
                "replies",
            )
        )
        return
    beryl, beryl_cpu = measure(
        "beryl", args.sockets, args.window, args.total, args.rounds
    )
    baseline, baseline_cpu = measure(
        "baseline", args.sockets, args.window, args.total, args.rounds
    )
    print(
        f"ping S={args.sockets} window={args.window}: beryl {beryl:,.0f} replies/s "
        f"({beryl_cpu:.1f} us server CPU each), autobahn echo {baseline:,.0f} replies/s "
        f"({baseline_cpu:.1f} us each), ratio {beryl / baseline:.2f}"
    )


if __name__ == "__main__":
    main()
