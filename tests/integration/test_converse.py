"""Converse end to end: a real grpc.aio server, the real pool and the embedded local backend
with its real engines, and a client that talks like a game engine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from npcd import audio
from npcd.config import Settings, parse_listen
from npcd.localbackend.defaults import default_engines
from npcd.server.app import RunningServer, serving, wait_for_npcs
from npcd.v1 import npcd_pb2 as pb
from npcd.v1 import npcd_pb2_grpc as pb_grpc
from tests.conftest import SAMPLES

TIMEOUT = 30.0
F32_48K = pb.AudioFormat(encoding=pb.AUDIO_ENCODING_FLOAT32, sample_rate_hz=48000)
ALL_CAPS = pb.Capabilities(transcripts=True, actions=True, vad_events=True, latency_reports=True)


@pytest.fixture(scope="module", autouse=True)
def warm_engines() -> None:
    """Load the speech models once for the module (each daemon then starts in well under 1 s)."""
    engines = default_engines()
    assert engines.warm is not None
    engines.warm([])


async def start_daemon(characters: Path = SAMPLES, **options: Any) -> Any:
    settings = Settings(listen=parse_listen("127.0.0.1:0"), characters=characters, **options)
    context = serving(settings, with_backend=True)
    running: RunningServer = await context.__aenter__()
    ready = await asyncio.wait_for(wait_for_npcs(running), TIMEOUT)
    cap = settings.max_sessions
    assert ready == (
        min(cap, len(running.catalog.personas)) if cap else len(running.catalog.personas)
    )
    return context, running


@pytest.fixture
async def daemon() -> AsyncIterator[RunningServer]:
    context, running = await start_daemon()
    try:
        yield running
    finally:
        await context.__aexit__(None, None, None)


class Game:
    """One Converse stream as a game engine drives it."""

    def __init__(self, channel: grpc.aio.Channel, start: pb.Start):
        self.requests: asyncio.Queue[pb.ConverseRequest | None] = asyncio.Queue()
        self.requests.put_nowait(pb.ConverseRequest(start=start))
        self.call = pb_grpc.NpcServiceStub(channel).Converse(self._requests())
        self.seen: list[pb.ConverseResponse] = []

    async def _requests(self) -> AsyncIterator[pb.ConverseRequest]:
        while (request := await self.requests.get()) is not None:
            yield request

    def send(self, **kind: Any) -> None:
        self.requests.put_nowait(pb.ConverseRequest(**kind))

    def end(self) -> None:
        self.requests.put_nowait(None)

    async def until(self, kind: str) -> Any:
        """The next event of ``kind`` (everything before it is kept in `seen`)."""
        try:
            return await self._until(kind)
        except TimeoutError:
            seen = [m.WhichOneof("kind") for m in self.seen]
            raise AssertionError(f"no {kind} within {TIMEOUT} s; saw {seen}") from None

    async def _until(self, kind: str) -> Any:
        async with asyncio.timeout(TIMEOUT):
            while True:
                message = await self.call.read()
                assert message is not grpc.aio.EOF, f"stream ended before {kind}"
                self.seen.append(message)
                if message.WhichOneof("kind") == kind:
                    return getattr(message, kind)

    def of(self, kind: str) -> list[Any]:
        return [getattr(m, kind) for m in self.seen if m.WhichOneof("kind") == kind]


def start(character: str, **fields: Any) -> pb.Start:
    fields.setdefault("capabilities", ALL_CAPS)
    return pb.Start(character_id=character, player=pb.Player(id="p1", name="Ada"), **fields)


def speech_48k_f32(text: str, voice: str = "echo") -> bytes:
    """What a game's microphone would capture: synthetic speech as 48 kHz float32 mono."""
    pcm = b"".join(c.pcm for c in default_engines().synthesizer.synthesize(text, voice))
    converter = audio.OutputConverter(audio.AudioFormat(audio.Encoding.FLOAT32, 48000))
    return converter.convert(pcm) + converter.flush()


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def loudness(f32: bytes) -> float:
    samples = np.frombuffer(f32, dtype="<f4")
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) if samples.size else 0.0


async def test_spoken_question_in_48k_float32_gets_speech_back(daemon: RunningServer) -> None:
    async with grpc.aio.insecure_channel(daemon.address.grpc_target) as channel:
        game = Game(channel, start("blacksmith", input_format=F32_48K, output_format=F32_48K))
        ready = await game.until("ready")
        assert ready.output_format.sample_rate_hz == 48000
        voice = speech_48k_f32("Hello. What do you have for sale?")
        silence = bytes(4 * 48 * 1500)
        for chunk in chunks(voice + silence, 3840):  # 20 ms of 48 kHz float32
            game.send(audio=pb.AudioChunk(data=chunk))
        done = await game.until("response_done")
        game.end()
    kinds = [m.WhichOneof("kind") for m in game.seen]
    assert (
        kinds.index("speech_started")
        < kinds.index("speech_stopped")
        < kinds.index("response_started")
    )
    # The transcript may arrive after the NPC started answering: it is matched by utterance id.
    [heard] = [t for t in game.of("player_transcript") if t.is_final]
    assert heard.utterance_id == game.of("speech_stopped")[0].utterance_id
    [started] = game.of("response_started")
    assert "sale" in heard.text.lower()
    assert started.cause == pb.RESPONSE_CAUSE_PLAYER_SPEECH
    assert done.status == pb.RESPONSE_STATUS_COMPLETED
    npc_audio = [a for a in game.of("audio") if a.response_id == done.response_id]
    data = b"".join(a.data for a in npc_audio)
    assert len(data) % 4 == 0 and loudness(data) > 0.02, "audible float32 speech"
    assert abs(len(data) / 4 / 48 - done.audio_ms) <= 2, "audio_ms matches what was sent"
    sequences = [a.sequence for a in npc_audio]
    assert sequences[0] == 0 and sequences == sorted(set(sequences)), (
        "in order; a gap is a merged backlog (the proto: only order matters)"
    )
    assert all(b.start_ms >= a.start_ms for a, b in zip(npc_audio, npc_audio[1:], strict=False))
    assert "sword" in done.transcript.lower()
    assert done.latency.first_output_us > 0 and done.latency.npcd_us < done.latency.first_output_us


async def test_interrupt_cuts_the_npc_where_the_player_stopped_hearing(
    daemon: RunningServer,
) -> None:
    async with grpc.aio.insecure_channel(daemon.address.grpc_target) as channel:
        game = Game(channel, start("innkeeper"))
        await game.until("ready")
        game.send(text=pb.TextMessage(text="tell me a story"))
        done = await game.until("response_done")
        assert done.audio_ms > 2000, "a long line, still playing in the game"
        game.send(playback=pb.PlaybackProgress(response_id=done.response_id, played_ms=900))
        game.send(interrupt=pb.Interrupt(reason="player walked away"))
        cut = await game.until("interrupted")
        assert (cut.response_id, cut.cause, cut.truncated_at_ms) == (
            done.response_id,
            pb.INTERRUPT_CAUSE_CLIENT,
            900,
        )
        # The next turn's events come after the backend confirmed the cut (one ordered link).
        game.send(text=pb.TextMessage(text="an ale please"))
        await game.until("response_done")
        slot = daemon.pool.slots["innkeeper"] if daemon.pool else None
        assert slot is not None
        items = [i for i in slot.session.items_in_order() if i.truncated_ms is not None]
        assert items[0].truncated_ms == 900
        assert len(items[0].heard_text.split()) < len(done.transcript.split())
        game.end()


async def test_player_speech_interrupts_a_playing_npc(daemon: RunningServer) -> None:
    async with grpc.aio.insecure_channel(daemon.address.grpc_target) as channel:
        game = Game(channel, start("herbalist", input_format=F32_48K))
        await game.until("ready")
        game.send(text=pb.TextMessage(text="any rumours?"))
        done = await game.until("response_done")
        game.send(playback=pb.PlaybackProgress(response_id=done.response_id, played_ms=700))
        for chunk in chunks(speech_48k_f32("Wait, who is buying it?"), 3840):
            game.send(audio=pb.AudioChunk(data=chunk))
        await game.until("speech_started")
        cut = await game.until("interrupted")
        game.end()
    assert (cut.response_id, cut.cause, cut.truncated_at_ms) == (
        done.response_id,
        pb.INTERRUPT_CAUSE_PLAYER_SPEECH,
        700,
    )


async def test_action_round_trip_and_npc_continues(daemon: RunningServer) -> None:
    async with grpc.aio.insecure_channel(daemon.address.grpc_target) as channel:
        game = Game(channel, start("blacksmith"))
        await game.until("ready")
        game.send(text=pb.TextMessage(text="I want to buy a sword"), request_id="buy-1")
        request = await game.until("action_request")
        assert (request.name, request.timeout_ms) == ("sell_item", 8000)
        assert request.arguments_json == '{"item":"iron sword","price_gold":40}'
        await game.until("response_done")
        game.send(action_result=pb.ActionResult(call_id="call_nope", ok=True))
        unknown = await game.until("error")
        assert unknown.code == pb.ERROR_CODE_UNKNOWN_CALL_ID
        game.send(
            action_result=pb.ActionResult(call_id=request.call_id, ok=True, result_json="{gold: 1")
        )
        bad_json = await game.until("error")
        assert bad_json.code == pb.ERROR_CODE_INVALID_ACTION_RESULT, "passed on as text"
        follow = await game.until("response_started")
        done = await game.until("response_done")
        game.end()
    assert follow.cause == pb.RESPONSE_CAUSE_ACTION_RESULT
    assert done.status == pb.RESPONSE_STATUS_COMPLETED and done.transcript


async def test_unanswered_action_times_out_and_npc_is_told(daemon: RunningServer) -> None:
    async with grpc.aio.insecure_channel(daemon.address.grpc_target) as channel:
        game = Game(channel, start("gate_guard"))
        await game.until("ready")
        game.send(trigger=pb.Trigger(name="player_drew_weapon", params={"weapon": "axe"}))
        request = await game.until("action_request")
        assert (request.name, request.timeout_ms) == ("raise_alarm", 3000)
        timed_out = await game.until("error")
        follow = await game.until("response_started")
        game.end()
    assert timed_out.code == pb.ERROR_CODE_ACTION_TIMEOUT
    assert follow.cause == pb.RESPONSE_CAUSE_ACTION_RESULT


async def test_backend_drop_between_turns_keeps_the_conversation(daemon: RunningServer) -> None:
    assert daemon.local_backend is not None
    async with grpc.aio.insecure_channel(daemon.address.grpc_target) as channel:
        game = Game(channel, start("herbalist"))
        await game.until("ready")
        game.send(text=pb.TextMessage(text="any rumours?"))
        first = await game.until("response_done")
        assert daemon.local_backend.drop_connections() == 4
        status = await game.until("session_status")
        assert status.state == pb.SESSION_STATE_RECONNECTING
        status = await game.until("session_status")
        assert status.state == pb.SESSION_STATE_RESUMED and status.context_kept
        game.send(text=pb.TextMessage(text="can I help?"))
        second = await game.until("response_done")
        game.end()
    assert second.status == pb.RESPONSE_STATUS_COMPLETED and not game.of("error")
    assert daemon.pool is not None
    remembered = [i.text for i in daemon.pool.slots["herbalist"].session.items_in_order()]
    assert "any rumours?" in remembered, "the new session was given the conversation so far"
    assert first.transcript in remembered


async def test_session_reaching_its_limit_is_rotated_without_error() -> None:
    context, running = await start_daemon(local_session_s=2.0)
    try:
        async with grpc.aio.insecure_channel(running.address.grpc_target) as channel:
            game = Game(channel, start("blacksmith"))
            await game.until("ready")
            game.send(text=pb.TextMessage(text="who are you?"))
            await game.until("response_done")
            status = await game.until("session_status")
            assert status.state == pb.SESSION_STATE_ROTATED and status.context_kept
            game.send(text=pb.TextMessage(text="what do you sell?"))
            done = await game.until("response_done")
            game.end()
        assert done.status == pb.RESPONSE_STATUS_COMPLETED and not game.of("error")
        assert "sword" in done.transcript.lower()
    finally:
        await context.__aexit__(None, None, None)


async def test_second_player_is_told_the_npc_is_busy_or_waits(daemon: RunningServer) -> None:
    async with grpc.aio.insecure_channel(daemon.address.grpc_target) as channel:
        first = Game(channel, start("herbalist"))
        await first.until("ready")
        second = Game(channel, start("herbalist"))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await second.until("ready")
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "in another conversation" in (caught.value.details() or "")
        waiting = Game(channel, start("herbalist", busy_policy=pb.BUSY_POLICY_WAIT))
        reader = asyncio.create_task(waiting.until("ready"))
        done, _ = await asyncio.wait([reader], timeout=0.5)
        assert not done, "a waiting player gets Ready only when the NPC is free"
        first.end()
        await asyncio.wait_for(reader, TIMEOUT)
        waiting.end()


async def test_bad_frames_end_only_their_own_stream(daemon: RunningServer) -> None:
    async with grpc.aio.insecure_channel(daemon.address.grpc_target) as channel:
        healthy = Game(channel, start("blacksmith"))
        await healthy.until("ready")
        cases = [
            (
                start("gate_guard"),
                {"audio": pb.AudioChunk(data=b"\x00" * 641)},
                "not a multiple of 2",
            ),
            (
                start("gate_guard", input_format=pb.AudioFormat(sample_rate_hz=12345)),
                None,
                "start.input_format",
            ),
            (start("dragon"), None, "no character 'dragon'"),
        ]
        for opening, follow_up, reason in cases:
            broken = Game(channel, opening)
            if follow_up is not None:
                await broken.until("ready")
                broken.send(**follow_up)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await broken.until("response_done")
            expected = (
                grpc.StatusCode.NOT_FOUND
                if "dragon" in reason
                else (grpc.StatusCode.INVALID_ARGUMENT)
            )
            assert caught.value.code() == expected
            assert reason in (caught.value.details() or "")
        healthy.send(text=pb.TextMessage(text="what do you sell?"))
        done = await healthy.until("response_done")
        healthy.end()
    assert done.status == pb.RESPONSE_STATUS_COMPLETED


async def test_push_to_talk_commit(daemon: RunningServer) -> None:
    pcm16k = pb.AudioFormat(encoding=pb.AUDIO_ENCODING_PCM16, sample_rate_hz=16000)
    async with grpc.aio.insecure_channel(daemon.address.grpc_target) as channel:
        game = Game(channel, start("innkeeper", input_format=pcm16k))
        ready = await game.until("ready")
        assert ready.turn_mode == pb.TURN_MODE_PUSH_TO_TALK, "the persona's turn detection: none"
        game.send(commit=pb.Commit())
        empty = await game.until("error")
        assert empty.code == pb.ERROR_CODE_EMPTY_COMMIT
        pcm = b"".join(
            c.pcm for c in default_engines().synthesizer.synthesize("Do you have rooms?", "alloy")
        )
        converter = audio.OutputConverter(audio.AudioFormat(audio.Encoding.PCM16, 16000))
        for chunk in chunks(converter.convert(pcm) + converter.flush(), 640):
            game.send(audio=pb.AudioChunk(data=chunk))
        game.send(commit=pb.Commit())
        action = await game.until("action_request")
        done = await game.until("response_done")
        game.end()
    assert action.name == "rent_room"
    assert done.status == pb.RESPONSE_STATUS_COMPLETED


async def test_fifty_concurrent_conversations_without_cross_talk(tmp_path: Path) -> None:
    folder = tmp_path / "characters"
    folder.mkdir()
    voices = ["alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse"]
    for n in range(50):
        (folder / f"villager_{n:02d}.yaml").write_text(
            f"id: villager_{n:02d}\nname: Villager {n:02d}\nvoice: {voices[n % 8]}\n"
            f"backstory: Villager number {n:02d}.\n"
            "dialogue:\n  lines:\n    - when: [hello there, good day, hi]\n"
            f"      say: I am villager number {n:02d}.\n"
        )
    context, running = await start_daemon(folder)
    try:
        async with grpc.aio.insecure_channel(running.address.grpc_target) as channel:

            async def talk(n: int) -> tuple[int, pb.ResponseDone, list[pb.NpcAudio]]:
                game = Game(channel, start(f"villager_{n:02d}"))
                await game.until("ready")
                game.send(text=pb.TextMessage(text="hello there"))
                done = await game.until("response_done")
                game.end()
                return n, done, game.of("audio")

            results = await asyncio.gather(*(talk(n) for n in range(50)))
    finally:
        await context.__aexit__(None, None, None)
    for n, done, chunks_received in results:
        assert done.transcript == f"I am villager number {n:02d}.", "each NPC speaks its own line"
        assert chunks_received and {c.response_id for c in chunks_received} == {done.response_id}
    assert len({done.response_id for _, done, _ in results}) == 50


async def test_a_client_that_vanishes_releases_its_npc(daemon: RunningServer) -> None:
    async with grpc.aio.insecure_channel(daemon.address.grpc_target) as channel:
        crashed = Game(channel, start("gate_guard"))
        await crashed.until("ready")
        crashed.send(text=pb.TextMessage(text="let me through"))
        await crashed.until("response_started")
        crashed.call.cancel()  # the game crashed mid-response
        # WAIT: whichever the server sees first, the cancel or this Start, the NPC must free up.
        again = Game(channel, start("gate_guard", busy_policy=pb.BUSY_POLICY_WAIT))
        ready = await again.until("ready")
        assert ready.character.id == "gate_guard", "the NPC is free for the next player"
        again.send(text=pb.TextMessage(text="here is the toll"))
        done = await again.until("response_done")
        again.end()
    assert done.status == pb.RESPONSE_STATUS_COMPLETED
