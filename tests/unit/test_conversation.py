"""A conversation's state without sockets. What leaves for the game: audio joins up only when
it is already queued, never across responses, and a turn's latency report counts the time its
first audio waited in npcd. What arrives while the backend is away: the latest 15 s of audio and a
bounded number of messages are kept and given to the session, in order, when it is back; a lost
backend ends the response in progress with one ResponseDone. Game context is bounded."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable

import orjson
import pytest

from npcd import audio
from npcd.config import Secret
from npcd.errors import InvalidRequest
from npcd.lipsync.visemes import OVR_VISEMES
from npcd.personas import load_directory
from npcd.realtime import events as ev
from npcd.realtime.endpoints import Backend, Provider
from npcd.realtime.extensions import phonemes_event
from npcd.realtime.values import Response
from npcd.server.conversation import (
    MAX_HELD_AUDIO_MS,
    MAX_KEPT_WHILE_AWAY,
    Conversation,
    _emotion_thread,
    check_context,
    emotion_classifier,
)
from npcd.server.outbox import MAX_MERGED_MS, Outbox
from npcd.slot import NpcSlot, SlotOptions, SlotState, SlotStatus, StatusKind
from npcd.v1 import npcd_pb2 as pb
from tests.conftest import SAMPLES


def chunk(response_id: str, data: bytes) -> pb.ConverseResponse:
    return pb.ConverseResponse(audio=pb.NpcAudio(response_id=response_id, data=data))


def test_take_audio_stops_at_another_response_another_kind_or_the_size_limit() -> None:
    box = Outbox()
    for item in (
        chunk("r1", b"a" * 4),
        "lip-sync of r1",
        chunk("r1", b"b" * 4),
        chunk("r2", b"c" * 4),
        pb.ConverseResponse(response_done=pb.ResponseDone(response_id="r2")),
        chunk("r2", b"d" * 4),
    ):
        box.put(item)
    audio, companions = box.take_audio("r1", 100, lambda i, r: i == f"lip-sync of {r}")
    assert [m.audio.data for m in audio] == [b"a" * 4, b"b" * 4]
    assert companions == ["lip-sync of r1"], "what belongs with the audio comes along"
    assert box.take_audio("r1", 100) == ([], []), "r2's audio stays r2's"
    assert box.take_audio("r2", 3) == ([], []), "too big for the room left"
    audio, _ = box.take_audio("r2", 4)
    assert [m.audio.data for m in audio] == [b"c" * 4]
    assert box.take_audio("r2", 100) == ([], []), "not past the ResponseDone"
    assert len(box) == 2
    box.push_front(companions)
    assert len(box) == 3 and box.peek() == "lip-sync of r1"


async def test_get_waits_for_a_put() -> None:
    box = Outbox()
    getter = asyncio.create_task(box.get())
    await asyncio.sleep(0)
    assert not getter.done()
    box.put("hello")
    assert await asyncio.wait_for(getter, 1) == "hello"


async def test_a_cancelled_get_leaves_the_outbox_usable() -> None:
    """The servicer's wait is cancelled when the game hangs up; nothing may be lost or stuck."""
    box = Outbox()
    waiting = asyncio.create_task(box.get())
    await asyncio.sleep(0)
    waiting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiting
    box.put("next")
    assert await asyncio.wait_for(box.get(), 1) == "next"


def conversation(
    clock: Callable[[], float] = time.perf_counter,
    output_format: pb.AudioFormat | None = None,
    capabilities: pb.Capabilities | None = None,
) -> Conversation:
    """A conversation on an NPC slot that is never connected: only its state is exercised."""
    persona = load_directory(SAMPLES).personas["blacksmith"]
    backend = Backend(Provider.COMPATIBLE, "ws://127.0.0.1:9/v1", api_key=Secret("sk-test-0"))
    start = pb.Start(
        character_id="blacksmith",
        capabilities=capabilities or pb.Capabilities(latency_reports=True),
        output_format=output_format,
    )
    return Conversation(NpcSlot(persona, SlotOptions(backend)), start, clock=clock)


def delta(response_id: str, pcm: bytes) -> ev.ResponseOutputAudioDelta:
    return ev.ResponseOutputAudioDelta(
        event_id="e",
        response_id=response_id,
        item_id="item_1",
        output_index=0,
        content_index=0,
        delta=audio.b64encode(pcm),
    )


async def drain(conv: Conversation) -> list[pb.ConverseResponse]:
    """What the servicer would send of everything queued so far, in order."""
    conv.finish()
    sent = []
    while (message := await asyncio.wait_for(conv.next_message(), 1)) is not None:
        sent.append(message)
        conv.note_sent(message)
    return sent


async def test_backlogged_audio_leaves_as_fewer_messages_with_every_byte_in_order() -> None:
    conv = conversation()
    conv.on_event(ev.ResponseCreated(event_id="e0", response=Response(id="resp_1")))
    frames = [bytes([n]) * 960 for n in range(25)]  # 20 ms each, queued before the stream runs
    for frame in frames:
        conv.on_event(delta("resp_1", frame))
    sent = [m.audio for m in await drain(conv) if m.WhichOneof("kind") == "audio"]
    assert b"".join(a.data for a in sent) == b"".join(frames)
    assert len(sent) == 3, "25 frames of 960 B in messages of at most 9600 B"
    assert all(len(a.data) <= MAX_MERGED_MS * 48 for a in sent)
    assert [a.start_ms for a in sent] == [0, 200, 400], "each says where it starts"
    assert sent[0].sequence < sent[1].sequence < sent[2].sequence


async def test_audio_that_is_not_backlogged_goes_out_alone() -> None:
    conv = conversation()
    conv.on_event(ev.ResponseCreated(event_id="e0", response=Response(id="resp_1")))
    await conv.next_message()  # response_started
    for n in range(3):
        conv.on_event(delta("resp_1", bytes([n]) * 960))
        message = await asyncio.wait_for(conv.next_message(), 1)
        assert message is not None and message.audio.data == bytes([n]) * 960


async def test_merging_is_bounded_in_time_whatever_the_game_format() -> None:
    f32_48k = pb.AudioFormat(encoding=pb.AUDIO_ENCODING_FLOAT32, sample_rate_hz=48000)
    conv = conversation(output_format=f32_48k)
    conv.on_event(ev.ResponseCreated(event_id="e0", response=Response(id="resp_1")))
    for _ in range(25):  # 20 ms deltas: 500 ms in all
        conv.on_event(delta("resp_1", bytes(960)))
    audio_out = [m.audio for m in await drain(conv) if m.WhichOneof("kind") == "audio"]
    per_ms = 48000 * 4 // 1000
    largest = max(len(a.data) for a in audio_out)
    assert 150 * per_ms < largest <= MAX_MERGED_MS * per_ms, "about 200 ms, not 9600 B (50 ms)"
    assert sum(len(a.data) for a in audio_out) > 450 * per_ms, "the resampler keeps ~20 ms back"


async def test_queued_audio_of_an_interrupted_response_never_leaves() -> None:
    """Even when the backend confirms the cancel before the stream reaches that audio."""
    conv = conversation()
    conv.on_event(ev.ResponseCreated(event_id="e0", response=Response(id="resp_1")))
    for _ in range(10):
        conv.on_event(delta("resp_1", bytes(960)))
    assert await conv.handle(pb.ConverseRequest(interrupt=pb.Interrupt()))
    conv.on_event(
        ev.ResponseDone(event_id="e1", response=Response(id="resp_1", status="cancelled"))
    )
    kinds = [m.WhichOneof("kind") for m in await drain(conv)]
    assert kinds == ["response_started", "interrupted", "response_done"]
    assert conv._queued_audio_ms == 0, "the dropped audio no longer counts as queued"


async def test_latency_counts_audio_that_waited_behind_the_response_done() -> None:
    """A short answer can arrive in one burst, its `response.done` queued before its first audio
    has left: the report must still say how long that audio waited in npcd."""
    ticks = itertools.count()
    conv = conversation(clock=lambda: float(next(ticks)))  # each reading one second later
    conv.on_event(ev.ResponseCreated(event_id="e0", response=Response(id="resp_1")))
    conv.on_event(delta("resp_1", bytes(960)))
    conv.on_event(
        ev.ResponseDone(event_id="e1", response=Response(id="resp_1", status="completed"))
    )
    sent = await drain(conv)
    assert [m.WhichOneof("kind") for m in sent] == ["response_started", "audio", "response_done"]
    latency = sent[-1].response_done.latency
    assert latency.npcd_us > 0, "the first audio left after the backend's response.done"
    assert latency.first_output_us == latency.backend_us + latency.npcd_us


def test_audio_sent_while_the_backend_is_away_is_replayed_when_it_is_back() -> None:
    conv = conversation()
    session = conv.slot.session
    assert conv.slot.state is not SlotState.READY  # never connected
    kept = MAX_HELD_AUDIO_MS // 100
    frames = [bytes([n]) * 4800 for n in range(kept + 5)]  # 100 ms each: 0.5 s too many
    for frame in frames:
        assert asyncio.run(conv.handle(pb.ConverseRequest(audio=pb.AudioChunk(data=frame))))
    assert not session.has_outgoing, "nothing goes to a session that is not there"
    conv.slot.state = SlotState.READY
    conv.on_status(SlotStatus(StatusKind.RESUMED, "back"))
    sent = [orjson.loads(frame) for frame in session.data_to_send()]
    assert [audio.b64decode(e["audio"]) for e in sent] == frames[-kept:], "the latest 15 s"
    assert {e["type"] for e in sent} == {"input_audio_buffer.append"}
    told = [m.error for m in messages(conv) if m.HasField("error")]
    assert [e.code for e in told] == [pb.ERROR_CODE_BACKEND_UNAVAILABLE], "dropping is said once"
    assert told[0].retryable


def messages(conv: Conversation) -> list[pb.ConverseResponse]:
    return [m for m in conv.out._items if isinstance(m, pb.ConverseResponse)]


def test_messages_while_the_backend_is_away_are_kept_up_to_a_bound_then_refused() -> None:
    conv = conversation()
    for n in range(MAX_KEPT_WHILE_AWAY + 2):
        text = pb.TextMessage(text=f"line {n}")
        assert asyncio.run(conv.handle(pb.ConverseRequest(text=text, request_id=f"r{n}")))
    refused = [m for m in messages(conv) if m.HasField("error")]
    assert [m.request_id for m in refused] == [
        f"r{MAX_KEPT_WHILE_AWAY}",
        f"r{MAX_KEPT_WHILE_AWAY + 1}",
    ]
    assert all(m.error.retryable for m in refused)
    kept = [item for item in conv.slot.session.history(100) if "line" in str(item)]
    assert len(kept) == MAX_KEPT_WHILE_AWAY, "the kept lines wait for the next session"


def started(conv: Conversation, response_id: str) -> None:
    conv.slot.session.request_response(tag=pb.RESPONSE_CAUSE_PLAYER_TEXT)
    event = ev.ResponseCreated(event_id="e", response=Response(id=response_id))
    conv.slot.session._on_response_created(event)
    conv.on_event(event)


def test_a_response_cut_by_the_time_limit_after_audio_ends_incomplete_and_is_not_redone() -> None:
    conv = conversation()
    started(conv, "resp_1")
    conv.on_event(delta("resp_1", b"\x01\x00" * 2400))
    conv.on_link_lost("expired", planned=True)
    kinds = [m.WhichOneof("kind") for m in messages(conv)]
    assert kinds == ["response_started", "audio", "response_done"], "no Interrupted"
    done = messages(conv)[-1].response_done
    assert (done.status, done.reason) == (pb.RESPONSE_STATUS_INCOMPLETE, "session_expired")
    assert conv.slot.session.unstarted_responses() == [], "the player heard part of it"


def test_a_response_lost_before_any_output_fails_and_is_asked_for_again() -> None:
    conv = conversation()
    started(conv, "resp_1")
    conv.on_link_lost("dropped", planned=False)
    done = messages(conv)[-1].response_done
    assert (done.status, done.reason) == (pb.RESPONSE_STATUS_FAILED, "backend_lost")
    assert [tag for _, tag in conv.slot.session.unstarted_responses()] == [
        pb.RESPONSE_CAUSE_PLAYER_TEXT
    ]


@pytest.mark.parametrize(
    ("context", "limit"),
    [
        ({"k": "v" * 1025}, "at most 1024"),
        ({"": "v"}, "1 to 64 printable"),
        ({"bad\nkey": "v"}, "1 to 64 printable"),
        ({f"k{i}": "" for i in range(65)}, "65 entries"),
        ({f"k{i}": "v" * 1020 for i in range(9)}, "at most 8192"),
    ],
)
def test_context_over_a_limit_is_refused_naming_it(context: dict[str, str], limit: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        check_context(context, "start.context")
    assert limit in refused.value.message and "start.context" in refused.value.message


def test_context_within_the_limits_passes() -> None:
    check_context({f"k{i}": "v" * 100 for i in range(64)}, "start.context")


async def test_a_session_is_not_rotated_while_the_player_is_mid_utterance() -> None:
    slot = conversation().slot
    slot.state = SlotState.READY
    slot._rotate_at = 0.0  # due now
    slot.session.speech_active = True  # the server's VAD hears the player
    assert not slot.maybe_rotate()
    slot.session.speech_active = False
    assert slot.maybe_rotate(), "between utterances it goes ahead"
    await slot.close()


def phonemes(response_id: str, timing: list[tuple[int, str]]) -> ev.UnknownServerEvent:
    return phonemes_event(
        "e",
        response_id=response_id,
        item_id="item_1",
        output_index=0,
        content_index=0,
        phonemes=timing,
    )


def viseme_frames(sent: list[pb.ConverseResponse]) -> list[tuple[float, str]]:
    """(ms, dominant viseme) of every frame sent, at 60 fps."""
    out = []
    for message in sent:
        if message.WhichOneof("kind") == "viseme":
            run = message.viseme
            n = len(OVR_VISEMES)
            for i in range(len(run.weights) // n):
                weights = run.weights[i * n : (i + 1) * n]
                best = max(range(n), key=weights.__getitem__)
                out.append((run.start_ms + i * 1000 / 60, OVR_VISEMES[best]))
    return out


async def test_backend_phonemes_drive_the_frames_and_backlogged_runs_join_their_audio() -> None:
    conv = conversation(capabilities=pb.Capabilities(visemes=True))
    conv.on_event(ev.ResponseCreated(event_id="e0", response=Response(id="resp_1")))
    # "map": /m/ at 0, /æ/ at 100, /p/ at 250, then a pause at 300; 20 ms deltas, 400 ms.
    conv.on_event(phonemes("resp_1", [(0, "m"), (100, "ˈæ"), (250, "p"), (300, "")]))
    for _ in range(20):
        conv.on_event(delta("resp_1", bytes(960)))
    conv.on_event(
        ev.ResponseDone(event_id="e1", response=Response(id="resp_1", status="completed"))
    )
    sent = await drain(conv)
    kinds = [m.WhichOneof("kind") for m in sent]
    assert kinds == ["response_started", "audio", "viseme", "audio", "viseme", "response_done"], (
        "each merged audio message is followed by its frames, joined into one run"
    )
    frames = viseme_frames(sent)

    def shape_at(ms: float) -> str:
        return [shape for t, shape in frames if t <= ms][-1]

    assert [shape_at(ms) for ms in (40, 180, 275, 360)] == ["PP", "aa", "PP", "sil"]
    assert frames[-1][1] == "sil" and abs(frames[-1][0] - 400) <= 1 and frames[0][0] == 0
    assert all(b - a <= 1000 / 60 + 1 for (a, _), (b, _) in zip(frames, frames[1:], strict=False))


async def test_an_interrupt_mid_response_drops_its_frames_and_sends_one_closing_frame() -> None:
    conv = conversation(capabilities=pb.Capabilities(visemes=True))
    conv.on_event(ev.ResponseCreated(event_id="e0", response=Response(id="resp_1")))
    conv.on_event(phonemes("resp_1", [(0, "m"), (100, "ˈæ"), (250, "p"), (300, "")]))
    for _ in range(10):
        conv.on_event(delta("resp_1", bytes(960)))
    assert await conv.handle(
        pb.ConverseRequest(playback=pb.PlaybackProgress(response_id="resp_1", played_ms=120))
    )
    assert await conv.handle(pb.ConverseRequest(interrupt=pb.Interrupt()))
    conv.on_event(delta("resp_1", bytes(960)))  # late audio of the cut response
    conv.on_event(
        ev.ResponseDone(event_id="e1", response=Response(id="resp_1", status="cancelled"))
    )
    sent = await drain(conv)
    kinds = [m.WhichOneof("kind") for m in sent]
    assert kinds == ["response_started", "viseme", "interrupted", "viseme", "response_done"]
    cut = sent[2].interrupted.truncated_at_ms
    heard = viseme_frames(sent[:2])
    assert heard[0][0] == 0 and heard[-1][0] < cut, "frames of what was heard, up to the cut"
    assert all(b - a <= 1000 / 60 + 1 for (a, _), (b, _) in zip(heard, heard[1:], strict=False))
    closing = sent[3].viseme
    assert closing.start_ms == cut > heard[-1][0] and cut - heard[-1][0] <= 1000 / 60 + 1
    assert list(closing.weights) == [1.0] + [0.0] * (len(OVR_VISEMES) - 1)


def test_a_viseme_rate_out_of_range_is_refused() -> None:
    persona = load_directory(SAMPLES).personas["blacksmith"]
    backend = Backend(Provider.COMPATIBLE, "ws://127.0.0.1:9/v1", api_key=Secret("sk-test-0"))
    slot = NpcSlot(persona, SlotOptions(backend))
    for fps in (9, 121):
        with pytest.raises(InvalidRequest, match="viseme_fps"):
            Conversation(slot, pb.Start(character_id="blacksmith", viseme_fps=fps))


def transcript(response_id: str, text: str) -> ev.ResponseOutputAudioTranscriptDelta:
    return ev.ResponseOutputAudioTranscriptDelta(
        event_id="e",
        response_id=response_id,
        item_id="item_1",
        output_index=0,
        content_index=0,
        delta=text,
    )


async def test_emotions_come_sentence_by_sentence_in_place_and_only_when_they_change() -> None:
    conv = conversation(capabilities=pb.Capabilities(emotions=True))
    conv._emotions = await asyncio.to_thread(emotion_classifier, conv.slot.persona.persona)
    assert conv._emotions is not None
    conv.on_event(ev.ResponseCreated(event_id="e0", response=Response(id="resp_1")))
    conv.on_event(delta("resp_1", bytes(48 * 500)))
    for words in ("Wonderful news, ", "I am so happy for you! ", "That makes me glad. "):
        conv.on_event(transcript("resp_1", words))
    conv.on_event(delta("resp_1", bytes(48 * 500)))
    conv.on_event(transcript("resp_1", "You thief! Get out of my forge before I throw you out"))
    conv.on_event(
        ev.ResponseDone(event_id="e1", response=Response(id="resp_1", status="completed"))
    )
    # Classifications finish in order on one thread: once a no-op after them has run, all have.
    await asyncio.get_running_loop().run_in_executor(_emotion_thread(), lambda: None)
    sent = await drain(conv)
    kinds = [m.WhichOneof("kind") for m in sent]
    updates = [m.emotion for m in sent if m.WhichOneof("kind") == "emotion"]
    assert kinds.index("response_done") > max(i for i, k in enumerate(kinds) if k == "emotion")
    assert [(u.emotion, u.start_ms) for u in updates] == [("happy", 0), ("angry", 1000)], (
        "the second happy sentence changes nothing; a sentence starts where the audio was when "
        "its first words came"
    )
    assert all(0 < u.intensity <= 1 for u in updates)


async def test_emotions_of_an_interrupted_response_are_dropped() -> None:
    conv = conversation(capabilities=pb.Capabilities(emotions=True))
    conv._emotions = await asyncio.to_thread(emotion_classifier, conv.slot.persona.persona)
    conv.on_event(ev.ResponseCreated(event_id="e0", response=Response(id="resp_1")))
    conv.on_event(delta("resp_1", bytes(960)))
    conv.on_event(transcript("resp_1", "I am so happy for you! And "))
    assert await conv.handle(pb.ConverseRequest(interrupt=pb.Interrupt()))
    sent = await drain(conv)
    assert "emotion" not in [m.WhichOneof("kind") for m in sent]


@pytest.mark.parametrize("source", ["phonemes", "audio"])
async def test_a_response_cut_by_a_lost_link_still_shuts_the_mouth(source: str) -> None:
    conv = conversation(capabilities=pb.Capabilities(visemes=True))
    conv.on_event(ev.ResponseCreated(event_id="e0", response=Response(id="resp_1")))
    if source == "phonemes":
        conv.on_event(phonemes("resp_1", [(0, "m"), (100, "ˈæ"), (250, "p")]))
    for _ in range(20):
        conv.on_event(delta("resp_1", b"\x01\x10" * 480))  # 400 ms in all
    conv.on_link_lost("expired", planned=True)
    sent = await drain(conv)
    frames = viseme_frames(sent)
    assert frames[-1][1] == "sil" and abs(frames[-1][0] - 400) <= 1000 / 60 + 1
    assert all(b - a <= 1000 / 60 + 1 for (a, _), (b, _) in zip(frames, frames[1:], strict=False))
    kinds = [m.WhichOneof("kind") for m in sent]
    assert kinds[-1] == "response_done" and "interrupted" not in kinds


async def test_an_interrupted_response_without_audio_gets_no_frames() -> None:
    conv = conversation(capabilities=pb.Capabilities(visemes=True))
    conv.on_event(ev.ResponseCreated(event_id="e0", response=Response(id="resp_1")))
    assert await conv.handle(pb.ConverseRequest(interrupt=pb.Interrupt()))
    kinds = [m.WhichOneof("kind") for m in await drain(conv)]
    assert "viseme" not in kinds and "interrupted" in kinds
