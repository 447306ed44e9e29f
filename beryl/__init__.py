"""
Beryl: a Phoenix Channels compatible real-time server and library on
Twisted.  Channels with typed handlers, presence, and pub/sub across a
cluster; the official C{phoenix} JavaScript client works unmodified.
"""

__version__ = "0.1.0"

from beryl.app import App, ConnectError, ConnectInfo, ConnectOk
from beryl.channel import (
    Channel,
    HandleResult,
    InfoResult,
    JoinContext,
    JoinError,
    JoinOk,
    JoinResult,
    NoReply,
    Push,
    Reply,
    SocketContext,
    Stop,
)
from beryl.coordinator import Coordinator
from beryl.topics import extract_topic_id
from beryl.wire import Binary, Payload

__all__ = [
    "__version__",
    "App",
    "Binary",
    "Channel",
    "ConnectError",
    "ConnectInfo",
    "ConnectOk",
    "Coordinator",
    "HandleResult",
    "InfoResult",
    "JoinContext",
    "JoinError",
    "JoinOk",
    "JoinResult",
    "NoReply",
    "Payload",
    "Push",
    "Reply",
    "SocketContext",
    "Stop",
    "extract_topic_id",
]
