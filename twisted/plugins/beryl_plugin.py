"""
The C{twistd beryl} plugin.  Import-cheap on purpose: every twistd and trial
run imports this module, so it names L{beryl.tap} lazily and imports neither
the reactor nor Autobahn.
"""

from twisted.application.service import ServiceMaker

beryl = ServiceMaker(
    "Beryl",
    "beryl.tap",
    "Phoenix Channels compatible real-time server (channels, presence, pub/sub)",
    "beryl",
)
