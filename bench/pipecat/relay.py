"""The benchmark's peer relay: npcd's Converse stream served through a Pipecat pipeline.

The same traffic that npcd relays, relayed the way Pipecat's documentation builds a voice bot:
one ``OpenAIRealtimeLLMService`` in a ``PipelineWorker`` per conversation, run by a
``WorkerRunner``. It speaks just enough of ``npcd.v1.NpcService/Converse`` for the load
generator: ``Start`` is answered with ``Ready`` once the backend session is set up
(``session.updated``), each ``AudioChunk`` goes into the pipeline as an ``InputAudioRawFrame``,
and each ``TTSAudioRawFrame`` that comes out goes back as ``NpcAudio``. The bytes pass through
unchanged both ways (PCM16 mono 24 kHz, nothing resampled or re-chunked). Other client messages
are ignored; ``End`` or half-closing ends the conversation.

Set up with ``bash bench/pipecat/setup.sh``, then run it with that virtualenv's Python:

    .venv-pipecat/bin/python bench/pipecat/relay.py --listen 127.0.0.1:PORT \\
        --backend ws://127.0.0.1:X/v1/realtime

It prints ``listening HOST:PORT`` on stdout once it serves (``--listen 127.0.0.1:0`` picks a
free port).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The stubs that setup.sh generated into this virtualenv (.venv-pipecat/gen). The repository's
# own `npcd` package must not shadow them (it needs protobuf 7 and npcd's dependencies), so the
# repository root is taken off sys.path whatever the working directory or PYTHONPATH.
GEN = Path(sys.prefix) / "gen"
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT]
sys.path.insert(0, str(GEN))

USAGE = "run `bash bench/pipecat/setup.sh`, then start this script with .venv-pipecat/bin/python"
try:
    import grpc

    from npcd.v1 import npcd_pb2 as pb
    from npcd.v1 import npcd_pb2_grpc as pb_grpc
except ImportError as error:
    sys.exit(f"relay.py: {error}; {USAGE}")
if not Path(pb.__file__).resolve().is_relative_to(GEN.resolve()):
    sys.exit(f"relay.py: npcd.v1 came from {pb.__file__}, not from {GEN}; {USAGE}")

from loguru import logger  # noqa: E402
from pipecat.frames.frames import (  # noqa: E402
    EndFrame,
    ErrorFrame,
    Frame,
    InputAudioRawFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
)
from pipecat.pipeline.pipeline import Pipeline  # noqa: E402
from pipecat.pipeline.worker import PipelineParams, PipelineWorker  # noqa: E402
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor  # noqa: E402
from pipecat.services.openai.realtime.llm import OpenAIRealtimeLLMService  # noqa: E402
from pipecat.workers.runner import WorkerRunner  # noqa: E402

SAMPLE_RATE = 24000  # what the Realtime protocol speaks, and what the generator sends


class RealtimeLLM(OpenAIRealtimeLLMService):
    """The stock service, plus an event set when the backend has acknowledged the session.

    Pipecat has no public signal for this: the service sends ``session.update`` when it gets
    ``session.created`` and only notes ``session.updated`` in a private flag, so this hooks the
    handler of that event.
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.session_ready = asyncio.Event()

    async def _handle_evt_session_updated(self, evt):  # type: ignore[no-untyped-def]
        await super()._handle_evt_session_updated(evt)
        self.session_ready.set()


class GrpcAudioOut(FrameProcessor):
    """The pipeline's end: writes the NPC's audio to the Converse stream as it comes.

    Plays the part of an output transport, so audio frames stop here; every other frame goes on.
    """

    def __init__(self, context: grpc.aio.ServicerContext) -> None:
        super().__init__()
        self._context = context
        self._responses = 0
        self._response_id = ""
        self._sequence = 0

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TTSAudioRawFrame):
            if self._context.done():
                return  # the game hung up; audio still in the pipeline has nowhere to go
            await self._context.write(
                pb.ConverseResponse(
                    audio=pb.NpcAudio(
                        response_id=self._response_id, sequence=self._sequence, data=frame.audio
                    )
                )
            )
            self._sequence += 1
            return
        if isinstance(frame, TTSStartedFrame):
            self._responses += 1
            self._response_id = f"resp_{self._responses}"
            self._sequence = 0
        await self.push_frame(frame, direction)


class NpcService(pb_grpc.NpcServiceServicer):
    def __init__(self, backend: str, api_key: str, ready_timeout: float) -> None:
        self._backend = backend
        self._api_key = api_key
        self._ready_timeout = ready_timeout
        self._ids = itertools.count(1)

    async def Converse(self, request_iterator, context):  # type: ignore[no-untyped-def]  # noqa: N802
        requests = request_iterator.__aiter__()
        try:
            first = await requests.__anext__()
        except StopAsyncIteration:
            return
        if first.WhichOneof("kind") != "start":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message must be Start")
        conversation_id = f"pipecat_{next(self._ids)}"

        llm = RealtimeLLM(api_key=self._api_key, base_url=self._backend)
        worker = PipelineWorker(
            Pipeline([llm, GrpcAudioOut(context)]),
            enable_rtvi=False,  # no RTVI client on the other end, only gRPC
            idle_timeout_secs=None,  # the gRPC stream decides how long a conversation lasts
            params=PipelineParams(
                audio_in_sample_rate=SAMPLE_RATE, audio_out_sample_rate=SAMPLE_RATE
            ),
        )
        problems: list[str] = []
        failed = asyncio.Event()

        @worker.event_handler("on_pipeline_error")
        async def on_pipeline_error(_worker: PipelineWorker, frame: ErrorFrame) -> None:
            # Pipecat reports a failed connect as a non-fatal ErrorFrame and carries on without
            # a socket; before Ready that means the stream can never work, so fail it at once.
            problems.append(str(frame.error))
            failed.set()

        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)
        run = asyncio.create_task(runner.run(), name=f"runner-{conversation_id}")
        try:
            waits = [asyncio.create_task(e.wait()) for e in (llm.session_ready, failed)]
            await asyncio.wait(
                [*waits, run], timeout=self._ready_timeout, return_when=asyncio.FIRST_COMPLETED
            )
            for wait in waits:
                wait.cancel()
            if not llm.session_ready.is_set():
                reason = f"no session.updated within {self._ready_timeout:g} s"
                if problems:
                    reason = problems[0]
                elif run.done():
                    reason = "the pipeline ended before the session was set up"
                await context.abort(grpc.StatusCode.UNAVAILABLE, f"{self._backend}: {reason}")
            await context.write(
                pb.ConverseResponse(
                    ready=pb.Ready(conversation_id=conversation_id), request_id=first.request_id
                )
            )
            async for request in requests:
                kind = request.WhichOneof("kind")
                if kind == "audio":
                    await worker.queue_frame(
                        InputAudioRawFrame(
                            audio=request.audio.data, sample_rate=SAMPLE_RATE, num_channels=1
                        )
                    )
                elif kind == "end":
                    break
            # The documented graceful stop: EndFrame flows through, the service closes its socket.
            await worker.queue_frame(EndFrame())
            await run
        finally:
            if not run.done():  # the client went away, or the stream was aborted
                await runner.cancel(reason="gRPC stream ended")
                try:
                    await asyncio.wait_for(run, 5)
                except (TimeoutError, asyncio.CancelledError):
                    run.cancel()


async def serve(listen: str, backend: str, api_key: str, ready_timeout: float) -> None:
    server = grpc.aio.server()
    pb_grpc.add_NpcServiceServicer_to_server(NpcService(backend, api_key, ready_timeout), server)
    port = server.add_insecure_port(listen)
    if not port:
        sys.exit(f"relay.py: cannot listen on {listen}")
    await server.start()
    print(f"listening {listen.rsplit(':', 1)[0]}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(grace=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (port 0: any free)")
    parser.add_argument("--backend", required=True, help="ws://HOST:PORT/v1/realtime")
    parser.add_argument("--api-key", default="sk-local", help="sent as the Bearer token")
    parser.add_argument(
        "--ready-timeout",
        type=float,
        default=10.0,
        help="seconds to wait for session.updated before failing a stream",
    )
    parser.add_argument("--log-level", default="INFO", help="pipecat's loguru level")
    args = parser.parse_args()
    logger.remove()
    logger.add(sys.stderr, level=args.log_level.upper())
    asyncio.run(serve(args.listen, args.backend, args.api_key, args.ready_timeout))


if __name__ == "__main__":
    main()
