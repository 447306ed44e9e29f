"""
The per-socket channel session: a pure state machine (L{state}) that turns
inbound messages and callback results into effects (L{effects}).
"""
