"""The Realtime protocol: typed events, dialect mapping, error policy and the session state machine.

Everything in this package is sans-I/O: no sockets, no asyncio, no grpc.
"""
