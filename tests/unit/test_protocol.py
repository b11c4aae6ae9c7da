"""The sans-I/O session: response races, barge-in truncation, calls, history. No sockets."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pytest

from npcd.audio import b64encode
from npcd.realtime import events as ev
from npcd.realtime.codec import encode_server
from npcd.realtime.policy import ErrorClass
from npcd.realtime.protocol import RealtimeSession, ResponsePhase, Role
from npcd.realtime.values import (
    AssistantMessage,
    Dialect,
    ErrorDetail,
    FunctionCall,
    FunctionCallOutput,
    InputAudio,
    InputText,
    OutputAudio,
    OutputText,
    RateLimit,
    Response,
    SessionConfig,
    StatusDetails,
    SystemMessage,
    TranscriptDurationUsage,
    UserMessage,
)

_ids = itertools.count(1)


def eid() -> str:
    return f"event_{next(_ids)}"


class Server:
    """Builds the frames a Realtime server would send, through npcd's own encoder."""

    def __init__(self, session: RealtimeSession, dialect: Dialect = Dialect.GA):
        self.session = session
        self.dialect = dialect

    def send(self, event: ev.ServerEvent) -> ev.ServerEvent:
        return self.session.receive(encode_server(event, self.dialect))

    def created(self, expires_at: int = 2_000_000_000) -> None:
        self.send(
            ev.SessionCreated(
                event_id=eid(), session=SessionConfig(expires_at=expires_at, id="sess_1")
            )
        )

    def response_created(self, rid: str) -> None:
        self.send(
            ev.ResponseCreated(event_id=eid(), response=Response(id=rid, status="in_progress"))
        )

    def assistant_item(self, rid: str, item_id: str) -> None:
        item = AssistantMessage(id=item_id, status="in_progress", content=())
        self.send(
            ev.ResponseOutputItemAdded(event_id=eid(), response_id=rid, output_index=0, item=item)
        )
        self.send(ev.ConversationItemAdded(event_id=eid(), item=item))

    def audio(self, rid: str, item_id: str, ms: int, words: str = "") -> None:
        self.send(
            ev.ResponseOutputAudioDelta(
                event_id=eid(),
                response_id=rid,
                item_id=item_id,
                output_index=0,
                content_index=0,
                delta=b64encode(b"\x00\x00" * 24 * ms),
            )
        )
        if words:
            self.send(
                ev.ResponseOutputAudioTranscriptDelta(
                    event_id=eid(),
                    response_id=rid,
                    item_id=item_id,
                    output_index=0,
                    content_index=0,
                    delta=words,
                )
            )

    def done(
        self, rid: str, status: Any = "completed", reason: Any = None, output: tuple[Any, ...] = ()
    ) -> None:
        details = StatusDetails(type=status, reason=reason) if reason else None
        self.send(
            ev.ResponseDone(
                event_id=eid(),
                response=Response(id=rid, status=status, status_details=details, output=output),
            )
        )

    def error(self, code: str, event_id: str | None, message: str = "x") -> None:
        self.send(
            ev.ErrorEvent(
                event_id=eid(),
                error=ErrorDetail(
                    type="invalid_request_error", code=code, message=message, event_id=event_id
                ),
            )
        )


def sent(session: RealtimeSession) -> list[dict[str, Any]]:
    return [orjson.loads(frame) for frame in session.data_to_send()]


@pytest.fixture
def pair() -> tuple[RealtimeSession, Server]:
    session = RealtimeSession()
    server = Server(session)
    server.created()
    return session, server


def test_session_created_is_tracked_and_a_second_one_resets(pair) -> None:
    session, server = pair
    assert session.ready and session.expires_at == 2_000_000_000
    server.send(
        ev.ConversationItemAdded(
            event_id=eid(),
            item=UserMessage(id="item_u1", content=(InputAudio(transcript="hello"),)),
        )
    )
    assert [i.text for i in session.items_in_order()] == ["hello"]
    server.created()
    assert session.session_resets == 1 and not session.items


def test_second_response_request_waits_for_the_first(pair) -> None:
    session, server = pair
    assert session.request_response(tag="first") is True
    assert session.request_response(tag="second") is False
    frames = sent(session)
    assert [f["type"] for f in frames] == ["response.create"], "never two creates in flight"
    server.response_created("resp_1")
    assert session.response_phase is ResponsePhase.ACTIVE and sent(session) == []
    server.done("resp_1")
    [queued] = sent(session)
    assert queued["type"] == "response.create"
    assert session.response is not None and session.response.tag == "second"


def test_cancel_before_created_is_deferred_until_the_id_is_known(pair) -> None:
    session, server = pair
    session.request_response()
    sent(session)
    assert session.cancel_response() is True
    assert sent(session) == [], "a cancel before response.created would be a no-op"
    server.response_created("resp_9")
    [cancel] = sent(session)
    assert cancel == {
        "type": "response.cancel",
        "response_id": "resp_9",
        "event_id": cancel["event_id"],
    }
    assert session.cancel_response() is False, "no second cancel"


def test_server_vad_response_is_tracked_without_a_request(pair) -> None:
    session, server = pair
    server.response_created("resp_auto")
    assert session.response_phase is ResponsePhase.ACTIVE
    assert session.request_response() is False, "queued behind the server's own response"
    server.done("resp_auto")
    assert [f["type"] for f in sent(session)] == ["response.create"]


def test_refused_create_during_a_vad_response_is_retried_after_it(pair) -> None:
    session, server = pair
    session.request_response(tag="text turn")
    [create] = sent(session)
    server.error("conversation_already_has_active_response", create["event_id"])
    [error] = session.errors
    assert error.caused_by == "response.create" and error.verdict.kind is ErrorClass.BENIGN
    server.response_created("resp_vad")
    server.done("resp_vad")
    [retry] = sent(session)
    assert retry["type"] == "response.create"


def speak(session: RealtimeSession, server: Server, ms: int, words: str) -> None:
    session.request_response()
    sent(session)
    server.response_created("resp_1")
    server.assistant_item("resp_1", "item_a1")
    server.audio("resp_1", "item_a1", ms, words)


def test_interrupt_truncates_at_what_was_played(pair) -> None:
    session, server = pair
    speak(session, server, 3000, "one two three four five six")
    session.report_playback("resp_1", 1200)
    cut = session.interrupt()
    assert cut is not None and cut.truncated_at_ms == 1200 and not cut.deleted
    frames = sent(session)
    assert [f["type"] for f in frames] == ["response.cancel", "conversation.item.truncate"]
    assert frames[1]["audio_end_ms"] == 1200 and frames[1]["item_id"] == "item_a1"
    server.send(
        ev.ConversationItemTruncated(
            event_id=eid(), item_id="item_a1", content_index=0, audio_end_ms=1200
        )
    )
    assert session.items["item_a1"].heard_text == "one two", "memory cut to what was heard"


def test_interrupt_never_cuts_past_the_audio_received(pair) -> None:
    session, server = pair
    speak(session, server, 800, "short")
    cut = session.interrupt(played_ms=5000)  # a wall-clock guess that overshoots
    assert cut is not None and cut.truncated_at_ms == 800
    assert sent(session)[-1]["audio_end_ms"] == 800


def test_interrupt_before_anything_was_heard_deletes_the_item(pair) -> None:
    session, server = pair
    speak(session, server, 400, "hello there")
    cut = session.interrupt(played_ms=0, server_cancels=True)
    assert cut is not None and cut.deleted
    assert [f["type"] for f in sent(session)] == ["conversation.item.delete"], (
        "server VAD cancels by itself; npcd only fixes the memory"
    )


def preamble_and_answer(session: RealtimeSession, server: Server) -> None:
    """One response, two spoken items: a 500 ms preamble, then a 2000 ms answer."""
    session.request_response()
    sent(session)
    server.response_created("resp_1")
    server.assistant_item("resp_1", "item_pre")
    server.audio("resp_1", "item_pre", 500, "Let me see.")
    server.assistant_item("resp_1", "item_ans")
    server.audio("resp_1", "item_ans", 2000, "one two three four")


def test_interrupt_in_the_second_item_cuts_it_there_and_keeps_the_first(pair) -> None:
    session, server = pair
    preamble_and_answer(session, server)
    cut = session.interrupt(played_ms=1500)  # 500 ms of preamble + 1000 ms of the answer
    assert cut is not None and cut.truncated_at_ms == 1500 and cut.item_id == "item_ans"
    frames = sent(session)
    assert [f["type"] for f in frames] == ["response.cancel", "conversation.item.truncate"]
    assert frames[1]["item_id"] == "item_ans" and frames[1]["audio_end_ms"] == 1000


def test_interrupt_in_the_preamble_cuts_it_and_deletes_the_unheard_answer(pair) -> None:
    session, server = pair
    preamble_and_answer(session, server)
    cut = session.interrupt(played_ms=300)
    assert cut is not None and cut.truncated_at_ms == 300 and not cut.deleted
    frames = sent(session)[1:]
    assert [(f["type"], f["item_id"]) for f in frames] == [
        ("conversation.item.truncate", "item_pre"),
        ("conversation.item.delete", "item_ans"),
    ]
    assert frames[0]["audio_end_ms"] == 300


def test_interrupt_at_the_end_of_the_preamble_keeps_it_whole(pair) -> None:
    session, server = pair
    preamble_and_answer(session, server)
    session.interrupt(played_ms=500)
    frames = sent(session)[1:]
    assert [(f["type"], f["item_id"]) for f in frames] == [("conversation.item.delete", "item_ans")]


def test_an_answer_whose_words_came_before_its_audio_is_deleted_unheard(pair) -> None:
    session, server = pair
    session.request_response()
    sent(session)
    server.response_created("resp_1")
    server.assistant_item("resp_1", "item_pre")
    server.audio("resp_1", "item_pre", 500, "Let me see.")
    server.assistant_item("resp_1", "item_ans")
    server.send(
        ev.ResponseOutputAudioTranscriptDelta(
            event_id=eid(),
            response_id="resp_1",
            item_id="item_ans",
            output_index=1,
            content_index=0,
            delta="Iron sword, forty gold.",
        )
    )
    session.interrupt(played_ms=500)
    frames = sent(session)[1:]
    assert [(f["type"], f["item_id"]) for f in frames] == [
        ("conversation.item.truncate", "item_pre"),
        ("conversation.item.delete", "item_ans"),
    ]
    # Before the server confirms: a new session would be given what was heard only.
    replayed = " ".join(
        part.text for item in session.history() for part in getattr(item, "content", ())
    )
    assert "Let me see." in replayed and "Iron sword" not in replayed


def test_the_cut_is_in_the_history_before_the_server_confirms_it(pair) -> None:
    session, server = pair
    preamble_and_answer(session, server)
    session.interrupt(played_ms=1500)  # the preamble, then half the answer: "one two"
    sent(session)
    replayed = [part.text for item in session.history() for part in getattr(item, "content", ())]
    assert replayed == ["Let me see.", "one two"]


def test_interrupt_with_nothing_playing_does_nothing(pair) -> None:
    session, _ = pair
    assert session.interrupt(played_ms=100) is None
    assert sent(session) == []


def test_function_call_round_trip(pair) -> None:
    session, server = pair
    session.request_response()
    sent(session)
    server.response_created("resp_f")
    call = FunctionCall(
        name="sell_item", arguments="", call_id="call_1", id="item_f", status="in_progress"
    )
    server.send(
        ev.ResponseOutputItemAdded(event_id=eid(), response_id="resp_f", output_index=0, item=call)
    )
    server.send(
        ev.ResponseFunctionCallArgumentsDone(
            event_id=eid(),
            response_id="resp_f",
            item_id="item_f",
            output_index=0,
            call_id="call_1",
            name="sell_item",
            arguments='{"item": "iron sword"}',
        )
    )
    done_call = FunctionCall(
        name="sell_item",
        arguments='{"item": "iron sword"}',
        call_id="call_1",
        id="item_f",
        status="completed",
    )
    server.done("resp_f", output=(done_call,))
    assert list(session.pending_calls) == ["call_1"]
    assert session.calls_outstanding("resp_f") == 1
    answered = session.answer_call("call_1", '{"ok": true}')
    assert answered.name == "sell_item"
    session.request_response()
    assert [f["type"] for f in sent(session)] == ["conversation.item.create", "response.create"]
    with pytest.raises(KeyError):
        session.answer_call("call_1", "{}")


def test_calls_of_a_cancelled_response_are_dropped(pair) -> None:
    session, server = pair
    server.response_created("resp_c")
    server.send(
        ev.ResponseFunctionCallArgumentsDone(
            event_id=eid(),
            response_id="resp_c",
            item_id="item_f",
            output_index=0,
            call_id="call_9",
            name="open_gate",
            arguments="{}",
        )
    )
    server.done("resp_c", status="cancelled", reason="turn_detected")
    assert session.pending_calls == {}


def test_history_replays_heard_text_calls_and_outputs(pair) -> None:
    session, server = pair
    server.send(
        ev.ConversationItemAdded(
            event_id=eid(), item=UserMessage(id="item_u", content=(InputAudio(),))
        )
    )
    server.send(
        ev.ConversationItemInputAudioTranscriptionCompleted(
            event_id=eid(),
            item_id="item_u",
            content_index=0,
            transcript="what do you sell",
            usage=TranscriptDurationUsage(seconds=1.5),
        )
    )
    speak(session, server, 1000, "swords and shields")
    server.done("resp_1")
    server.send(
        ev.ConversationItemAdded(
            event_id=eid(),
            item=FunctionCall(id="item_f", name="sell_item", arguments="{}", call_id="call_1"),
        )
    )
    server.send(
        ev.ConversationItemAdded(
            event_id=eid(),
            item=FunctionCallOutput(id="item_o", call_id="call_1", output='{"ok":true}'),
        )
    )
    history = session.history()
    assert [type(i).__name__ for i in history] == [
        "UserMessage",
        "AssistantMessage",
        "FunctionCall",
        "FunctionCallOutput",
    ]
    assistant = history[1]
    assert isinstance(assistant, AssistantMessage)
    assert assistant.content == (OutputText(text="swords and shields"),)


def test_item_order_follows_previous_item_id(pair) -> None:
    session, server = pair
    for item_id, previous in (("a", None), ("c", "a"), ("b", "a"), ("z", "root")):
        server.send(
            ev.ConversationItemAdded(
                event_id=eid(), previous_item_id=previous, item=UserMessage(id=item_id, content=())
            )
        )
    assert session.order == ["z", "a", "b", "c"]
    server.send(ev.ConversationItemDeleted(event_id=eid(), item_id="b"))
    assert session.order == ["z", "a", "c"]


def test_errors_are_classified_and_correlated(pair) -> None:
    session, server = pair
    session.configure(SessionConfig(instructions="x"))
    [update] = sent(session)
    server.error("unknown_parameter", update["event_id"], "Unknown parameter: 'session.voice'")
    server.error("invalid_api_key", None)
    kinds = [(e.caused_by, e.verdict.kind) for e in session.errors]
    assert kinds == [("session.update", ErrorClass.CLIENT_BUG), (None, ErrorClass.FATAL)]


def test_unknown_server_events_are_counted_not_fatal(pair) -> None:
    session, _ = pair
    event = session.receive('{"type": "response.mcp_call.in_progress", "event_id": "e"}')
    assert isinstance(event, ev.UnknownServerEvent)
    assert session.unknown_events == {"response.mcp_call.in_progress": 1}


def test_append_is_one_cheap_frame_without_event_id(pair) -> None:
    session, _ = pair
    session.append_audio(b64encode(b"\x01\x00" * 480))
    [frame] = sent(session)
    assert frame == {"type": "input_audio_buffer.append", "audio": b64encode(b"\x01\x00" * 480)}


def test_beta_dialect_frames(pair) -> None:
    session = RealtimeSession(Dialect.BETA)
    server = Server(session, Dialect.BETA)
    server.created()
    session.request_response()
    sent(session)
    server.response_created("resp_b")
    server.assistant_item("resp_b", "item_b")
    server.audio("resp_b", "item_b", 500, "hi")
    assert session.items["item_b"].audio_ms == 500 and session.items["item_b"].text == "hi"
    assert session.items["item_b"].role is Role.ASSISTANT


def test_assistant_done_item_fills_transcript(pair) -> None:
    session, server = pair
    speak(session, server, 200, "")
    server.send(
        ev.ConversationItemDone(
            event_id=eid(),
            item=AssistantMessage(
                id="item_a1", status="completed", content=(OutputAudio(transcript="Well met."),)
            ),
        )
    )
    assert session.items["item_a1"].text == "Well met."


def test_rate_limits_hold_a_response_until_they_reset(pair: Any) -> None:
    session, server = pair
    limits = (RateLimit(name="requests", limit=100, remaining=0, reset_seconds=2.0),)
    session.receive(
        encode_server(ev.RateLimitsUpdated(event_id=eid(), rate_limits=limits)), now=100.0
    )
    assert session.request_response(now=100.5) is False
    assert sent(session) == [], "no response.create while the server says no requests are left"
    assert session.hold_until(100.5) == 102.0
    assert session.release_queued(101.0) is False
    assert session.release_queued(102.1) is True
    assert [f["type"] for f in sent(session)] == ["response.create"]


# -- what a replacement session is given -----------------------------------------------------


def test_items_sent_but_never_echoed_are_kept_for_the_next_session(pair) -> None:
    session, server = pair
    session.add_user_text("first line")
    session.add_user_text("second line")
    frames = sent(session)
    ids = [frame["item"]["id"] for frame in frames]
    assert all(i.startswith("npcd_") and len(i) <= 32 for i in ids), "client ids, OpenAI-sized"
    server.send(ev.ConversationItemAdded(event_id=eid(), item=UserMessage(id=ids[0], content=())))
    assert session.unconfirmed_items == 1
    history = session.history()
    assert isinstance(history[-1], UserMessage) and history[-1].id == ids[1]
    texts = [
        getattr(c, "text", None) for i in history if isinstance(i, UserMessage) for c in i.content
    ]
    assert texts.count("second line") == 1


def refuse(server: Server, frame: dict[str, Any], code: str) -> None:
    """The server's error for the client event ``frame``."""
    server.send(
        ev.ErrorEvent(
            event_id=eid(),
            error=ErrorDetail(
                type="invalid_request_error", code=code, message=code, event_id=frame["event_id"]
            ),
        )
    )


def test_an_item_the_server_refused_is_not_replayed(pair) -> None:
    session, server = pair
    session.add_user_text("refused")
    refuse(server, sent(session)[0], "invalid_value")
    assert session.unconfirmed_items == 0 and session.history() == []


def test_an_item_for_this_session_only_is_never_replayed(pair) -> None:
    from npcd.realtime.values import InputText, SystemMessage

    session, server = pair
    session.add_item(SystemMessage(content=(InputText(text="after a pause"),)), track=False)
    item_id = sent(session)[0]["item"]["id"]
    assert session.unconfirmed_items == 0
    server.send(
        ev.ConversationItemAdded(
            event_id=eid(),
            item=SystemMessage(id=item_id, content=(InputText(text="after a pause"),)),
        )
    )
    assert session.history() == [], "echoed, and still not handed to the next session"


def test_speech_or_uncommitted_push_to_talk_audio_is_input_in_progress(pair) -> None:
    session, server = pair
    assert not session.input_in_progress
    server.send(ev.InputAudioBufferSpeechStarted(event_id=eid(), audio_start_ms=0, item_id="i"))
    assert session.input_in_progress
    server.send(ev.InputAudioBufferSpeechStopped(event_id=eid(), audio_end_ms=9, item_id="i"))
    assert not session.input_in_progress, "server VAD: silence appended is not an utterance"
    session.server_vad = False
    session.append_audio("AAAA")
    assert session.input_in_progress
    session.commit_audio()
    assert not session.input_in_progress


def test_responses_asked_for_but_never_started_are_handed_on(pair) -> None:
    session, server = pair
    assert session.request_response(tag="first")
    assert not session.request_response(tag="second")  # queued behind the first
    assert session.unstarted_responses() == [(None, "first"), (None, "second")]
    server.response_created("resp_1")
    assert session.unstarted_responses() == [(None, "second")], "the first one started"


def test_a_cancelled_request_is_not_asked_for_again(pair) -> None:
    session, _ = pair
    session.request_response(tag="gone")
    session.cancel_response()  # before response.created: deferred
    assert session.unstarted_responses() == []


def test_a_refused_create_keeps_its_overrides_when_it_waits_for_the_servers_response(
    pair,
) -> None:
    from npcd.realtime.values import ResponseOverrides

    session, server = pair
    overrides = ResponseOverrides(instructions="greet")
    session.request_response(overrides, tag="greeting")
    refuse(server, sent(session)[0], "conversation_already_has_active_response")
    assert session.unstarted_responses() == [(overrides, "greeting")]


def test_forgetting_the_conversation_deletes_every_item_and_replays_nothing(pair) -> None:
    session, server = pair
    speak(session, server, 1000, "swords and shields")
    server.done("resp_1")
    session.add_user_text("not yet echoed")
    sent(session)
    assert session.forget_conversation() == 2
    deletes = [e["item_id"] for e in sent(session) if e["type"] == "conversation.item.delete"]
    assert len(deletes) == 2, "the echoed item and the one still unconfirmed"
    assert session.history() == [] and list(session.items_in_order()) == []


def test_a_pinned_item_always_opens_the_history(pair) -> None:
    session, server = pair
    note = SystemMessage(content=(InputText(text="What you remember of Ada"),))
    session.add_item(note, pin=True)
    for n in range(6):
        session.add_user_text(f"line {n}")
    history = session.history(max_items=3)
    assert [i.content[0].text for i in history] == ["What you remember of Ada", "line 4", "line 5"]
    session.forget_conversation()
    assert session.history() == []
