"""The embedded local backend, driven by the official `openai` SDK over loopback.

Every frame the backend sends is validated against the SDK's own models (discriminated, no
undeclared keys beyond the allow-list), and the engines are the real ones: Silero VAD,
Whisper tiny.en, eSpeak NG and MiniLM.
"""

from __future__ import annotations

import wave
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import orjson
import pytest
from openai import AsyncOpenAI

from npcd import audio
from npcd.localbackend.defaults import default_engines
from npcd.localbackend.server import BackendOptions, LocalBackend
from npcd.personas import load_directory
from npcd.realtime.values import Dialect
from tests.conftest import REPO, SAMPLES
from tests.unit.engines.speech import speech_edges_ms
from tests.unit.engines.speech import wer as wer_of
from tests.unit.sdk_validator import undeclared_keys, validate

KEY = "sk-local-test-0123456789"
SPEECH = REPO / "tests" / "fixtures" / "speech"
ALLOWED = {
    Dialect.GA: {"$.session.object", "$.session.id", "$.session.expires_at"},
    Dialect.BETA: {"$.session.object", "$.session.expires_at"},
}
PERSONAS = {pid: loaded.persona for pid, loaded in load_directory(SAMPLES).personas.items()}


@pytest.fixture(scope="module")
def engines() -> Any:
    built = default_engines()
    assert built.warm is not None
    built.warm(PERSONAS.values())
    return built


async def start(engines: Any, **options: Any) -> LocalBackend:
    backend = LocalBackend(engines, PERSONAS, BackendOptions(api_keys=(KEY,), **options))
    await backend.start()
    return backend


@pytest.fixture
async def backend(engines: Any) -> AsyncIterator[LocalBackend]:
    server = await start(engines)
    yield server
    await server.close()


def client(backend: LocalBackend, key: str = KEY) -> AsyncOpenAI:
    return AsyncOpenAI(
        api_key=key,
        base_url=backend.base_url,
        websocket_base_url=backend.base_url.replace("http://", "ws://"),
    )


class Recorder:
    """Reads raw frames from an SDK connection, validating each against the SDK's models."""

    def __init__(self, conn: Any, dialect: Dialect):
        self.conn = conn
        self.dialect = dialect
        self.seen: list[dict[str, Any]] = []

    async def next(self) -> dict[str, Any]:
        raw = await self.conn.recv_bytes()
        event: dict[str, Any] = orjson.loads(raw)
        model = validate(event, self.dialect, "server")
        extra = set(undeclared_keys(model)) - ALLOWED[self.dialect]
        assert not extra, f"undeclared keys {extra} in {raw[:200]!r}"
        self.seen.append(event)
        return event

    async def until(self, *types: str) -> dict[str, Any]:
        while True:
            event = await self.next()
            if event["type"] in types:
                return event

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.seen if e["type"] == kind]


async def say(conn: Any, text: str) -> None:
    """The player says ``text`` (a user text item)."""
    await conn.conversation.item.create(
        item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    )


async def cancelled_turn(conn: Any, rec: Recorder, text: str) -> dict[str, Any]:
    """Ask for a response to ``text``, cancel it once created; the ``response.done`` event."""
    await say(conn, text)
    await conn.response.create()
    await rec.until("response.created")
    await conn.response.cancel()
    return await rec.until("response.done")


def pcm_of(events: list[dict[str, Any]]) -> bytes:
    return b"".join(audio.b64decode(e["delta"]) for e in events)


def rms(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    return float(np.sqrt(np.mean(samples**2))) if samples.size else 0.0


GA_SESSION: Any = {
    "type": "realtime",
    "instructions": "You are Brom Ironhand, the blacksmith.",
    "output_modalities": ["audio"],
    "audio": {"output": {"voice": "ash"}},
    "tools": [
        {
            "type": "function",
            "name": "sell_item",
            "description": "Sell an item.",
            "parameters": {"type": "object", "properties": {"item": {"type": "string"}}},
        }
    ],
}


async def test_ga_text_turn_speaks_non_silent_24k_pcm16(backend: LocalBackend) -> None:
    async with client(backend).realtime.connect(model="gpt-realtime") as conn:
        rec = Recorder(conn, Dialect.GA)
        assert (await rec.next())["type"] == "session.created"
        await conn.session.update(session=GA_SESSION)
        await rec.until("session.updated")
        await say(conn, "what do you sell?")
        await conn.response.create()
        done = await rec.until("response.done")
    assert done["response"]["status"] == "completed"
    pcm = pcm_of(rec.of("response.output_audio.delta"))
    assert len(pcm) > 48_000 and rms(pcm) > 500, "at least a second of audible speech"
    transcript = rec.of("response.output_audio_transcript.done")[0]["transcript"]
    assert "sword" in transcript.lower(), "matched the blacksmith's wares line by meaning"
    order = [e["type"] for e in rec.seen]
    milestones = [
        "response.created",
        "response.output_item.added",
        "response.output_audio.delta",
        "response.done",
    ]
    positions = [order.index(kind) for kind in milestones]
    assert positions == sorted(positions)


async def test_function_call_round_trip(backend: LocalBackend) -> None:
    async with client(backend).realtime.connect(model="npcd-local:blacksmith") as conn:
        rec = Recorder(conn, Dialect.GA)
        await rec.next()
        await conn.session.update(session=GA_SESSION)
        await say(conn, "I'd like to buy the iron sword")
        await conn.response.create()
        call = await rec.until("response.function_call_arguments.done")
        await rec.until("response.done")
        assert call["name"] == "sell_item"
        assert orjson.loads(call["arguments"]) == {"item": "iron sword", "price_gold": 40}
        await conn.conversation.item.create(
            item={
                "type": "function_call_output",
                "call_id": call["call_id"],
                "output": '{"ok": true}',
            }
        )
        await conn.response.create()
        follow_up = await rec.until("response.output_audio_transcript.done")
        done = await rec.until("response.done")
    assert follow_up["transcript"] and done["response"]["status"] == "completed"


async def test_cancel_ends_the_response_as_cancelled(backend: LocalBackend) -> None:
    async with client(backend).realtime.connect(model="npcd-local:innkeeper") as conn:
        rec = Recorder(conn, Dialect.GA)
        await rec.next()
        done = await cancelled_turn(conn, rec, "tell me a story")
    assert done["response"]["status"] == "cancelled"
    assert done["response"]["status_details"]["reason"] == "client_cancelled"


async def test_beta_dialect_text_turn_and_call(backend: LocalBackend) -> None:
    async with client(backend).beta.realtime.connect(model="npcd-local:gate_guard") as conn:
        rec = Recorder(conn, Dialect.BETA)
        await rec.next()
        await conn.session.update(
            session={
                "modalities": ["audio", "text"],
                "voice": "coral",
                "tools": [
                    {
                        "type": "function",
                        "name": "open_gate",
                        "description": "Open it.",
                        "parameters": {"type": "object", "properties": {}},
                    }
                ],
            }
        )
        await say(conn, "here is the toll, ten silver")
        await conn.response.create()
        await rec.until("response.done")
    assert rec.of("response.audio.delta"), "beta names: response.audio.delta"
    # Beta's arguments.done carries no name; the function call item does.
    calls = [
        e["item"]
        for e in rec.of("response.output_item.done")
        if e["item"]["type"] == "function_call"
    ]
    assert [c["name"] for c in calls] == ["open_gate"]
    assert "name" not in rec.of("response.function_call_arguments.done")[0]
    assert not rec.of("conversation.item.done"), "beta has no conversation.item.done"


def fixture_pcm24k(name: str, lead_ms: int = 1000, tail_ms: int = 1500) -> tuple[bytes, int, int]:
    """A LibriVox clip at 24 kHz with silence around it; returns (pcm, speech start, end) ms."""
    with wave.open(str(SPEECH / f"{name}.wav")) as clip:
        raw = clip.readframes(clip.getnframes())
    converter = audio.InputConverter(audio.AudioFormat(audio.Encoding.PCM16, 16000))
    speech = converter.convert(raw) + converter.flush()
    true_start, true_end = speech_edges_ms(audio.pcm16_to_float32(raw))
    start, end = lead_ms + true_start, lead_ms + true_end
    pcm = bytes(lead_ms * 48) + speech + bytes(tail_ms * 48)
    return pcm, start, end


REFERENCES = {
    line.rsplit("(", 1)[1].rstrip(")\n"): line.split("</s>")[0].removeprefix("<s>").strip()
    for line in (SPEECH / "transcription.txt").read_text().splitlines()
    if line.strip()
}


#: eSpeak's pitch flutter carries over from one call to the next, so the same line never renders
#: twice alike, and Whisper tiny.en hears some lines differently per rendering: "What do you
#: sell at the forge today" failed WER 0.4 in 15 % of 32 renderings (on CI too). This line had
#: WER 0.00 in 80 renderings at random flutter phases, under CTranslate2's AVX2 and AVX512 kernels.
ESPEAK_LINE = "Do you have any healing potions for sale"


def espeak_pcm24k(engines: Any, voice: str = "cedar") -> tuple[bytes, int, int]:
    """The same shape of input, spoken by eSpeak at another voice than any NPC here uses."""
    speech = b"".join(c.pcm for c in engines.synthesizer.synthesize(ESPEAK_LINE, voice))
    to16k = audio.OutputConverter(audio.AudioFormat(audio.Encoding.PCM16, 16000))
    true_start, true_end = speech_edges_ms(
        audio.pcm16_to_float32(to16k.convert(speech) + to16k.flush())
    )
    pcm = bytes(1000 * 48) + speech + bytes(1500 * 48)
    return pcm, 1000 + true_start, 1000 + true_end


@pytest.mark.parametrize("clip", [*sorted(REFERENCES), "espeak-cedar"])
async def test_spoken_question_vad_edges_transcript_and_answer(
    backend: LocalBackend, engines: Any, clip: str
) -> None:
    if clip == "espeak-cedar":
        pcm, true_start, true_end = espeak_pcm24k(engines)
        reference, bound = ESPEAK_LINE.lower(), 0.25  # at most two of eight words wrong
    else:
        pcm, true_start, true_end = fixture_pcm24k(clip)
        # 0.00 / 0.25 / 0.00 measured here; engines tests bound the overall rate (<= 0.2).
        reference, bound = REFERENCES[clip], 0.4
    async with client(backend).realtime.connect(model="npcd-local:herbalist") as conn:
        rec = Recorder(conn, Dialect.GA)
        await rec.next()
        await conn.session.update(
            session={
                "type": "realtime",
                "audio": {
                    "input": {
                        "transcription": {"model": "whisper-1"},
                        "turn_detection": {
                            "type": "server_vad",
                            "prefix_padding_ms": 0,
                            "silence_duration_ms": 500,
                        },
                    }
                },
            }
        )
        await rec.until("session.updated")
        for offset in range(0, len(pcm), 960):  # 20 ms chunks
            await conn.input_audio_buffer.append(audio=audio.b64encode(pcm[offset : offset + 960]))
        started = await rec.until("input_audio_buffer.speech_started")
        stopped = await rec.until("input_audio_buffer.speech_stopped")
        heard = await rec.until("conversation.item.input_audio_transcription.completed")
        await rec.until("response.done")
    assert abs(started["audio_start_ms"] - true_start) <= 100
    assert abs(stopped["audio_end_ms"] - true_end) <= 100
    assert heard["item_id"] == stopped["item_id"], "transcript correlated by item id"
    wer = wer_of(reference, heard["transcript"])
    print(f"WER {clip}: {wer:.2f} ({heard['transcript']!r})")
    assert wer <= bound, f"WER {wer:.2f}: {heard['transcript']!r}"
    assert rms(pcm_of(rec.of("response.output_audio.delta"))) > 500


async def send_raw(conn: Any, frame: str) -> None:
    await conn._connection.send(frame)  # the SDK validates nothing; raw frames test the server


@pytest.mark.parametrize(
    ("frame", "code", "param"),
    [
        ("{not json", "invalid_event", None),
        ('{"event_id": "e1"}', "invalid_event", None),
        ('{"type": "bogus.event"}', "invalid_value", "type"),
        ('{"type": "input_audio_buffer.append", "audio": "***"}', "invalid_value", "audio"),
        (
            '{"type": "session.update", "session": {"type": "realtime", "voice": "ash"}}',
            "unknown_parameter",
            "session.voice",
        ),
        (
            '{"type": "session.update", "session": {"instructions": "x"}}',
            "missing_required_parameter",
            "session.type",
        ),
        ('{"type": "input_audio_buffer.commit"}', "input_audio_buffer_commit_empty", None),
        ('{"type": "response.cancel"}', "response_cancel_not_active", None),
        (
            '{"type": "conversation.item.delete", "item_id": "item_nope"}',
            "invalid_value",
            "item_id",
        ),
    ],
)
async def test_invalid_client_events_get_errors_and_the_session_goes_on(
    backend: LocalBackend, frame: str, code: str, param: str | None
) -> None:
    async with client(backend).realtime.connect(model="gpt-realtime") as conn:
        rec = Recorder(conn, Dialect.GA)
        await rec.next()
        await send_raw(conn, frame)
        error = (await rec.until("error"))["error"]
        assert (error["code"], error.get("param")) == (code, param)
        await conn.session.update(session={"type": "realtime", "instructions": "still here"})
        assert (await rec.until("session.updated"))["session"]["instructions"] == "still here"


async def test_one_response_at_a_time_and_truncation_rules(backend: LocalBackend) -> None:
    async with client(backend).realtime.connect(model="npcd-local:innkeeper") as conn:
        rec = Recorder(conn, Dialect.GA)
        await rec.next()
        await say(conn, "tell me a story")
        user_item = (await rec.until("conversation.item.done"))["item"]["id"]
        await conn.response.create()
        await conn.response.create()
        error = (await rec.until("error"))["error"]
        assert error["code"] == "conversation_already_has_active_response"
        await rec.until("response.done")
        item = rec.of("response.output_item.done")[0]["item"]["id"]
        produced = len(pcm_of(rec.of("response.output_audio.delta"))) // 48
        await conn.conversation.item.truncate(
            item_id=item, content_index=0, audio_end_ms=produced + 500
        )
        too_long = (await rec.until("error"))["error"]
        assert too_long["message"].startswith(f"Audio content of {produced}ms is already shorter")
        await conn.conversation.item.truncate(item_id=user_item, content_index=0, audio_end_ms=10)
        assert (await rec.until("error"))["error"]["code"] == "unsupported_content_type"
        await conn.conversation.item.truncate(item_id=item, content_index=0, audio_end_ms=400)
        cut = await rec.until("conversation.item.truncated")
        assert cut["audio_end_ms"] == 400
        await conn.session.update(
            session={"type": "realtime", "audio": {"output": {"voice": "sage"}}}
        )
        assert (await rec.until("error"))["error"]["code"] == "cannot_update_voice"


async def test_bad_key_is_refused_and_client_secrets_work(backend: LocalBackend) -> None:
    with pytest.raises(Exception, match="401"):
        async with client(backend, "sk-wrong-0123456789").realtime.connect(model="x") as conn:
            await conn.recv()
    secret = await client(backend).realtime.client_secrets.create(
        expires_after={"anchor": "created_at", "seconds": 60},
        session={"type": "realtime", "model": "gpt-realtime"},
    )
    assert secret.value.startswith("ek_")
    async with client(backend, secret.value).realtime.connect(model="gpt-realtime") as conn:
        assert (await conn.recv()).type == "session.created"
    backend.secrets.issued[secret.value] = 1  # expired long ago
    with pytest.raises(Exception, match="401"):
        async with client(backend, secret.value).realtime.connect(model="gpt-realtime") as conn:
            await conn.recv()


async def test_maximum_duration_closes_like_the_service(engines: Any) -> None:
    server = await start(engines, max_session_s=0.5)
    try:
        async with client(server).realtime.connect(model="gpt-realtime") as conn:
            await conn.recv()
            with pytest.raises(Exception):  # noqa: B017 - the SDK raises on the close
                while True:
                    await conn.recv()
            closed = conn._connection
        assert closed.close_code == 1001
        assert closed.close_reason == "Your session hit the maximum duration of 1 minutes."
    finally:
        await server.close()


async def test_openai_faithful_mode_refuses_beta(engines: Any) -> None:
    server = await start(engines, refuse_beta=True)
    try:
        async with client(server).beta.realtime.connect(model="gpt-realtime") as conn:
            raw = orjson.loads(await conn.recv_bytes())
            assert raw["error"]["code"] == "beta_api_shape_disabled"
            with pytest.raises(Exception):  # noqa: B017
                await conn.recv()
            assert conn._connection.close_code == 4000
    finally:
        await server.close()


async def test_beta_audio_turn_and_cancel(backend: LocalBackend) -> None:
    pcm, _, _ = fixture_pcm24k("sense_and_sensibility_01_austen_64kb-0870")
    async with client(backend).beta.realtime.connect(model="npcd-local:herbalist") as conn:
        rec = Recorder(conn, Dialect.BETA)
        await rec.next()
        await conn.session.update(
            session={
                "input_audio_transcription": {"model": "whisper-1"},
                "turn_detection": {"type": "server_vad", "silence_duration_ms": 500},
            }
        )
        for offset in range(0, len(pcm), 960):
            await conn.input_audio_buffer.append(audio=audio.b64encode(pcm[offset : offset + 960]))
        await rec.until("input_audio_buffer.speech_stopped")
        heard = await rec.until("conversation.item.input_audio_transcription.completed")
        await rec.until("response.done")
        assert "dashwood" in heard["transcript"].lower()
        assert rms(pcm_of(rec.of("response.audio.delta"))) > 500
        done = await cancelled_turn(conn, rec, "any rumours?")
    assert done["response"]["status"] == "cancelled"


async def test_usage_is_sized_like_the_services(backend: LocalBackend) -> None:
    """A spoken turn's usage counts audio at the service's rates (npcd prices it per model);
    the next turn reads the spoken reply as input audio and the first turn's input from cache."""
    pcm, _, _ = fixture_pcm24k("sense_and_sensibility_01_austen_64kb-0880")
    async with client(backend).realtime.connect(model="npcd-local:blacksmith") as conn:
        rec = Recorder(conn, Dialect.GA)
        await rec.next()
        await conn.session.update(session=GA_SESSION)
        await rec.until("session.updated")
        for offset in range(0, len(pcm), 960):
            await conn.input_audio_buffer.append(audio=audio.b64encode(pcm[offset : offset + 960]))
        stopped = await rec.until("input_audio_buffer.speech_stopped")
        first = (await rec.until("response.done"))["response"]["usage"]
        spoken = pcm_of(rec.of("response.output_audio.delta"))
        [transcript] = [e["transcript"] for e in rec.of("response.output_audio_transcript.done")]
        await say(conn, "what do you sell?")
        await conn.response.create()
        second = (await rec.until("response.done"))["response"]["usage"]
    print(f"{len(spoken) / 48:.0f} ms spoken, first {first}, second {second}")
    heard, said = first["input_token_details"], first["output_token_details"]
    assert abs(said["audio_tokens"] - len(spoken) / 48 / 50) <= 1, "1 token per 50 ms"
    assert said["text_tokens"] == -(-len(transcript) // 4)
    assert heard["text_tokens"] > len(GA_SESSION["instructions"]) / 4, "instructions and tools"
    # The player's committed audio at 1 token per 100 ms: at least up to the end of speech.
    assert stopped["audio_end_ms"] / 100 <= heard["audio_tokens"] <= len(pcm) / 48 / 100 + 1
    assert first["input_tokens"] == heard["text_tokens"] + heard["audio_tokens"]
    assert first["total_tokens"] == first["input_tokens"] + first["output_tokens"]
    assert heard["cached_tokens"] == 0
    again = second["input_token_details"]
    assert again["audio_tokens"] == heard["audio_tokens"] + said["audio_tokens"]
    assert again["text_tokens"] == heard["text_tokens"] + -(-len("what do you sell?") // 4)
    assert again["cached_tokens_details"] == {
        "text_tokens": heard["text_tokens"],
        "audio_tokens": heard["audio_tokens"],
        "image_tokens": 0,
    }
    assert again["cached_tokens"] == first["input_tokens"]
