"""`npcd talk CHARACTER`: talk to an NPC from a terminal, as a game would over gRPC.

Type lines, or give `--wav` to stream recorded speech in real time (20 ms chunks, then silence
until the NPC's server VAD ends the turn). It prints what the player was heard saying, what the
NPC answers, the actions it asks for (answered interactively on a terminal, or by
`--auto-actions`), and each turn's latency; `--out DIR` keeps each answer as a WAV. Without
`--target` it starts npcd in this process on the local backend. Plain lines, no colours or
spinners: it is as readable in a CI log as in a terminal.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import wave
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import grpc

from npcd.config import Settings, parse_listen
from npcd.server.app import serving, wait_for_npcs
from npcd.v1 import npcd_pb2 as pb
from npcd.v1 import npcd_pb2_grpc as pb_grpc

__all__ = ["TalkOptions", "talk"]

CHUNK_MS = 20
#: Silence streamed after a recording, so the server VAD hears the player stop.
TRAILING_SILENCE_MS = 1500
TURN_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class TalkOptions:
    character: str
    target: str | None = None
    characters: Path = Path("characters")
    wav: Path | None = None
    out: Path | None = None
    #: "ok" or "fail" answers every action so; None asks (on a terminal) or says ok.
    auto_actions: str | None = None
    player: str = "Traveller"


class _Session:
    def __init__(self, stub: pb_grpc.NpcServiceStub, start: pb.Start, out: TextIO) -> None:
        self.requests: asyncio.Queue[pb.ConverseRequest | None] = asyncio.Queue()
        self.requests.put_nowait(pb.ConverseRequest(start=start))
        self.call = stub.Converse(self._feed())
        self.out = out
        self.turns = 0

    async def _feed(self) -> AsyncIterator[pb.ConverseRequest]:
        while (request := await self.requests.get()) is not None:
            yield request

    def send(self, **kind: Any) -> None:
        self.requests.put_nowait(pb.ConverseRequest(**kind))

    def print(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    async def read(self) -> pb.ConverseResponse:
        message = await self.call.read()
        if message is grpc.aio.EOF:
            raise RuntimeError("npcd ended the conversation")
        return message  # type: ignore[no-any-return]


async def talk(options: TalkOptions, out: TextIO = sys.stdout) -> int:
    """Run one conversation; the exit code."""
    async with AsyncExitStack() as stack:
        target = options.target
        if target is None:
            settings = Settings(
                listen=parse_listen("127.0.0.1:0"),
                characters=options.characters,
                reload_interval_s=0,
                memory=False,
            )
            running = await stack.enter_async_context(serving(settings, with_backend=True))
            await wait_for_npcs(running)
            target = running.address.grpc_target
        channel = await stack.enter_async_context(grpc.aio.insecure_channel(target))
        start = pb.Start(
            character_id=options.character,
            player=pb.Player(name=options.player),
            capabilities=pb.Capabilities(
                transcripts=True, actions=True, latency_reports=True, vad_events=True
            ),
        )
        if options.wav is not None:
            pcm, fmt = _read_wav(options.wav)
            start.input_format.CopyFrom(fmt)
        session = _Session(pb_grpc.NpcServiceStub(channel), start, out)
        try:
            ready = await asyncio.wait_for(session.read(), TURN_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            print(f"npcd talk: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 2
        name = ready.ready.character.display_name or options.character
        ending = "" if options.wav is not None else "; end with Ctrl-D"  # a recording just ends
        session.print(f"talking to {name} ({options.character}){ending}")
        try:
            if options.wav is not None:
                await _speak(session, options, name, pcm, fmt)
            else:
                await _type(session, options, name)
        finally:
            session.requests.put_nowait(None)
    return 0


async def _readline() -> str:
    """A line of stdin ("" at its end), read in a daemon thread: Ctrl-C at a terminal must end
    the program, and the loop's executor threads are joined at exit, so a read pending there
    held it until the next Enter."""
    loop = asyncio.get_running_loop()
    read: asyncio.Future[str] = loop.create_future()

    def settle(outcome: str | Exception) -> None:
        if read.done():
            return
        if isinstance(outcome, Exception):
            read.set_exception(outcome)
        else:
            read.set_result(outcome)

    def reader() -> None:
        try:
            outcome: str | Exception = sys.stdin.readline()
        except Exception as exc:  # undecodable input, say: raised where the line is awaited
            outcome = exc
        try:
            loop.call_soon_threadsafe(settle, outcome)
        except RuntimeError:  # the loop is closed: nobody waits for the line any more
            pass

    threading.Thread(target=reader, name="npcd-talk-stdin", daemon=True).start()
    return await read


async def _type(session: _Session, options: TalkOptions, name: str) -> None:
    while True:
        line = await _readline()
        if not line:
            return
        if line.strip():
            if not sys.stdin.isatty():  # piped in: show it, as a terminal would have
                session.print(f"you: {line.strip()}")
            session.send(text=pb.TextMessage(text=line.strip()))
            await _answer(session, options, name, time.perf_counter())


def _read_wav(path: Path) -> tuple[bytes, pb.AudioFormat]:
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2:
            raise RuntimeError(f"{path}: only 16-bit PCM WAV files")
        fmt = pb.AudioFormat(
            encoding=pb.AUDIO_ENCODING_PCM16,
            sample_rate_hz=wav.getframerate(),
            channels=wav.getnchannels(),
        )
        return wav.readframes(wav.getnframes()), fmt


async def _speak(
    session: _Session, options: TalkOptions, name: str, pcm: bytes, fmt: pb.AudioFormat
) -> None:
    """Stream the recording in real time, then silence, and read the NPC's answer."""
    frame = 2 * fmt.channels
    chunk = fmt.sample_rate_hz * CHUNK_MS // 1000 * frame
    silence = bytes(fmt.sample_rate_hz * TRAILING_SILENCE_MS // 1000 * frame)
    seconds = len(pcm) / frame / fmt.sample_rate_hz
    session.print(f"(streaming {options.wav.name if options.wav else 'audio'}: {seconds:.1f} s)")
    answered = asyncio.ensure_future(_answer(session, options, name, time.perf_counter()))
    loop = asyncio.get_running_loop()
    began = loop.time()
    data = pcm + silence
    for n, offset in enumerate(range(0, len(data), chunk)):
        if answered.done():
            break
        session.send(audio=pb.AudioChunk(data=data[offset : offset + chunk]))
        # Paced on an absolute schedule, as a microphone delivers it.
        await asyncio.sleep(max(0.0, began + (n + 1) * CHUNK_MS / 1000 - loop.time()))
    while not answered.done():  # the VAD may wait for more silence than was sent
        session.send(audio=pb.AudioChunk(data=bytes(chunk)))
        await asyncio.wait({answered}, timeout=CHUNK_MS / 1000)
    await answered


async def _answer(session: _Session, options: TalkOptions, name: str, began: float) -> None:
    """Read one turn to its end (and the NPC's follow-up after each action)."""
    pending = 1
    audio = bytearray()
    async with asyncio.timeout(TURN_TIMEOUT_S):
        while pending:
            message = await session.read()
            kind = message.WhichOneof("kind")
            if kind == "player_transcript" and message.player_transcript.is_final:
                session.print(f"you: {message.player_transcript.text}")
            elif kind == "audio":
                audio += message.audio.data
            elif kind == "action_request":
                pending += 1
                await _action(session, options, message.action_request)
            elif kind == "error":
                session.print(f"(npcd: {message.error.message})")
            elif kind == "response_done":
                pending -= 1
                done = message.response_done
                latency = done.latency
                timing = (
                    f" [first audio {latency.first_output_us / 1000:.0f} ms, "
                    f"npcd {latency.npcd_us / 1000:.1f} ms]"
                    if latency.first_output_us
                    else ""
                )
                if done.transcript:
                    session.print(f"{name}: {done.transcript}{timing}")
                if options.out is not None and audio:
                    session.turns += 1
                    path = options.out / f"{session.turns:03d}-{done.response_id}.wav"
                    _write_wav(path, bytes(audio))
                    session.print(f"(wrote {path})")
                audio.clear()


async def _action(session: _Session, options: TalkOptions, request: pb.ActionRequest) -> None:
    answer = options.auto_actions
    if answer is None and sys.stdin.isatty():
        session.print(f"[{request.name} {request.arguments_json}] allow? [Y/n] ")
        reply = await _readline()
        answer = "fail" if reply.strip().lower().startswith("n") else "ok"
    ok = answer != "fail"
    session.print(
        f"[action] {request.name} {request.arguments_json} -> {'ok' if ok else 'refused'}"
    )
    session.send(
        action_result=pb.ActionResult(
            call_id=request.call_id, ok=ok, error="" if ok else "the player refused"
        )
    )


def _write_wav(path: Path, pcm: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(24000)
        wav.writeframes(pcm)
