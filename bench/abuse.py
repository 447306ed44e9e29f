"""
Abuse benchmark: how much one abusive client hurts everyone else.  Runs
Beryl (a real ``twistd beryl``, the demo's feed:* channel) and a minimal
Autobahn server (bench/baseline_abuse.py: echo, plus a broadcast of
new_msg to subscribers) in the same run, each pinned to core 0 with the
node clients on core 1, and prints one line per figure:

- another client's ping round trip, p50 and p99 (over up to --samples
  pings in at most 30 s; n says how many): idle, while one socket
  floods ping events, and while one socket floods new_msg to 100
  subscribers (goal for Beryl: p99 <= 10 ms under flood);
- the server's resident memory after a client sends WebSocket pings and
  never reads the pongs (Beryl drops it at its 16 MiB send-buffer cap).

    python bench/abuse.py [--samples 1000] [--pong-megabytes 100]
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402
    HERE,
    ROOT,
    beryl_argv,
    free_port,
    pinned,
    raise_file_limit,
    wait_for,
)

SCENARIOS = ("idle", "ping", "new_msg")
UPGRADE = (
    "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\n\r\n"
)


def rss_megabytes(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def probe(url: str, scenario: str, samples: int) -> dict[str, float]:
    """
    Another client's round trips while C{scenario} runs.
    """
    flooder = None
    try:
        if scenario != "idle":
            flooder = subprocess.Popen(
                pinned(
                    1,
                    [
                        "nice",
                        "-n",
                        "19",
                        "node",
                        str(HERE / "abuse_flood.js"),
                        url,
                        scenario,
                    ],
                ),
                stdout=subprocess.PIPE,
                text=True,
            )
            assert flooder.stdout is not None
            if flooder.stdout.readline().strip() != "READY":
                raise RuntimeError(f"abuse_flood.js {scenario} did not start")
            time.sleep(1)  # let the flood build up
        result = subprocess.run(
            pinned(1, ["node", str(HERE / "abuse_probe.js"), url, str(samples), "30"]),
            capture_output=True,
            text=True,
            timeout=180,
        )
        figures: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
        if "error" in figures:
            raise RuntimeError(f"abuse_probe.js: {figures}")
        return figures
    finally:
        if flooder is not None:
            flooder.kill()
            flooder.wait(10)


def pong_flood(port: int, path: str, pid: int, megabytes: int) -> tuple[float, bool]:
    """
    Send C{megabytes} of WebSocket pings without reading; return the
    server's growth in resident memory and whether it dropped the client.
    """
    before = rss_megabytes(pid)
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.settimeout(60)
    client.connect(("127.0.0.1", port))
    client.sendall(UPGRADE.format(path=path).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += client.recv(1)
    # 1000 masked pings of 125 bytes (mask of zeros)
    pings = (b"\x89\xfd\0\0\0\0" + b"p" * 125) * 1000
    sent, dropped = 0, False
    try:
        while sent < megabytes * 1024 * 1024:
            client.sendall(pings)
            sent += len(pings)
    except (ConnectionResetError, BrokenPipeError):
        dropped = True
    except TimeoutError:
        pass
    time.sleep(2)
    grown = rss_megabytes(pid) - before
    client.close()
    return grown, dropped


def measure(kind: str, samples: int, megabytes: int) -> dict[str, object]:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        if kind == "beryl":
            argv = beryl_argv(port, Path(tmp) / "beryl.log")
            url = f"ws://127.0.0.1:{port}/socket/websocket?vsn=2.0.0"
            path = "/socket/websocket?vsn=2.0.0"
        else:
            argv = [sys.executable, str(HERE / "baseline_abuse.py"), str(port)]
            url = f"ws://127.0.0.1:{port}/"
            path = "/"
        server = subprocess.Popen(pinned(0, argv), cwd=ROOT, stdout=subprocess.DEVNULL)
        try:
            wait_for(port)
            figures: dict[str, object] = {
                scenario: probe(url, scenario, samples) for scenario in SCENARIOS
            }
            figures["pong"] = pong_flood(port, path, server.pid, megabytes)
            return figures
        finally:
            server.terminate()
            server.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--pong-megabytes", type=int, default=100)
    args = parser.parse_args()
    raise_file_limit()
    results = {
        kind: measure(kind, args.samples, args.pong_megabytes)
        for kind in ("beryl", "baseline")
    }
    names = {
        "idle": "idle",
        "ping": "one socket floods ping",
        "new_msg": "one socket floods new_msg to 100 subscribers",
    }
    for scenario in SCENARIOS:
        beryl = results["beryl"][scenario]
        base = results["baseline"][scenario]
        assert isinstance(beryl, dict) and isinstance(base, dict)
        print(
            f"abuse round trip, {names[scenario]}: "
            f"beryl p50 {beryl['p50']:.2f} ms p99 {beryl['p99']:.2f} ms "
            f"(n={beryl['samples']}), autobahn baseline p50 {base['p50']:.2f} ms "
            f"p99 {base['p99']:.2f} ms (n={base['samples']})"
        )
    beryl_pong = results["beryl"]["pong"]
    base_pong = results["baseline"]["pong"]
    assert isinstance(beryl_pong, tuple) and isinstance(base_pong, tuple)
    print(
        f"abuse pong flood ({args.pong_megabytes} MB of pings, never read): "
        f"beryl RSS +{beryl_pong[0]:.0f} MB (dropped: {'yes' if beryl_pong[1] else 'no'}), "
        f"autobahn baseline RSS +{base_pong[0]:.0f} MB "
        f"(dropped: {'yes' if base_pong[1] else 'no'})"
    )


if __name__ == "__main__":
    main()
