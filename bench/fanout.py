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
    messages: int,
    rounds: int,
    paced: bool,
    options: tuple[str, ...] = (),
) -> tuple[float, float]:
    """
    The best delivery rate over the rounds, and the server's CPU
    microseconds per delivery in that round.
    """
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        if kind == "beryl":
            server = beryl_argv(port, Path(tmp) / "beryl.log", *options)
            url = f"ws://127.0.0.1:{port}/socket/websocket?vsn=2.0.0"
        else:
            server = [sys.executable, str(HERE / "baseline_autobahn.py"), str(port)]
            url = f"ws://127.0.0.1:{port}/"
        client = client_argv(url, sockets, messages, kind, paced)
        return best_of(server, port, client, rounds, "deliveries")


def client_argv(
    url: str, sockets: int, messages: int, kind: str, paced: bool
) -> list[str]:
    """
    The load client's command line.
    """
    return [
        "node",
        str(HERE / "fanout_client.js"),
        url,
        str(sockets),
        str(messages),
        kind,
        "1" if paced else "0",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--sockets", type=int, default=2000)
    parser.add_argument("--messages", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--burst",
        action="store_true",
        help="send all messages at once (broadcasts batch into one send() per socket)",
    )
    parser.add_argument(
        "--compare-metrics",
        action="store_true",
        help="instead of the baseline, run Beryl with metrics on and off (--no-metrics), taking turns; reports the least CPU per delivery of each",
    )
    args = parser.parse_args()
    raise_file_limit()
    paced = not args.burst
    if args.compare_metrics:
        print(
            compare_metrics(
                "fanout",
                lambda url: client_argv(
                    url, args.sockets, args.messages, "beryl", paced
                ),
                args.rounds,
                "deliveries",
            )
        )
        return
    beryl, beryl_cpu = measure("beryl", args.sockets, args.messages, args.rounds, paced)
    baseline, baseline_cpu = measure(
        "baseline", args.sockets, args.messages, args.rounds, paced
    )
    mode = "burst" if args.burst else "paced"
    print(
        f"fanout ({mode}) N={args.sockets} M={args.messages}: "
        f"beryl {beryl:,.0f} deliveries/s ({beryl_cpu:.1f} us server CPU each), "
        f"autobahn baseline {baseline:,.0f} deliveries/s ({baseline_cpu:.1f} us each), "
        f"ratio {beryl / baseline:.2f}"
    )


if __name__ == "__main__":
    main()
