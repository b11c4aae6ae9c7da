"""The bare relay: the least a gRPC -> Realtime relay can do, the line npcd is judged against.

It speaks npcd's Converse contract only as far as the benchmark needs (Start -> Ready, audio
frames both ways) and has none of npcd's features: no persona, no protocol state, no barge-in,
no format conversion, no pool. Same libraries and settings as npcd (grpc.aio, websockets without
compression, orjson, pybase64), one WebSocket per stream. Run in its own process:
python -m npcd.bench.bare --listen 127.0.0.1:0 --backend ws://127.0.0.1:PORT/v1/realtime
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc
import orjson
from websockets.asyncio.client import connect

from npcd import audio
from npcd.bench import run_loop
from npcd.v1 import npcd_pb2 as pb
from npcd.v1 import npcd_pb2_grpc as pb_grpc

_APPEND_HEAD = b'{"type":"input_audio_buffer.append","audio":"'
_DELTA = "response.output_audio.delta"


class BareRelay(pb_grpc.NpcServiceServicer):
    def __init__(self, backend_url: str) -> None:
        self._url = backend_url

    async def Converse(  # noqa: N802 (gRPC's name)
        self,
        request_iterator: AsyncIterator[pb.ConverseRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.ConverseResponse]:
        requests = aiter(request_iterator)
        await anext(requests)  # Start
        async with connect(self._url, compression=None, max_size=None) as ws:
            await ws.recv()  # session.created

            async def upstream() -> None:
                async for request in requests:
                    if request.HasField("audio"):
                        encoded = audio.b64encode(request.audio.data).encode()
                        await ws.send(_APPEND_HEAD + encoded + b'"}', text=True)
                    elif request.HasField("end"):
                        break
                await ws.close()

            sender = asyncio.create_task(upstream())
            try:
                yield pb.ConverseResponse(ready=pb.Ready(conversation_id="bare"))
                sequence = 0
                async for message in ws:
                    event = orjson.loads(message)
                    if event["type"] == _DELTA:
                        data = audio.b64decode(event["delta"])
                        yield pb.ConverseResponse(audio=pb.NpcAudio(sequence=sequence, data=data))
                        sequence += 1
            finally:
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sender


async def serve_bare(listen: str, backend_url: str) -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    relay = BareRelay(backend_url)  # type: ignore[abstract]  # Converse is all it serves
    pb_grpc.add_NpcServiceServicer_to_server(relay, server)
    port = server.add_insecure_port(listen)
    await server.start()
    host = listen.rsplit(":", 1)[0]
    print(f"listening {host}:{port}", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--backend", required=True)
    args = parser.parse_args()
    run_loop(serve_bare(args.listen, args.backend))
