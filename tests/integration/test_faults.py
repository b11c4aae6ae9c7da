"""Backend faults and bad client bytes, as a game sees them.

A real npcd (grpc.aio server, pool, slots) talks to the real local backend through a
fault-injecting WebSocket proxy (`tests.fakes.fault_proxy`), which drops, closes, silences and
refuses on cue. The game side is a real gRPC client. Every test asserts what the player would
notice: an answer that comes (or a clear refusal), every `ResponseStarted` ended by exactly one
`ResponseDone`, and no error where the backend only rotated.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from npcd.config import Settings, parse_listen
from npcd.localbackend.defaults import default_engines
from npcd.localbackend.server import BackendOptions, LocalBackend
from npcd.personas import load_directory
from npcd.server.app import RunningServer, serving, wait_for_npcs
from npcd.server.service import READY_TIMEOUT, SERVICE_NAME
from npcd.slot import SlotState
from npcd.v1 import npcd_pb2 as pb
from tests.conftest import SAMPLES
from tests.fakes.fault_proxy import FaultProxy
from tests.integration.test_converse import (
    Game,
    chunks,
    speech_48k_f32,
    start,
    warm_engines,  # noqa: F401 - the module-wide engine warm-up fixture
)

TIMEOUT = 30.0
KEY = "sk-local-faults-0123456789"
EXPIRY = "Your session hit the maximum duration of 60 minutes."
F32_48K = pb.AudioFormat(encoding=pb.AUDIO_ENCODING_FLOAT32, sample_rate_hz=48000)


@dataclass
class Rig:
    daemon: RunningServer
    proxy: FaultProxy
    backend: LocalBackend

    @property
    def target(self) -> str:
        return self.daemon.address.grpc_target

    def slots(self) -> dict[str, Any]:
        assert self.daemon.pool is not None
        return self.daemon.pool.slots


async def make_rig(monkeypatch: pytest.MonkeyPatch, dialect: str = "ga") -> AsyncIterator[Rig]:
    catalog = load_directory(SAMPLES)
    backend = LocalBackend(
        default_engines(),
        {pid: loaded.persona for pid, loaded in catalog.personas.items()},
        BackendOptions(api_keys=(KEY,)),
    )
    await backend.start()
    proxy = FaultProxy(backend.base_url)
    await proxy.start()
    monkeypatch.setenv("NPCD_API_KEY", KEY)
    settings = Settings(
        listen=parse_listen("127.0.0.1:0"),
        characters=SAMPLES,
        backend=proxy.ws_url,
        dialect=dialect,
        reload_interval_s=0,
    )
    try:
        async with serving(settings, catalog, with_backend=True) as daemon:
            ready = await asyncio.wait_for(wait_for_npcs(daemon), TIMEOUT)
            assert ready == len(catalog.personas)
            yield Rig(daemon, proxy, backend)
    finally:
        await proxy.close()
        await backend.close()


@pytest.fixture
async def rig(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Rig]:
    async for made in make_rig(monkeypatch):
        yield made


async def status(game: Game) -> int:
    return int((await game.until("session_status")).state)


def assert_each_response_ended_once(game: Game) -> None:
    started = [m.response_started.response_id for m in game.seen if m.HasField("response_started")]
    done = [m.response_done.response_id for m in game.seen if m.HasField("response_done")]
    assert sorted(started) == sorted(done), f"started {started}, done {done}"
    assert len(set(done)) == len(done), f"a response ended twice: {done}"


async def answered(game: Game, cause: int) -> pb.ResponseDone:
    """The next response: it must be for ``cause`` and complete, with words."""
    began = await game.until("response_started")
    assert began.cause == cause
    done: pb.ResponseDone = await game.until("response_done")
    assert done.response_id == began.response_id
    assert done.status == pb.RESPONSE_STATUS_COMPLETED and done.transcript
    return done


PUSH_TO_TALK = start("herbalist", input_format=F32_48K, turn_mode=pb.TURN_MODE_PUSH_TO_TALK)


def say_and_commit(game: Game) -> None:
    """A push-to-talk question, key held then released, as 20 ms chunks of 48 kHz float32."""
    for chunk in chunks(speech_48k_f32("Do you have any healing potions for sale"), 3840):
        game.send(audio=pb.AudioChunk(data=chunk))
    game.send(commit=pb.Commit())


async def final_transcript(game: Game) -> str:
    """The player's recognised words (they may come after the NPC's answer)."""
    while not (heard := [t.text for t in game.of("player_transcript") if t.is_final]):
        await game.until("player_transcript")
    return str(heard[0])


# -- 1: player input while the backend is away is kept, not lost ---------------------------------


async def test_text_and_trigger_sent_while_the_backend_is_down_are_answered_when_it_is_back(
    rig: Rig,
) -> None:
    async with grpc.aio.insecure_channel(rig.target) as channel:
        game = Game(channel, start("herbalist"))
        await game.until("ready")
        await rig.proxy.go_down()
        assert await status(game) == pb.SESSION_STATE_RECONNECTING
        game.send(text=pb.TextMessage(text="any rumours?"))
        game.send(trigger=pb.Trigger(name="rain_started", silent=True))
        await rig.proxy.come_up()
        assert await status(game) == pb.SESSION_STATE_RESUMED
        await answered(game, pb.RESPONSE_CAUSE_PLAYER_TEXT)
        game.end()
    assert not game.of("error")
    assert_each_response_ended_once(game)
    remembered = [i.text for i in rig.slots()["herbalist"].session.items_in_order()]
    assert "any rumours?" in remembered
    assert any("rain_started" in text for text in remembered), "the silent trigger was kept"


async def test_push_to_talk_commit_while_reconnecting_is_answered_after(rig: Rig) -> None:
    async with grpc.aio.insecure_channel(rig.target) as channel:
        game = Game(channel, PUSH_TO_TALK)
        await game.until("ready")
        await rig.proxy.go_down()
        assert await status(game) == pb.SESSION_STATE_RECONNECTING
        say_and_commit(game)
        await rig.proxy.come_up()
        assert await status(game) == pb.SESSION_STATE_RESUMED
        await answered(game, pb.RESPONSE_CAUSE_PLAYER_SPEECH)
        heard = await final_transcript(game)
        game.end()
    assert "potion" in heard.lower()
    assert not game.of("error")
    assert_each_response_ended_once(game)


async def test_push_to_talk_words_sent_into_a_dying_link_are_answered_after(rig: Rig) -> None:
    async with grpc.aio.insecure_channel(rig.target) as channel:
        game = Game(channel, PUSH_TO_TALK)
        await game.until("ready")
        rig.proxy.blackhole(True)  # npcd still thinks the session is fine
        say_and_commit(game)
        assert await status(game) == pb.SESSION_STATE_RECONNECTING
        rig.proxy.blackhole(False)
        assert await status(game) == pb.SESSION_STATE_RESUMED
        await answered(game, pb.RESPONSE_CAUSE_PLAYER_SPEECH)
        heard = await final_transcript(game)
        game.end()
    assert "potion" in heard.lower(), "the words sent into the void were replayed"
    assert not game.of("error")
    assert_each_response_ended_once(game)


async def test_action_result_sent_while_reconnecting_reaches_the_npc(rig: Rig) -> None:
    async with grpc.aio.insecure_channel(rig.target) as channel:
        game = Game(channel, start("gate_guard"))
        await game.until("ready")
        game.send(trigger=pb.Trigger(name="player_drew_weapon", params={"weapon": "axe"}))
        request = await game.until("action_request")
        await game.until("response_done")
        await rig.proxy.go_down()
        assert await status(game) == pb.SESSION_STATE_RECONNECTING
        game.send(action_result=pb.ActionResult(call_id=request.call_id, ok=True))
        await rig.proxy.come_up()
        assert await status(game) == pb.SESSION_STATE_RESUMED
        await answered(game, pb.RESPONSE_CAUSE_ACTION_RESULT)
        game.end()
    assert not game.of("error"), "no timeout, no unknown call id"
    assert_each_response_ended_once(game)


# -- 2, 3: the session's time limit, GA and beta, mid-response or not ------------------------------


async def test_session_expiring_mid_response_ends_it_once_and_rotates_silently(rig: Rig) -> None:
    async with grpc.aio.insecure_channel(rig.target) as channel:
        game = Game(channel, start("blacksmith"))
        await game.until("ready")
        rig.proxy.close_after("response.output_audio.delta", 1001, EXPIRY)
        game.send(text=pb.TextMessage(text="what do you sell?"))
        began = await game.until("response_started")
        cut = await game.until("response_done")
        assert cut.response_id == began.response_id
        assert (cut.status, cut.reason) == (pb.RESPONSE_STATUS_INCOMPLETE, "session_expired")
        assert await status(game) == pb.SESSION_STATE_ROTATED
        game.send(text=pb.TextMessage(text="who are you?"))
        await answered(game, pb.RESPONSE_CAUSE_PLAYER_TEXT)
        game.end()
    assert game.of("audio"), "what was said before the cut reached the game"
    assert not game.of("error") and not game.of("interrupted")
    assert [s.state for s in game.of("session_status")] == [pb.SESSION_STATE_ROTATED]
    assert_each_response_ended_once(game)


@pytest.mark.parametrize(
    "close_reason",
    ["Your session hit the maximum duration of 30 minutes.", ""],
    ids=["with-reason", "bare-close"],
)
async def test_beta_expiry_error_then_close_is_only_a_rotation(
    monkeypatch: pytest.MonkeyPatch, close_reason: str
) -> None:
    async for rig in make_rig(monkeypatch, dialect="beta"):
        async with grpc.aio.insecure_channel(rig.target) as channel:
            game = Game(channel, start("blacksmith"))
            await game.until("ready")
            await rig.proxy.inject(
                {
                    "type": "error",
                    "event_id": "event_expiry",
                    "error": {
                        "type": "invalid_request_error",
                        "code": "session_expired",
                        "message": "Your session hit the maximum duration of 30 minutes.",
                        "param": None,
                        "event_id": None,
                    },
                }
            )
            await rig.proxy.close_all(1001, close_reason)
            assert await status(game) == pb.SESSION_STATE_ROTATED
            game.send(text=pb.TextMessage(text="what do you sell?"))
            done = await answered(game, pb.RESPONSE_CAUSE_PLAYER_TEXT)
            game.end()
        assert "sword" in done.transcript.lower()
        assert not game.of("error"), "an expiry is not the game's problem"


# -- 4: a backend that stops answering ------------------------------------------------------------


async def test_text_sent_into_a_silent_backend_is_answered_after_it_is_replaced(rig: Rig) -> None:
    async with grpc.aio.insecure_channel(rig.target) as channel:
        game = Game(channel, start("herbalist"))
        await game.until("ready")
        rig.proxy.blackhole(True)
        sent = time.monotonic()
        game.send(text=pb.TextMessage(text="any rumours?"))
        assert await status(game) == pb.SESSION_STATE_RECONNECTING
        noticed = time.monotonic() - sent
        rig.proxy.blackhole(False)
        assert await status(game) == pb.SESSION_STATE_RESUMED
        await answered(game, pb.RESPONSE_CAUSE_PLAYER_TEXT)
        game.end()
    # The library keepalive alone took about 41 s; the slot's watchdog is meant for seconds.
    assert noticed < 15, f"a silent backend was noticed only after {noticed:.1f} s"
    assert not game.of("error")
    assert_each_response_ended_once(game)


async def test_backend_going_silent_mid_response_fails_it_and_the_player_still_gets_an_answer(
    rig: Rig,
) -> None:
    async with grpc.aio.insecure_channel(rig.target) as channel:
        game = Game(channel, start("herbalist"))
        await game.until("ready")
        rig.proxy.blackhole_after("response.created")
        game.send(text=pb.TextMessage(text="any rumours?"))
        began = await game.until("response_started")
        assert await status(game) == pb.SESSION_STATE_RECONNECTING
        failed = await game.until("response_done")
        assert failed.response_id == began.response_id
        assert (failed.status, failed.reason) == (pb.RESPONSE_STATUS_FAILED, "backend_lost")
        rig.proxy.blackhole(False)
        assert await status(game) == pb.SESSION_STATE_RESUMED
        await answered(game, pb.RESPONSE_CAUSE_PLAYER_TEXT)  # asked again: nothing was heard
        game.end()
    assert_each_response_ended_once(game)


# -- 5, 6b: a backend that is down, or never starts a session -----------------------------------


async def health_becomes(channel: grpc.aio.Channel, wanted: int) -> None:
    watch = health_pb2_grpc.HealthStub(channel).Watch(
        health_pb2.HealthCheckRequest(service=SERVICE_NAME)
    )
    async with asyncio.timeout(TIMEOUT):
        async for answer in watch:
            if answer.status == wanted:
                watch.cancel()
                return


async def test_backend_down_fails_conversations_fast_and_recovery_is_quick(rig: Rig) -> None:
    await rig.proxy.go_down()
    slot = rig.slots()["blacksmith"]
    async with asyncio.timeout(TIMEOUT):
        await slot.wait_ready()  # returns once a reconnect attempt has failed
    assert slot.unreachable
    async with grpc.aio.insecure_channel(rig.target) as channel:
        await health_becomes(channel, health_pb2.HealthCheckResponse.NOT_SERVING)
        refused = Game(channel, start("blacksmith"))
        began = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await refused.until("ready")
        waited = time.monotonic() - began
        assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "backend_wait_ms" in (failure.value.details() or "")
        assert waited < READY_TIMEOUT / 2, f"refused only after {waited:.1f} s"

        patient = Game(channel, start("blacksmith", backend_wait_ms=30_000))
        waiting = asyncio.create_task(patient.until("ready"))
        await rig.proxy.come_up()
        back = time.monotonic()
        await waiting
        recovered = time.monotonic() - back
        patient.send(text=pb.TextMessage(text="what do you sell?"))
        await answered(patient, pb.RESPONSE_CAUSE_PLAYER_TEXT)
        patient.end()
        await health_becomes(channel, health_pb2.HealthCheckResponse.SERVING)
    assert recovered < 6, f"the NPC took {recovered:.1f} s to be back after the backend was"
    async with asyncio.timeout(TIMEOUT):
        for each in rig.slots().values():
            assert await each.wait_connected()


async def test_backend_that_never_starts_a_session_is_retried_until_it_does(rig: Rig) -> None:
    rig.proxy.wait_timeout = TIMEOUT
    rig.proxy.withhold_created(True)
    accepted = rig.proxy.accepted
    await rig.proxy.drop_all()
    # 4 NPCs reconnect, each attempt times out waiting for session.created, and they go on.
    await rig.proxy.wait_for(lambda: rig.proxy.accepted >= accepted + 6 or None, what="retries")
    assert all(slot.state is not SlotState.READY for slot in rig.slots().values())
    assert all(slot.state is not SlotState.FAILED for slot in rig.slots().values())
    rig.proxy.withhold_created(False)
    async with asyncio.timeout(TIMEOUT):
        for slot in rig.slots().values():
            assert await slot.wait_connected()
    async with grpc.aio.insecure_channel(rig.target) as channel:
        game = Game(channel, start("blacksmith"))
        await game.until("ready")
        game.send(text=pb.TextMessage(text="what do you sell?"))
        await answered(game, pb.RESPONSE_CAUSE_PLAYER_TEXT)
        game.end()


# -- 6: bytes that are not a message -----------------------------------------------------------

#: ConverseRequest.text (field 4) holding TextMessage.text (field 1) = b"\xff\xfe": not UTF-8.
NOT_UTF8_TEXT = b"\x22\x04\x0a\x02\xff\xfe"
GARBAGE = bytes(range(255, 0, -7)) * 3


async def raw_converse(channel: grpc.aio.Channel, *frames: bytes) -> grpc.aio.AioRpcError:
    call = channel.stream_stream(
        "/npcd.v1.NpcService/Converse",
        request_serializer=lambda data: data,
        response_deserializer=pb.ConverseResponse.FromString,
    )

    async def requests() -> AsyncIterator[bytes]:
        for frame in frames:
            yield frame
        await asyncio.Event().wait()  # keep the stream open: npcd must end it

    with pytest.raises(grpc.aio.AioRpcError) as failure:
        async with asyncio.timeout(TIMEOUT):
            async for _ in call(requests()):
                pass
    return failure.value


@pytest.mark.parametrize(
    "frames",
    [
        pytest.param((GARBAGE,), id="garbage-first"),
        pytest.param(
            (pb.ConverseRequest(start=start("innkeeper")).SerializeToString(), GARBAGE),
            id="garbage-after-start",
        ),
        pytest.param(
            (pb.ConverseRequest(start=start("innkeeper")).SerializeToString(), NOT_UTF8_TEXT),
            id="text-not-utf8",
        ),
    ],
)
async def test_bytes_that_are_not_a_message_get_invalid_argument_and_no_traceback(
    rig: Rig, frames: tuple[bytes, ...], caplog: pytest.LogCaptureFixture
) -> None:
    async with grpc.aio.insecure_channel(rig.target) as channel:
        other = Game(channel, start("blacksmith"))
        await other.until("ready")
        with caplog.at_level(logging.WARNING):
            error = await raw_converse(channel, *frames)
        other.send(text=pb.TextMessage(text="what do you sell?"))
        await answered(other, pb.RESPONSE_CAUSE_PLAYER_TEXT)  # the other NPC's talk goes on
        other.end()
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "malformed message" in (error.details() or "")
    assert not [r for r in caplog.records if r.exc_info], "no traceback in the log"
    assert len([r for r in caplog.records if "did not parse" in r.getMessage()]) == 1


async def test_unary_call_with_garbage_gets_invalid_argument(rig: Rig) -> None:
    async with grpc.aio.insecure_channel(rig.target) as channel:
        call = channel.unary_unary(
            "/npcd.v1.NpcService/GetCharacter",
            request_serializer=lambda data: data,
            response_deserializer=pb.Character.FromString,
        )
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await call(GARBAGE)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# -- 7: game context is bounded ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("context", "limit"),
    [
        pytest.param({"quest": "x" * 2000}, "at most 1024", id="value"),
        pytest.param({"k" * 65: "v"}, "1 to 64 printable", id="key"),
        pytest.param({f"k{i}": "v" for i in range(65)}, "at most 64 allowed", id="entries"),
        pytest.param({f"k{i}": "v" * 1000 for i in range(9)}, "at most 8192", id="total"),
    ],
)
async def test_oversized_start_context_is_refused_naming_the_limit(
    rig: Rig, context: dict[str, str], limit: str
) -> None:
    async with grpc.aio.insecure_channel(rig.target) as channel:
        game = Game(channel, start("innkeeper", context=context))
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await game.until("ready")
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert limit in (failure.value.details() or "")


async def test_context_updates_cannot_grow_the_context_past_its_limit(rig: Rig) -> None:
    async with grpc.aio.insecure_channel(rig.target) as channel:
        game = Game(channel, start("innkeeper"))
        await game.until("ready")
        for i in range(7):  # 7000 characters: within the limit
            game.send(context=pb.ContextUpdate(set={f"note{i}": "v" * 994}))
        game.send(text=pb.TextMessage(text="hello"))
        await game.until("response_done")
        game.send(context=pb.ContextUpdate(set={"note7": "v" * 994, "note8": "v" * 994}))
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await game.until("ready")
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "at most 8192" in (failure.value.details() or "")
    instructions = rig.slots()["innkeeper"].config().instructions or ""
    assert "note8" not in instructions, "the refused update was not applied"
