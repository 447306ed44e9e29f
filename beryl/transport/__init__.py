"""
Transports: how clients reach the coordinator (WebSocket now, long-poll
next).
"""
