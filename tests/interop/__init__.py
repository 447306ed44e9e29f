"""
End-to-end interoperability tests: a real C{twistd beryl} process on
loopback, driven by the official C{phoenix} npm client under node and by a
byte-level WebSocket client.  See C{README} in this directory.
"""
