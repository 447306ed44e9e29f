"""
Beryl: a Phoenix Channels compatible real-time server and library on
Twisted.
"""
