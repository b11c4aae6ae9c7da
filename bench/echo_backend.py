"""A Realtime backend that echoes every appended audio frame back as an audio delta.

For `bench/relay_latency.py`: it answers the session handshake like the real service, then
turns each ``input_audio_buffer.append`` straight into a ``response.output_audio.delta`` of the
same audio, so a frame's round trip measures the relay and nothing else. Run in its own
process: python bench/echo_backend.py PORT
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import orjson
from websockets.asyncio.server import ServerConnection, serve

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from npcd.realtime import events as ev  # noqa: E402
from npcd.realtime.codec import encode_server  # noqa: E402
from npcd.realtime.values import AssistantMessage, Response, SessionConfig  # noqa: E402

CREATED = encode_server(ev.SessionCreated(event_id="e0", session=SessionConfig(model="echo")))
RESPONSE = encode_server(
    ev.ResponseCreated(event_id="e1", response=Response(id="resp_echo", status="in_progress"))
)
ITEM = encode_server(
    ev.ResponseOutputItemAdded(
        event_id="e2",
        response_id="resp_echo",
        output_index=0,
        item=AssistantMessage(id="item_echo", status="in_progress", content=()),
    )
)
DELTA_HEAD = (
    b'{"type":"response.output_audio.delta","event_id":"e","response_id":"resp_echo",'
    b'"item_id":"item_echo","output_index":0,"content_index":0,"delta":'
)


async def session(ws: ServerConnection) -> None:
    await ws.send(CREATED)
    started = False
    async for frame in ws:
        data = frame if isinstance(frame, bytes) else frame.encode()
        if data.startswith(b'{"type":"input_audio_buffer.append"'):
            if not started:
                await ws.send(RESPONSE)
                await ws.send(ITEM)
                started = True
            audio = orjson.loads(data)["audio"]
            await ws.send(DELTA_HEAD + orjson.dumps(audio) + b"}", text=True)
        elif b'"session.update"' in data[:40]:
            update = orjson.loads(data)
            updated = ev.SessionUpdated(event_id="e3", session=SessionConfig(model="echo"))
            del update
            await ws.send(encode_server(updated))


async def main(port: int) -> None:
    async with serve(session, "127.0.0.1", port, compression=None, max_size=None):
        print("ready", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
