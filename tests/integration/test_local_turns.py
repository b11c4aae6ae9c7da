"""Turn taking in the local backend on real speech streamed in real time, as a microphone would.

The clip is LibriVox "he was not an ill disposed young man", whose natural 190 ms pause after
"not" is stretched to 700 ms: longer than semantic_vad's short wait (200 ms) and shorter than
its long one (1000 ms), so only the rule on the words heard keeps the turn whole.
"""

from __future__ import annotations

import asyncio
import time
import wave
from typing import Any

from npcd import audio
from npcd.bench.voice import stretch_pause
from npcd.localbackend.server import LocalBackend
from npcd.localbackend.turns import semantic_timing
from npcd.realtime.values import Dialect
from tests.integration.test_local_backend import (
    REFERENCES,
    SPEECH,
    Recorder,
    client,
    engines,  # noqa: F401 (the module-scoped fixture)
    start,
)
from tests.unit.engines.speech import speech_edges_ms
from tests.unit.engines.speech import wer as wer_of

CLIP = "sense_and_sensibility_01_austen_64kb-0880"
CHUNK = 960  # 20 ms of PCM16 24 kHz
LEAD_MS, TAIL_MS = 500, 1500


def paused_clip() -> tuple[bytes, int]:
    """The clip with its pause stretched, at 24 kHz with silence around; (pcm, speech end ms)."""
    with wave.open(str(SPEECH / f"{CLIP}.wav")) as clip:
        raw = stretch_pause(clip.readframes(clip.getnframes()), clip.getframerate(), 700)
    _, end = speech_edges_ms(audio.pcm16_to_float32(raw))
    converter = audio.InputConverter(audio.AudioFormat(audio.Encoding.PCM16, 16000))
    speech = converter.convert(raw) + converter.flush()
    return bytes(LEAD_MS * 48) + speech + bytes(TAIL_MS * 48), LEAD_MS + end


async def test_semantic_vad_waits_through_a_pause_and_ends_soon_after_a_sentence(
    engines: Any,  # noqa: F811
) -> None:
    pcm, speech_end = paused_clip()
    backend: LocalBackend = await start(engines)
    try:
        async with client(backend).realtime.connect(model="npcd-local:herbalist") as conn:
            rec = Recorder(conn, Dialect.GA)
            await rec.next()
            await conn.session.update(
                session={
                    "type": "realtime",
                    "audio": {
                        "input": {
                            "transcription": {"model": "whisper-1"},
                            "turn_detection": {"type": "semantic_vad", "eagerness": "auto"},
                        }
                    },
                }
            )
            await rec.until("session.updated")
            sent_ms: list[float] = []  # audio sent when each event arrived

            async def read() -> None:
                while (await rec.next())["type"] != "response.done":
                    sent_ms.append(sent * 20)
                sent_ms.append(sent * 20)

            sent = 0
            reader = asyncio.create_task(read())
            begin = time.perf_counter()
            for sent, offset in enumerate(range(0, len(pcm), CHUNK), 1):  # noqa: B007
                # A microphone's pace: the turn logic races Whisper as it would in a game.
                await asyncio.sleep(max(0.0, begin + sent * 0.02 - time.perf_counter()))
                await conn.input_audio_buffer.append(
                    audio=audio.b64encode(pcm[offset : offset + CHUNK])
                )
            await asyncio.wait_for(reader, 30)
    finally:
        await backend.close()
    kinds = [e["type"] for e in rec.seen]
    assert kinds.count("input_audio_buffer.speech_stopped") == 1, "the pause did not end the turn"
    stopped_at = kinds.index("input_audio_buffer.speech_stopped")
    stopped = rec.seen[stopped_at]
    assert abs(stopped["audio_end_ms"] - speech_end) <= 100
    # Ended by the words, not by the long silence: before 1000 ms of quiet had been sent.
    waited = sent_ms[stopped_at - 2] - speech_end  # -2: session.created/updated came first
    assert 0 < waited < semantic_timing("auto").incomplete_ms, f"waited {waited:.0f} ms"
    deltas = rec.of("conversation.item.input_audio_transcription.delta")
    assert deltas and all(d["item_id"] == stopped["item_id"] for d in deltas)
    assert kinds.index(deltas[0]["type"]) < stopped_at, "partial transcripts while speaking"
    (heard,) = rec.of("conversation.item.input_audio_transcription.completed")
    assert wer_of(REFERENCES[CLIP], heard["transcript"]) <= 0.25, heard["transcript"]
