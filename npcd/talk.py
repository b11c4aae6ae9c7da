"""`npcd talk CHARACTER`: talk to an NPC from a terminal, as a game would over gRPC.

Type lines, or give `--wav` to stream recorded speech in real time (20 ms chunks, then silence
until the NPC's server VAD ends the turn), or `--mic` to talk through the sound card (the
optional `sounddevice`). It prints what the player was heard saying, what the NPC answers, the
actions it asks for (answered interactively on a terminal, or by `--auto-actions`), and each
turn's latency; `--out DIR` keeps each answer as a WAV. Without `--target` it starts npcd in
this process on the local backend. Plain lines, no colours or spinners: it is as readable in a
CI log as in a terminal.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
import threading
import wave
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, TextIO

import grpc

from npcd.config import Settings, parse_listen
from npcd.playback import Playback
from npcd.server.app import serving, wait_for_npcs
from npcd.server.service import NPC_HEADER
from npcd.v1 import npcd_pb2 as pb
from npcd.v1 import npcd_pb2_grpc as pb_grpc

__all__ = ["TalkOptions", "talk"]

CHUNK_MS = 20
#: Silence streamed after a recording, so the server VAD hears the player stop.
TRAILING_SILENCE_MS = 1500
TURN_TIMEOUT_S = 60.0
#: How often `--mic` reports the playback cursor (npcd asks for every 100-250 ms).
PROGRESS_S = 0.1
#: `--mic` records and plays at the first of these rates both the device and npcd take.
MIC_RATES = (24000, 48000, 44100, 16000)


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
    #: Talk through the default microphone and speakers.
    mic: bool = False


class _Session:
    def __init__(self, stub: pb_grpc.NpcServiceStub, start: pb.Start, out: TextIO) -> None:
        self.requests: asyncio.Queue[pb.ConverseRequest | None] = asyncio.Queue()
        self.requests.put_nowait(pb.ConverseRequest(start=start))
        # The NPC id as metadata too: a proxy in front of several npcd routes on it.
        self.call = stub.Converse(self._feed(), metadata=((NPC_HEADER, start.character_id),))
        self.out = out
        self.turns = 0
        #: The NPC's audio of the turn being read, for `--out`, and its rate.
        self.audio = bytearray()
        self.output_rate = 24000
        #: `--mic` reads stdin all along (Ctrl-D, typed lines): an action's question is
        #: answered by the next line read there, not by a read of its own.
        self.live = False
        self.question: asyncio.Future[str] | None = None

    async def _feed(self) -> AsyncIterator[pb.ConverseRequest]:
        while (request := await self.requests.get()) is not None:
            yield request

    def send(self, **kind: Any) -> None:
        self.requests.put_nowait(pb.ConverseRequest(**kind))

    async def ask(self) -> str:
        """The next line the player types ("" at the end of stdin)."""
        if not self.live:
            return await _readline()
        self.question = asyncio.get_running_loop().create_future()
        try:
            return await self.question
        finally:
            self.question = None

    def print(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    async def read(self) -> pb.ConverseResponse:
        message = await self.call.read()
        if message is grpc.aio.EOF:
            raise RuntimeError("npcd ended the conversation")
        return message  # type: ignore[no-any-return]


async def talk(options: TalkOptions, out: TextIO = sys.stdout) -> int:
    """Run one conversation; the exit code."""
    device: _Device | None = None
    if options.mic:
        found = _sound_device()
        if isinstance(found, str):
            print(f"npcd talk --mic: {found}", file=sys.stderr)
            return 2
        device = found
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
        elif device is not None:
            start.input_format.CopyFrom(_pcm16(device.input_rate))
            start.output_format.CopyFrom(_pcm16(device.output_rate))
        session = _Session(pb_grpc.NpcServiceStub(channel), start, out)
        try:
            ready = await asyncio.wait_for(session.read(), TURN_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            print(f"npcd talk: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 2
        name = ready.ready.character.display_name or options.character
        session.output_rate = ready.ready.output_format.sample_rate_hz or 24000
        ending = "" if options.wav is not None else "; end with Ctrl-D"  # a recording just ends
        session.print(f"talking to {name} ({options.character}){ending}")
        try:
            if options.wav is not None:
                await _speak(session, options, name, pcm, fmt)
            elif device is not None:
                return await _live(session, options, name, device)
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
            _say(session, line)
            await _answer(session, options, name)


def _say(session: _Session, line: str) -> None:
    if not sys.stdin.isatty():  # piped in: show it, as a terminal would have
        session.print(f"you: {line.strip()}")
    session.send(text=pb.TextMessage(text=line.strip()))


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
    answered = asyncio.ensure_future(_answer(session, options, name))
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


async def _answer(session: _Session, options: TalkOptions, name: str) -> None:
    """Read one turn to its end (and the NPC's follow-up after each action)."""
    pending = 1
    async with asyncio.timeout(TURN_TIMEOUT_S):
        while pending:
            message = await session.read()
            kind = message.WhichOneof("kind")
            if kind == "action_request":
                pending += 1
                await _action(session, options, message.action_request)
            elif kind == "response_done":
                pending -= 1
            _show(session, options, name, message)


def _show(session: _Session, options: TalkOptions, name: str, message: pb.ConverseResponse) -> None:
    """Print (and with `--out` keep) what an event says; every mode prints the same lines."""
    kind = message.WhichOneof("kind")
    if kind == "player_transcript" and message.player_transcript.is_final:
        session.print(f"you: {message.player_transcript.text}")
    elif kind == "audio":
        session.audio += message.audio.data
    elif kind == "interrupted":
        session.print(f"(cut off after {message.interrupted.truncated_at_ms / 1000:.1f} s)")
    elif kind == "error":
        session.print(f"(npcd: {message.error.message})")
    elif kind == "response_done":
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
        if options.out is not None and session.audio:
            session.turns += 1
            path = options.out / f"{session.turns:03d}-{done.response_id}.wav"
            _write_wav(path, bytes(session.audio), session.output_rate)
            session.print(f"(wrote {path})")
        session.audio.clear()


async def _action(session: _Session, options: TalkOptions, request: pb.ActionRequest) -> None:
    answer = options.auto_actions
    if answer is None and sys.stdin.isatty():
        session.print(f"[{request.name} {request.arguments_json}] allow? [Y/n] ")
        reply = await session.ask()
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


def _write_wav(path: Path, pcm: bytes, rate: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)


# --- `--mic`: the sound card -----------------------------------------------------------------


def _without(it: str) -> str:
    """How every message about a missing sound device ends: the other modes need none."""
    return f"Typing lines, or `--wav FILE`, works without {it}."


@dataclass(frozen=True, slots=True)
class _Device:
    """sounddevice, loaded, and the rates the default microphone and speakers take."""

    sd: ModuleType
    input_rate: int
    output_rate: int


def _sound_device() -> _Device | str:
    """The default microphone and speakers, or what is missing, said so a player can fix it.

    Looked up before npcd starts, so a machine without them is told at once."""
    try:
        sd = importlib.import_module("sounddevice")
    except ImportError:
        return (
            "sounddevice is not installed; install it with `pip install 'npcd[mic]'` (on Linux "
            f"it also needs PortAudio: `sudo apt install libportaudio2`). {_without('it')}"
        )
    except OSError as exc:  # sounddevice is there, the PortAudio library it loads is not
        return (
            f"sounddevice cannot load the PortAudio library ({exc}); install it with `sudo apt "
            "install libportaudio2` (Debian, Ubuntu) or `sudo dnf install portaudio` (Fedora). "
            + _without("it")
        )
    rates: list[int] = []
    for kind, what, it, check in (
        ("input", "microphone", "one", sd.check_input_settings),
        ("output", "speakers or headphones", "them", sd.check_output_settings),
    ):
        try:
            name = sd.query_devices(kind=kind)["name"]
        except sd.PortAudioError:
            return (
                f"no {what} found (PortAudio has no default {kind} device); connect one, or "
                f"make one the system's default. {_without(it)}"
            )
        for rate in MIC_RATES:
            try:
                check(samplerate=rate, channels=1, dtype="int16")
            except sd.PortAudioError:
                continue
            rates.append(rate)
            break
        else:
            khz = ", ".join(f"{rate / 1000:g}" for rate in MIC_RATES)
            return f"the {what} ({name}) takes 16-bit mono at none of {khz} kHz. {_without(it)}"
    return _Device(sd, *rates)


def _pcm16(rate: int) -> pb.AudioFormat:
    return pb.AudioFormat(encoding=pb.AUDIO_ENCODING_PCM16, sample_rate_hz=rate, channels=1)


async def _live(session: _Session, options: TalkOptions, name: str, device: _Device) -> int:
    """Talk through the sound card until Ctrl-D (Ctrl-C ends the program); the exit code.

    PortAudio calls both callbacks on its own thread against a deadline: the microphone's hands
    its block to the loop without waiting, the speaker's is one `Playback.pull_into`."""
    sd = device.sd
    loop = asyncio.get_running_loop()
    playback = Playback(device.output_rate)

    def send(data: bytes) -> None:
        session.send(audio=pb.AudioChunk(data=data))

    def recorded(indata: Any, frames: int, time: Any, status: Any) -> None:
        try:
            loop.call_soon_threadsafe(send, bytes(indata))
        except RuntimeError:  # the loop has closed: nobody sends any more
            pass

    def play(outdata: Any, frames: int, time: Any, status: Any) -> None:
        playback.pull_into(memoryview(outdata))

    session.live = True
    with ExitStack() as streams:
        try:
            for stream, rate, callback in (
                (sd.RawInputStream, device.input_rate, recorded),
                (sd.RawOutputStream, device.output_rate, play),
            ):
                streams.enter_context(
                    stream(
                        samplerate=rate,
                        channels=1,
                        dtype="int16",
                        blocksize=rate * CHUNK_MS // 1000,
                        latency="low",
                        callback=callback,
                    )
                )
        except sd.PortAudioError as exc:
            print(f"npcd talk --mic: cannot open the sound device: {exc}", file=sys.stderr)
            return 2
        session.print("(speak; wear headphones: from speakers the NPC hears itself and stops)")
        tasks = [
            asyncio.create_task(_hear(session, options, name, playback)),
            asyncio.create_task(_keys(session)),
            asyncio.create_task(_report(session, playback)),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # a failure, raised
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return 0


async def _hear(session: _Session, options: TalkOptions, name: str, playback: Playback) -> None:
    """npcd's events for as long as the conversation lasts: the NPC's voice to the speaker."""
    while True:
        message = await session.read()
        kind = message.WhichOneof("kind")
        if kind == "audio":
            audio = message.audio
            playback.push(audio.response_id, audio.start_ms, audio.data)
        elif kind == "interrupted":
            playback.interrupt(message.interrupted.response_id)
        elif kind == "response_done":
            playback.end(message.response_done.response_id)
        elif kind == "action_request":
            await _action(session, options, message.action_request)
        _show(session, options, name, message)


async def _keys(session: _Session) -> None:
    """`--mic`'s stdin until Ctrl-D: lines answer an action's question, or are said as text."""
    while line := await _readline():
        if session.question is not None and not session.question.done():
            session.question.set_result(line)
        elif line.strip():
            _say(session, line)


async def _report(session: _Session, playback: Playback) -> None:
    """The playback cursor, every `PROGRESS_S` while the NPC speaks, and each response's end."""
    while True:
        await asyncio.sleep(PROGRESS_S)  # a reporting period, not a wait for anything
        for progress in playback.progress():
            session.send(
                playback=pb.PlaybackProgress(
                    response_id=progress.response_id,
                    played_ms=progress.played_ms,
                    finished=progress.finished,
                )
            )
