"""Lip-sync over the real gRPC stream: the embedded backend's phoneme timing becomes viseme
frames that cover each response's audio, and an interruption shuts the mouth."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from npcd.lipsync.visemes import OVR_VISEMES
from npcd.localbackend.defaults import default_engines
from npcd.localbackend.server import BackendOptions, LocalBackend
from npcd.personas import load_directory
from npcd.server.app import RunningServer
from npcd.v1 import npcd_pb2 as pb
from tests.conftest import SAMPLES
from tests.integration.test_converse import Game, daemon, start, start_daemon, warm_engines

__all__ = ["daemon", "warm_engines"]

LIPSYNC = pb.Capabilities(transcripts=True, visemes=True, latency_reports=True)
N = len(OVR_VISEMES)


def frames_of(game: Game, response_id: str, fps: int) -> list[tuple[float, list[float]]]:
    """Every frame of ``response_id`` as (ms, weights), in the order received."""
    out: list[tuple[float, list[float]]] = []
    for run in game.of("viseme"):
        if run.response_id != response_id:
            continue
        assert len(run.weights) % N == 0, "whole frames only"
        for i in range(len(run.weights) // N):
            out.append((run.start_ms + i * 1000 / fps, list(run.weights[i * N : (i + 1) * N])))
    return out


def dominant(weights: list[float]) -> str:
    return OVR_VISEMES[max(range(N), key=weights.__getitem__)]


def assert_covers(frames: list[tuple[float, list[float]]], audio_ms: int, fps: int) -> None:
    times = [t for t, _ in frames]
    assert times[0] == 0
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert min(gaps) > 0, "in time order, no repeats"
    assert max(gaps) <= 1000 / fps + 1, "no gap longer than one frame"
    # The closing frame sits at the end of the audio: exact sample time, while audio_ms is
    # whole milliseconds (a run caught 3799.67 against 3800).
    assert audio_ms - 1 <= times[-1] <= audio_ms + 1000 / fps + 1
    assert dominant(frames[-1][1]) == "sil", "the mouth shuts at the end"
    for _, weights in frames:
        assert all(0.0 <= w <= 1.0 for w in weights)
        assert abs(sum(weights) - 1.0) < 1e-3


async def test_visemes_cover_every_response_and_follow_its_audio(daemon: RunningServer) -> None:
    async with grpc.aio.insecure_channel(daemon.address.grpc_target) as channel:
        game = Game(channel, start("blacksmith", capabilities=LIPSYNC))
        ready = await game.until("ready")
        assert ready.capabilities.visemes
        assert list(ready.viseme_names) == list(OVR_VISEMES)
        assert ready.viseme_fps == 60
        game.send(text=pb.TextMessage(text="What do you have for sale?"))
        done = await game.until("response_done")
        game.end()
    frames = frames_of(game, done.response_id, 60)
    assert_covers(frames, done.audio_ms, 60)
    spoken = {dominant(w) for _, w in frames}
    assert len(spoken - {"sil"}) >= 6, f"the mouth moves through many shapes: {spoken}"
    # Each run arrives after the audio it belongs to has been sent.
    audio_end = 0.0
    for message in game.seen:
        kind = message.WhichOneof("kind")
        if kind == "audio":
            audio_end = message.audio.start_ms + len(message.audio.data) / 48
        elif kind == "viseme":
            assert message.viseme.start_ms <= audio_end + 1
    # The latency report is unchanged in kind: first output is audio, not a viseme.
    assert done.latency.first_output_us > 0


async def test_an_interrupt_shuts_the_mouth_where_the_player_stopped_hearing(
    daemon: RunningServer,
) -> None:
    async with grpc.aio.insecure_channel(daemon.address.grpc_target) as channel:
        game = Game(channel, start("innkeeper", capabilities=LIPSYNC))
        await game.until("ready")
        game.send(text=pb.TextMessage(text="tell me a story"))
        done = await game.until("response_done")
        assert done.audio_ms > 2000
        game.send(playback=pb.PlaybackProgress(response_id=done.response_id, played_ms=900))
        game.send(interrupt=pb.Interrupt(reason="player walked away"))
        await game.until("interrupted")
        game.send(text=pb.TextMessage(text="an ale please"))
        second = await game.until("response_done")
        game.end()
    kinds = [(m.WhichOneof("kind"), m) for m in game.seen]
    cut_at = next(i for i, (k, _) in enumerate(kinds) if k == "interrupted")
    after = [
        m.viseme
        for k, m in kinds[cut_at:]
        if k == "viseme" and m.viseme.response_id == done.response_id
    ]
    assert len(after) == 1, "one closing frame, nothing past it"
    [closing] = after
    assert closing.start_ms == 900 and len(closing.weights) == N
    assert dominant(list(closing.weights)) == "sil" and closing.weights[0] == 1.0
    assert_covers(frames_of(game, second.response_id, 60), second.audio_ms, 60)


async def test_text_only_answers_get_no_visemes_and_the_rate_can_be_chosen(
    daemon: RunningServer,
) -> None:
    async with grpc.aio.insecure_channel(daemon.address.grpc_target) as channel:
        text = Game(
            channel,
            start(
                "herbalist",
                capabilities=LIPSYNC,
                output_modalities=[pb.MODALITY_TEXT],
            ),
        )
        await text.until("ready")
        text.send(text=pb.TextMessage(text="any rumours?"))
        await text.until("response_done")
        text.end()
        assert text.of("viseme") == [] and text.of("audio") == []

        slow = Game(channel, start("gate_guard", capabilities=LIPSYNC, viseme_fps=30))
        ready = await slow.until("ready")
        assert ready.viseme_fps == 30
        slow.send(text=pb.TextMessage(text="can I pass?"))
        done = await slow.until("response_done")
        slow.end()
    assert_covers(frames_of(slow, done.response_id, 30), done.audio_ms, 30)


async def test_a_viseme_rate_out_of_range_is_refused(daemon: RunningServer) -> None:
    async with grpc.aio.insecure_channel(daemon.address.grpc_target) as channel:
        game = Game(channel, start("blacksmith", capabilities=LIPSYNC, viseme_fps=500))
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await game.until("ready")
        game.end()
    error: Any = failure.value
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "viseme_fps" in error.details()


@pytest.fixture
async def audio_only_daemon(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[RunningServer]:
    """npcd in front of a local backend it treats as any Realtime server: no phoneme timing,
    as with OpenAI or Azure, so the frames come from the audio."""
    catalog = load_directory(SAMPLES)
    backend = LocalBackend(
        default_engines(),
        {pid: loaded.persona for pid, loaded in catalog.personas.items()},
        BackendOptions(api_keys=("sk-local-test-0123456789",)),
    )
    await backend.start()
    monkeypatch.setenv("NPCD_API_KEY", "sk-local-test-0123456789")
    context, running = await start_daemon(backend="ws" + backend.base_url.removeprefix("http"))
    try:
        yield running
    finally:
        await context.__aexit__(None, None, None)
        await backend.close()


async def test_audio_only_backends_get_visemes_from_the_audio(
    audio_only_daemon: RunningServer,
) -> None:
    async with grpc.aio.insecure_channel(audio_only_daemon.address.grpc_target) as channel:
        game = Game(channel, start("innkeeper", capabilities=LIPSYNC))
        ready = await game.until("ready")
        assert ready.capabilities.visemes and ready.viseme_fps == 60
        game.send(text=pb.TextMessage(text="tell me a story"))
        done = await game.until("response_done")
        game.send(playback=pb.PlaybackProgress(response_id=done.response_id, played_ms=1500))
        game.send(interrupt=pb.Interrupt())
        await game.until("interrupted")
        game.send(text=pb.TextMessage(text="an ale please"))
        await game.until("response_done")
        game.end()
    frames = frames_of(game, done.response_id, 60)
    before_cut = frames[:-1]
    assert_covers(before_cut, done.audio_ms, 60)
    spoken = [dominant(w) for _, w in before_cut]
    assert spoken.count("sil") < 0.5 * len(spoken), "the mouth is open while the NPC talks"
    assert len(set(spoken)) >= 5
    assert frames[-1][0] == 1500 and dominant(frames[-1][1]) == "sil", "closing frame at the cut"


async def test_emotions_from_the_persona_set_come_before_the_response_ends(
    daemon: RunningServer,
) -> None:
    caps = pb.Capabilities(transcripts=True, emotions=True, visemes=True)
    async with grpc.aio.insecure_channel(daemon.address.grpc_target) as channel:
        game = Game(channel, start("gate_guard", capabilities=caps))
        ready = await game.until("ready")
        assert ready.capabilities.emotions
        declared = [e.name for e in daemon.catalog.personas["gate_guard"].persona.emotions]
        assert set(ready.emotion_names) == {"neutral", *declared}
        game.send(text=pb.TextMessage(text="can I pass?"))
        done = await game.until("response_done")
        game.end()
    updates = [e for e in game.of("emotion") if e.response_id == done.response_id]
    assert updates, "at least one per response"
    assert updates[0].start_ms == 0
    assert all(u.emotion in ready.emotion_names and 0 <= u.intensity <= 1 for u in updates)
    assert all(a.emotion != b.emotion for a, b in zip(updates, updates[1:], strict=False))
