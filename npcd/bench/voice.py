"""Voice to voice: end of player speech to the NPC's first audio at the game, and npcd's share.

Run: python -m npcd.bench.voice [--turns 6]. Two processes: the local backend on its own
(`npcd backend`) and `npcd serve --backend ws://...` in front of it; the game client runs here.
Each turn streams a real LibriVox clip in real time (20 ms chunks of 48 kHz float32, as a game's
microphone gives them, paced on an absolute schedule), then silence until the backend's server
VAD ends the turn and the NPC's response is done. The figure is the wall-clock time from sending
the last speech sample to receiving the first NPC audio, so the VAD's silence wait is in it, as
the player feels it.

The same turn also goes straight to the backend over its WebSocket, interleaved (alternating
which path goes first), in a session configured exactly as npcd configures the NPC's (the
persona's instructions, VAD and transcription settings). It converts each chunk to 24 kHz with
npcd's own converter, as a direct client must too, so both backend sessions hear the same
samples at the same times, and through-npcd minus direct is what relaying through npcd costs.
With a few turns that difference is within the backend's own turn-to-turn spread (Whisper
and the reply vary by up to ~200 ms a turn here), so npcd's in-band split from
`ResponseDone.latency` is reported too: from the VAD stop npcd sees to the first audio it
sends, `npcd_us` inside npcd and `backend_us` waiting for the backend. One conversation per
path for the whole run, as a player talking to an NPC; warm-up turns are left out.

Turns go through the clips in turn (by default the three LibriVox fixtures). Each turn's final
input transcript gives the word error rate against ``transcription.txt``, and a turn whose
speech the backend declared stopped before the clip ended is a false turn end: the clips have
natural pauses of 150-220 ms inside sentences, and ``--stretch-pause MS`` lengthens the longest
one to MS to test a turn detector harder. ``--semantic EAGERNESS`` runs the persona with
``semantic_vad`` instead of its own turn detection.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import sys
import tempfile
import time
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import grpc
import numpy as np
import orjson
import yaml
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from npcd import audio
from npcd.bench.startup import Daemon, wait_listening, wait_serving
from npcd.bench.stats import describe
from npcd.bench.wer import word_errors
from npcd.personas import load_directory
from npcd.personas.model import Persona
from npcd.realtime import events as ev
from npcd.realtime.codec import encode_client
from npcd.realtime.configure import session_config
from npcd.v1 import npcd_pb2 as pb
from npcd.v1 import npcd_pb2_grpc as pb_grpc

REPO = Path(__file__).resolve().parents[2]
SPEECH = REPO / "tests/fixtures/speech"
CLIPS = tuple(SPEECH / f"sense_and_sensibility_01_austen_64kb-0{n}.wav" for n in (870, 880, 890))
CLIP = CLIPS[1]
GAME = audio.AudioFormat(audio.Encoding.FLOAT32, 48000)
GAME_PB = pb.AudioFormat(encoding=pb.AUDIO_ENCODING_FLOAT32, sample_rate_hz=48000)
CHUNK_S = 0.020
CHUNK_BYTES = GAME.bytes_per_second // 50
#: Silence before the speech of each turn (at least), so the VAD hears its onset from quiet.
LEAD_CHUNKS = 10
#: 8 chunks of 20 ms are 5 windows of the backend's VAD (32 ms); see `_turn`.
ALIGN_CHUNKS = 8
#: How long the NPC may take to answer after the end of speech.
TURN_TIMEOUT_S = 30.0
PLAYER = "Ada"
BACKEND_LINE = re.compile(r"local Realtime backend on http://(\S+)/v1")


@dataclass(frozen=True, slots=True)
class _Event:
    kind: str  # audio, done, error, closed, stopped (the backend's VAD), transcript (final)
    at: float
    response_id: str = ""
    status: str = ""
    latency: tuple[int, int, int] | None = None  # first_output_us, npcd_us, backend_us
    detail: str = ""


class _Path(Protocol):
    name: str
    events: asyncio.Queue[_Event]
    #: 20 ms chunks sent in this conversation so far.
    sent: int

    async def send(self, speech: int | None) -> None:
        """Send speech chunk number ``speech``, or a chunk of silence."""
        ...

    def use(self, speech: list[bytes]) -> None:
        """Speak these 20 ms chunks from the next turn on."""
        ...


class _ThroughNpcd:
    """A game's Converse stream: 48 kHz float32 in and out, latency reports on."""

    name = "npcd"

    def __init__(self, call: Any) -> None:
        self.call = call
        self.speech: list[pb.ConverseRequest] = []
        self.silence = pb.ConverseRequest(audio=pb.AudioChunk(data=bytes(CHUNK_BYTES)))
        self.sent = 0
        self.events: asyncio.Queue[_Event] = asyncio.Queue()
        self.reader = asyncio.create_task(self._read())

    def use(self, speech: list[bytes]) -> None:
        self.speech = [pb.ConverseRequest(audio=pb.AudioChunk(data=c)) for c in speech]

    @classmethod
    async def open(cls, channel: grpc.aio.Channel, character: str) -> _ThroughNpcd:
        call = pb_grpc.NpcServiceStub(channel).Converse()
        start = pb.Start(
            character_id=character,
            player=pb.Player(id="bench", name=PLAYER),
            input_format=GAME_PB,
            output_format=GAME_PB,
            capabilities=pb.Capabilities(latency_reports=True, vad_events=True, transcripts=True),
        )
        await call.write(pb.ConverseRequest(start=start))
        first = await call.read()
        if first is grpc.aio.EOF or first.WhichOneof("kind") != "ready":
            raise RuntimeError(f"npcd did not answer Start with Ready: {first}")
        return cls(call)

    async def send(self, speech: int | None) -> None:
        self.sent += 1
        await self.call.write(self.silence if speech is None else self.speech[speech])

    async def _read(self) -> None:
        put = self.events.put_nowait
        try:
            while (message := await self.call.read()) is not grpc.aio.EOF:
                at = time.perf_counter()
                kind = message.WhichOneof("kind")
                if kind == "audio":
                    put(_Event("audio", at, message.audio.response_id))
                elif kind == "response_done":
                    done = message.response_done
                    lat = done.latency
                    put(
                        _Event(
                            "done",
                            at,
                            done.response_id,
                            pb.ResponseStatus.Name(done.status),
                            (lat.first_output_us, lat.npcd_us, lat.backend_us),
                        )
                    )
                elif kind == "speech_stopped":
                    put(_Event("stopped", at))
                elif kind == "player_transcript" and message.player_transcript.is_final:
                    put(_Event("transcript", at, detail=message.player_transcript.text))
                elif kind == "error":
                    put(_Event("error", at, detail=message.error.message))
        except grpc.aio.AioRpcError as exc:
            put(_Event("closed", time.perf_counter(), detail=f"{exc.code()}: {exc.details()}"))
            return
        put(_Event("closed", time.perf_counter(), detail="stream ended"))

    async def close(self) -> None:
        await self.call.done_writing()
        await asyncio.wait_for(self.reader, 10)


class _Direct:
    """The same game talking to the backend itself, over the Realtime WebSocket."""

    name = "direct"

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.speech: list[bytes] = []
        # What npcd does with each chunk (one converter for the whole stream), done here as a
        # direct client has to: the backend takes PCM16 24 kHz only.
        self.converter = audio.InputConverter(GAME)
        self.sent = 0
        self.events: asyncio.Queue[_Event] = asyncio.Queue()
        self.reader = asyncio.create_task(self._read())

    def use(self, speech: list[bytes]) -> None:
        self.speech = speech

    @classmethod
    async def open(cls, url: str, session_update: str) -> _Direct:
        ws = await connect(
            url,
            additional_headers={"Authorization": "Bearer sk-bench"},
            compression=None,
            max_size=None,
        )
        await ws.send(session_update)
        async with asyncio.timeout(10):
            while orjson.loads(await ws.recv())["type"] != "session.updated":
                pass
        return cls(ws)

    async def send(self, speech: int | None) -> None:
        self.sent += 1
        chunk = bytes(CHUNK_BYTES) if speech is None else self.speech[speech]
        pcm = self.converter.convert(chunk)
        if pcm:  # soxr hands out 30-37 ms blocks: some 20 ms chunks give nothing yet
            await self.ws.send(encode_client(ev.InputAudioBufferAppend(audio=audio.b64encode(pcm))))

    async def _read(self) -> None:
        put = self.events.put_nowait
        try:
            async for frame in self.ws:
                at = time.perf_counter()
                event = orjson.loads(frame)
                kind = event["type"]
                if kind == "response.output_audio.delta":
                    put(_Event("audio", at, event["response_id"]))
                elif kind == "response.done":
                    response = event["response"]
                    put(_Event("done", at, response["id"], response["status"]))
                elif kind == "input_audio_buffer.speech_stopped":
                    put(_Event("stopped", at))
                elif kind == "conversation.item.input_audio_transcription.completed":
                    put(_Event("transcript", at, detail=event["transcript"]))
                elif kind == "error":
                    put(_Event("error", at, detail=event["error"].get("message", "")))
        except ConnectionClosed as exc:
            put(_Event("closed", time.perf_counter(), detail=f"WebSocket closed: {exc}"))
            return
        put(_Event("closed", time.perf_counter(), detail="WebSocket closed"))

    async def close(self) -> None:
        await self.ws.close()
        await asyncio.wait_for(self.reader, 10)


def _game_speech(clip: Path, stretch_pause_ms: int = 0) -> list[bytes]:
    """The clip as a game microphone would deliver it: 20 ms chunks of 48 kHz float32."""
    with wave.open(str(clip)) as source:
        if source.getsampwidth() != 2 or source.getnchannels() != 1:
            raise ValueError(f"{clip}: need a mono 16-bit WAV")
        rate, raw = source.getframerate(), source.readframes(source.getnframes())
    if stretch_pause_ms:
        raw = stretch_pause(raw, rate, stretch_pause_ms)
    to_backend = audio.InputConverter(audio.AudioFormat(audio.Encoding.PCM16, rate))
    pcm24 = to_backend.convert(raw) + to_backend.flush()
    to_game = audio.OutputConverter(GAME)
    speech = to_game.convert(pcm24) + to_game.flush()
    speech += bytes(-len(speech) % CHUNK_BYTES)  # pad the last chunk with silence
    return [speech[i : i + CHUNK_BYTES] for i in range(0, len(speech), CHUNK_BYTES)]


def stretch_pause(pcm16: bytes, rate: int, pause_ms: int) -> bytes:
    """Lengthen the longest quiet gap inside the speech to ``pause_ms``, with its own quiet.

    Quiet is 10 ms frames under -40 dBFS (the clips' background sits at -45 to -50 dBFS); the
    gap is filled by repeating its middle, so the player seems to hesitate, not to drop out.
    """
    frame = rate // 100
    samples = np.frombuffer(pcm16, dtype="<i2")
    frames = samples[: samples.size // frame * frame].astype(np.float64).reshape(-1, frame)
    loud = 10 * np.log10(((frames / 32768) ** 2).mean(axis=1) + 1e-12) > -40
    spoken = np.flatnonzero(loud)
    best, start = (0, 0), None
    # From 300 ms into the speech: a click or breath before the first word is no pause.
    for i in range(int(spoken[0]) + 30, int(spoken[-1]) + 1):
        if not loud[i] and start is None:
            start = i
        elif loud[i] and start is not None:
            best, start = max(best, (i - start, start)), None
    length, first = best
    if length * 10 >= pause_ms or length < 3:
        return pcm16
    middle = samples[(first + 1) * frame : (first + length - 1) * frame]
    extra = np.resize(middle, (pause_ms - length * 10) * rate // 1000)
    cut = (first + length // 2) * frame
    return np.concatenate((samples[:cut], extra, samples[cut:])).astype("<i2").tobytes()


def _references() -> dict[str, str]:
    """Reference transcripts of the fixtures by clip name, from ``transcription.txt``."""
    found: dict[str, str] = {}
    listing = SPEECH / "transcription.txt"
    for line in listing.read_text().splitlines() if listing.is_file() else []:
        match = re.match(r"<s>(.*)</s> \((\S+)\)", line.strip())
        if match:
            found[match.group(2) + ".wav"] = match.group(1).strip()
    return found


async def _turn(path: _Path, speech_chunks: int, limit_s: float) -> dict[str, Any]:
    """Speak one turn on ``path`` and wait for the NPC's response to be done.

    The lead-in silence is stretched so the speech starts a whole number of VAD windows into
    the stream: the backend's VAD (32 ms windows) then sees every turn, on both paths, with the
    same phase, and ends it on the same chunk; otherwise that phase alone moves the end of turn
    by up to a window, turn by turn."""
    while not path.events.empty():
        path.events.get_nowait()
    lead = LEAD_CHUNKS + (-(path.sent + LEAD_CHUNKS)) % ALIGN_CHUNKS
    last_speech = lead + speech_chunks - 1
    stop = asyncio.Event()
    spoken_at = 0.0

    async def speak() -> None:
        nonlocal spoken_at
        begin = time.perf_counter()
        index = 0
        while not stop.is_set() and index * CHUNK_S < limit_s:
            await asyncio.sleep(max(0.0, begin + index * CHUNK_S - time.perf_counter()))
            if stop.is_set():
                return
            await path.send(index - lead if lead <= index <= last_speech else None)
            if index == last_speech:
                spoken_at = time.perf_counter()
            index += 1

    started = time.perf_counter()
    sender = asyncio.create_task(speak())
    early = cut = False
    transcript: str | None = None
    first: _Event | None = None
    try:
        async with asyncio.timeout(limit_s):
            while True:
                event = await path.events.get()
                if event.kind in ("error", "closed"):
                    raise RuntimeError(f"{path.name}: {event.kind}: {event.detail}")
                if event.kind == "stopped" and not spoken_at:
                    cut = True  # the turn ended while the player was still speaking
                elif event.kind == "transcript" and transcript is None:
                    transcript = event.detail
                elif event.kind == "audio" and not spoken_at:
                    early = True  # the VAD cut the clip in two: an answer to half of it
                elif event.kind == "audio" and first is None:
                    first = event
                elif event.kind == "done" and first and event.response_id == first.response_id:
                    done = event
                    break
    except TimeoutError:
        raise RuntimeError(
            f"{path.name}: no NPC audio and ResponseDone in {limit_s:.0f} s"
        ) from None
    finally:
        stop.set()
        await sender
    result: dict[str, Any] = {
        "path": path.name,
        "turn_s": round(time.perf_counter() - started, 2),
        "first_audio_ms": (first.at - spoken_at) * 1000,
        "status": done.status.lower().removeprefix("response_status_"),
        "early_response": early,
        "false_turn_end": cut,
        "transcript": transcript,
    }
    if done.latency is not None:
        result["first_output_us"], result["npcd_us"], result["backend_us"] = done.latency
    return result


async def _converse(
    target: str,
    url: str,
    persona: Persona,
    clips: list[tuple[str, list[bytes]]],
    turns: int,
    warmup: int,
) -> list[dict[str, Any]]:
    """The game side: both paths open for the whole run, turns interleaved."""
    config = session_config(persona, {"player_name": PLAYER}, actions=False)
    session_update = encode_client(ev.SessionUpdate(session=config))
    references = _references()
    results: list[dict[str, Any]] = []
    async with grpc.aio.insecure_channel(target) as channel:
        through = await _ThroughNpcd.open(channel, persona.id)
        direct = await _Direct.open(url, session_update)
        try:
            for number in range(warmup + turns):
                name, speech = clips[number % len(clips)]
                limit_s = len(speech) * CHUNK_S + TURN_TIMEOUT_S
                paths: tuple[_Path, _Path] = (through, direct) if number % 2 else (direct, through)
                for path in paths:
                    path.use(speech)
                    result = await _turn(path, len(speech), limit_s)
                    result["clip"] = name
                    if name in references and result["transcript"] is not None:
                        errors, words = word_errors(references[name], result["transcript"])
                        result["word_errors"], result["words"] = errors, words
                    if number >= warmup:
                        results.append(result)
        finally:
            await through.close()
            await direct.close()
    return results


def _summary(turn_log: list[dict[str, Any]]) -> dict[str, Any]:
    # A turn the NPC answered before the end of the clip (the VAD cut it short) has no
    # end-of-speech-to-first-audio figure: it is counted in `early_responses`, not timed.
    timed = [t for t in turn_log if not t["early_response"]]
    through = [t["first_audio_ms"] for t in timed if t["path"] == "npcd"]
    direct = [t["first_audio_ms"] for t in timed if t["path"] == "direct"]
    inband = [t for t in timed if t["path"] == "npcd"]
    npcd_ms, direct_ms = describe(through), describe(direct)
    return {
        "through_npcd_ms": npcd_ms,
        "direct_ms": direct_ms,
        "npcd_share_ms": {
            "p50": npcd_ms["p50"] - direct_ms["p50"],
            "p99": npcd_ms["p99"] - direct_ms["p99"],
        },
        "backend_share_ms": {"p50": direct_ms["p50"], "p99": direct_ms["p99"]},
        "inband_us": {
            "first_output": describe([float(t["first_output_us"]) for t in inband]),
            "backend": describe([float(t["backend_us"]) for t in inband]),
            "npcd": describe([float(t["npcd_us"]) for t in inband]),
        },
        "all_completed": all(t["status"] == "completed" for t in turn_log),
        "early_responses": sum(t["early_response"] for t in turn_log),
        "false_turn_ends": sum(t["false_turn_end"] for t in turn_log),
        "wer": (
            sum(t.get("word_errors", 0) for t in turn_log)
            / max(1, sum(t.get("words", 0) for t in turn_log))
        ),
        "transcribed_turns": sum("words" in t for t in turn_log),
    }


def run(
    turns: int = 6,
    warmup: int = 1,
    character: str = "blacksmith",
    clip: Path | Sequence[Path] = CLIPS,
    characters: Path = REPO / "characters",
    *,
    semantic: str | None = None,
    stretch_pause_ms: int = 0,
) -> dict[str, Any]:
    """Start the backend and npcd, run ``warmup + turns`` turns on each path, stop both.

    ``semantic`` (an eagerness) gives the persona ``semantic_vad`` turn detection instead of
    its own, for both paths; ``stretch_pause_ms`` lengthens each clip's longest inner pause.
    """
    if turns < 1 or warmup < 0:
        raise ValueError("turns must be at least 1 and warmup at least 0")
    clip_paths = [clip] if isinstance(clip, Path) else list(clip)
    for needed in (*clip_paths, characters / f"{character}.yaml"):
        if not needed.exists():
            raise FileNotFoundError(
                f"{needed} not found: the voice benchmark runs from a source checkout "
                "(or give it a clip and a characters folder)"
            )
    clips = [(c.name, _game_speech(c, stretch_pause_ms)) for c in clip_paths]
    with tempfile.TemporaryDirectory(prefix="npcd-bench-voice-") as tmp:
        # Only this NPC (and the bases it may extend): `--model npcd-local:<id>` pins the
        # backend's persona for every session npcd opens, so npcd must open just this one.
        folder = Path(tmp)
        for source in [characters / f"{character}.yaml", *characters.glob("_*.yaml")]:
            shutil.copy(source, folder / source.name)
        if semantic is not None:
            copy = folder / f"{character}.yaml"
            data = yaml.safe_load(copy.read_text())
            data["turn_detection"] = {"type": "semantic_vad", "eagerness": semantic}
            copy.write_text(yaml.safe_dump(data, sort_keys=False))
        catalog = load_directory(folder)
        if character not in catalog.personas:
            raise ValueError(f"{character}: {[str(i) for i in catalog.issues] or 'not found'}")
        persona = catalog.personas[character].persona
        model = f"npcd-local:{character}"
        with Daemon(["backend", "--listen", "127.0.0.1:0", "--characters", tmp]) as backend:
            base = f"ws://{backend.wait_for(BACKEND_LINE, timeout=120).group(1)}/v1"
            serve_args = ["serve", "--listen", "127.0.0.1:0", "--characters", tmp]
            # The bench player is remembered (memory on, as in a game), in the temp folder.
            serve_args += ["--data-dir", str(folder / "memory")]
            # `npcd backend` runs without keys here, so npcd connects without one.
            with Daemon([*serve_args, "--backend", base, "--model", model]) as serve:
                target, _ = wait_listening(serve, 60)
                wait_serving(serve, target, 60)
                url = f"{base}/realtime?model={model}"
                turn_log = asyncio.run(_converse(target, url, persona, clips, turns, warmup))
    vad = persona.turn_detection
    return {
        "benchmark": "voice",
        "backend": "local (npcd backend, own process)",
        "character": character,
        "clip": ", ".join(name for name, _ in clips),
        "clip_s": round(sum(len(s) for _, s in clips) * CHUNK_S / len(clips), 2),
        "turn_detection": vad.type
        + (f" {vad.eagerness or 'auto'}" if vad.type == "semantic_vad" else ""),
        "stretch_pause_ms": stretch_pause_ms,
        "vad_silence_ms": vad.silence_duration_ms,
        "turns": turns,
        "warmup": warmup,
        **_summary(turn_log),
        "turn_log": turn_log,
    }


def format_table(result: dict[str, Any]) -> str:
    """The two paths and npcd's share, then npcd's own in-band split."""

    def row(label: str, stats: dict[str, float], scale: float = 1.0) -> str:
        cells = "".join(f"{stats[k] * scale:9.1f}" for k in ("p50", "p99", "max") if k in stats)
        return f"  {label:44}{cells}"

    vad = result["turn_detection"]
    if vad == "server_vad":
        vad += f", silence {result['vad_silence_ms']} ms"
    lines = [
        f"voice to voice, local backend: {result['character']} hears {result['clip']} "
        f"({result['clip_s']:.1f} s on average), {result['turns']} turns per path "
        f"(+{result['warmup']} warm-up), {vad}",
        f"  {'end of speech -> first NPC audio, ms':44}{'p50':>9}{'p99':>9}{'max':>9}",
        row("through npcd", result["through_npcd_ms"]),
        row("direct to the backend", result["direct_ms"]),
        row("npcd's share (through - direct, per stat)", result["npcd_share_ms"]),
        "  in-band ResponseDone.latency (VAD stop -> first audio sent), ms",
        row("first_output_us", result["inband_us"]["first_output"], 1e-3),
        row("backend_us", result["inband_us"]["backend"], 1e-3),
    ]
    lines.append(row("npcd_us", result["inband_us"]["npcd"], 1e-3))
    lines.append("  (p99 is nearest-rank: with under 100 turns it is the slowest turn)")
    pause = result["stretch_pause_ms"]
    lines.append(
        f"  WER {result['wer']:.3f} over {result['transcribed_turns']} transcribed turns; "
        f"false turn ends {result['false_turn_ends']} of {len(result['turn_log'])} turns"
        + (f" (longest inner pause stretched to {pause} ms)" if pause else "")
    )
    if not result["all_completed"] or result["early_responses"]:
        lines.append(
            f"  WARNING: not every response completed, or {result['early_responses']} answered "
            "before the end of speech; see turn_log"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--turns", type=int, default=6, help="measured turns per path")
    parser.add_argument("--warmup", type=int, default=1, help="turns per path left out")
    parser.add_argument("--character", default="blacksmith")
    parser.add_argument(
        "--clip",
        type=Path,
        action="append",
        help="mono PCM16 WAV of speech (repeatable; default: the three LibriVox fixtures)",
    )
    parser.add_argument("--characters", type=Path, default=REPO / "characters")
    parser.add_argument(
        "--semantic",
        choices=("low", "medium", "high", "auto"),
        help="use semantic_vad with this eagerness instead of the persona's turn detection",
    )
    parser.add_argument(
        "--stretch-pause", type=int, default=0, metavar="MS", help="lengthen inner pauses to MS"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    result = run(
        turns=args.turns,
        warmup=args.warmup,
        character=args.character,
        clip=args.clip or CLIPS,
        characters=args.characters,
        semantic=args.semantic,
        stretch_pause_ms=args.stretch_pause,
    )
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
