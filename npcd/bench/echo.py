"""A Realtime backend that answers every appended audio frame with an audio delta of it.

So that a frame's trip measures the relays and nothing else: it does the session handshake like
the real service, then turns each ``input_audio_buffer.append`` straight into a
``response.output_audio.delta`` of the same audio, stamped with its arrival time (see
`npcd.bench.frames`). Run in its own process: python -m npcd.bench.echo PORT
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

import orjson
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from npcd import audio
from npcd.bench import run_loop
from npcd.bench.frames import stamp_echo
from npcd.realtime import events as ev
from npcd.realtime.codec import encode_server
from npcd.realtime.values import AssistantMessage, Response, SessionConfig

_CREATED = encode_server(ev.SessionCreated(event_id="e0", session=SessionConfig(model="echo")))
_UPDATED = encode_server(ev.SessionUpdated(event_id="e3", session=SessionConfig(model="echo")))


def _response_start(n: int) -> tuple[str, str, bytes]:
    """A response's opening events and the prefix of its audio deltas."""
    created = ev.ResponseCreated(
        event_id=f"e{n}a", response=Response(id=f"resp_{n}", status="in_progress")
    )
    item = ev.ResponseOutputItemAdded(
        event_id=f"e{n}b",
        response_id=f"resp_{n}",
        output_index=0,
        item=AssistantMessage(id=f"item_{n}", status="in_progress", content=()),
    )
    head = (
        f'{{"type":"response.output_audio.delta","event_id":"e","response_id":"resp_{n}",'
        f'"item_id":"item_{n}","output_index":0,"content_index":0,"delta":"'
    )
    return encode_server(created), encode_server(item), head.encode()


def _response_end(n: int) -> str:
    return encode_server(
        ev.ResponseDone(event_id=f"e{n}c", response=Response(id=f"resp_{n}", status="cancelled"))
    )


async def _session(ws: ServerConnection) -> None:
    """One response per run of appends: a relay's ``response.cancel`` (its client left) ends
    it, and the next append starts a new one, as a new conversation would."""
    with contextlib.suppress(ConnectionClosed):  # a client leaving mid-echo is the normal end
        await _echo(ws)


async def _echo(ws: ServerConnection) -> None:
    await ws.send(_CREATED)
    responses = 0
    head = b""
    async for message in ws:
        event = orjson.loads(message)  # by its type: clients order keys and space JSON freely
        kind = event.get("type")
        if kind == "input_audio_buffer.append":
            if not head:
                responses += 1
                created, item, head = _response_start(responses)
                await ws.send(created)
                await ws.send(item)
            frame = stamp_echo(audio.b64decode(event["audio"]))
            await ws.send(head + audio.b64encode(frame).encode() + b'"}', text=True)
        elif kind == "response.cancel" and head:
            await ws.send(_response_end(responses))
            head = b""
        elif kind == "session.update":
            await ws.send(_UPDATED)


async def serve_echo(port: int, ready: asyncio.Event | None = None) -> None:
    async with serve(_session, "127.0.0.1", port, compression=None, max_size=None):
        if ready is not None:
            ready.set()
        print("ready", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    run_loop(serve_echo(int(sys.argv[1])))
