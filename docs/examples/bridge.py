"""
A host application that owns its connections and puts Beryl's channels
behind them with the bridge (L{beryl.embed}).

The host speaks its own transport: newline-delimited frames over plain TCP,
from a Twisted C{LineReceiver} (no WebSocket, no Autobahn).  Each line is
one Phoenix V2 frame: a JSON array, or C{=} followed by the base64 of a
binary frame.  Run it with

    python docs/examples/bridge.py 4001

and talk to it with any line-based client, for example

    $ nc localhost 4001
    ["1","1","room:lobby","phx_join",{}]
    ["1","2","room:lobby","shout",{"body":"hi"}]
"""

from __future__ import annotations

import base64
import binascii
import sys
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, connectionDone
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from beryl import (
    App,
    Channel,
    ConnectInfo,
    HandleResult,
    JoinContext,
    JoinOk,
    JoinResult,
    NoReply,
    Payload,
    Reply,
    SocketContext,
)
from beryl.embed import Bridge, IHostConnection, start


def join_room(topic: str, payload: Payload, ctx: JoinContext) -> JoinResult[None]:
    """
    Anyone may join a room.
    """
    return JoinOk(None)


def room_event(
    event: str, payload: Payload, ctx: SocketContext[None]
) -> HandleResult[None]:
    """
    C{shout} is broadcast to the room (and answered ok); C{ping} is answered
    with its own payload, JSON or binary.
    """
    if event == "shout":
        ctx.broadcast("shout", payload)
        return Reply("ok", {}, ctx.assigns)
    if event == "ping":
        return Reply("ok", payload, ctx.assigns)
    return NoReply(ctx.assigns)


def build_app() -> App:
    """
    The channels this host serves.
    """
    return App().channel("room:*", Channel.create(join_room).with_handle_in(room_event))


@implementer(IHostConnection)
class PhoenixLineProtocol(LineReceiver):
    """
    One client connection, owned by the host: it frames messages as lines
    and forwards everything else to the bridge.
    """

    delimiter = b"\n"
    MAX_LENGTH = 1024 * 1024

    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge

    def connectionMade(self) -> None:
        assert self.transport is not None
        peer = self.transport.getPeer()
        info = ConnectInfo(
            peer=f"{getattr(peer, 'host', '')}:{getattr(peer, 'port', '')}"
        )
        self.bridge.notify_connected(self, params={}, connect_info=info)

    def lineReceived(self, line: bytes) -> None:
        line = line.rstrip(b"\r")
        if line.startswith(b"="):
            try:
                self.bridge.handle_raw_message(
                    self, base64.b64decode(line[1:], validate=True)
                )
            except binascii.Error:
                self.close(1007, "bad base64")
            return
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            self.close(1007, "frame is not valid UTF-8")
            return
        self.bridge.handle_raw_message(self, text)

    def lineLengthExceeded(self, line: bytes) -> None:
        self.close(1009, "line too long")

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.bridge.notify_disconnected(self)

    # IHostConnection

    def send_text(self, text: str) -> None:
        self._write_line(text.encode("utf-8"))

    def send_bytes(self, data: bytes) -> None:
        self._write_line(b"=" + base64.b64encode(data))

    def close(self, code: int, reason: str) -> None:
        if self.transport is not None:
            self.transport.loseConnection()

    def _write_line(self, line: bytes) -> None:
        if self.transport is not None:
            self.transport.write(line + self.delimiter)


class PhoenixLineFactory(Factory):
    """
    Builds a L{PhoenixLineProtocol} per accepted TCP connection.
    """

    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge

    def buildProtocol(self, addr: Any) -> PhoenixLineProtocol:
        return PhoenixLineProtocol(self.bridge)


def serve(reactor: Any, listen: str) -> tuple[Bridge, Deferred[IListeningPort]]:
    """
    Start Beryl behind the bridge and listen for line clients on C{listen}
    (a server endpoint string).
    """
    bridge = start(build_app(), reactor)
    listening = serverFromString(reactor, listen).listen(PhoenixLineFactory(bridge))
    return bridge, listening


def main(argv: list[str]) -> None:
    from twisted.internet import reactor

    port = argv[1] if len(argv) > 1 else "4001"
    bridge, _ = serve(reactor, f"tcp:{port}")
    reactor.addSystemEventTrigger("before", "shutdown", bridge.stop)
    reactor.run()


if __name__ == "__main__":
    main(sys.argv)
