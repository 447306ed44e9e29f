"""
Telemetry: watch what happens inside a node from application code.

    twistd -n beryl --app telemetry_app:app     # from this directory

The built-in demo, plus two observers: one logs every channel crash with
its route, one logs any callback slower than 50 ms.  Observers run on the
reactor thread; keep them quick (hand slow work to a queue).
"""

from twisted.logger import Logger

from beryl import App, telemetry
from beryl.demo import demo_app

log = Logger(namespace="telemetry_app")
SLOW = 0.05


def crashed(event: telemetry.ChannelCrashed) -> None:
    log.warn(
        "Channel {topic} (route {route}) crashed for socket {socket_id}.",
        topic=event.topic,
        route=event.route,
        socket_id=event.socket_id,
    )


def finished(event: telemetry.HandlerFinished) -> None:
    if event.seconds > SLOW:
        log.warn(
            "{callback} on {route} took {ms:.0f} ms.",
            callback=event.callback,
            route=event.route,
            ms=event.seconds * 1000,
        )


def make_app() -> App:
    """The demo app with the two observers."""
    return (
        demo_app()
        .on_event(telemetry.ChannelCrashed, crashed)
        .on_event(telemetry.HandlerFinished, finished)
    )


app = make_app()
