"""The embedded local Realtime backend: the OpenAI Realtime protocol offline, on loopback.

`server` is the I/O shell (REST + WebSocket on one port), `session` the protocol behaviour of
one session, `brain` the scripted dialogue, `engines` the speech engines behind small
protocols, `defaults` the engine set used unless told otherwise, `run` the `npcd backend`
command.
"""
