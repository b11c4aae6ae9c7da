"""The local backend's usage estimate on hand-built conversations: the service's audio rates,
~4 characters a text token, the previous response's input as the cached prefix, and totals
that add up."""

from __future__ import annotations

from npcd import audio
from npcd.localbackend.usage import Piece, estimate, input_piece, output_piece, prompt
from npcd.realtime.values import (
    AssistantMessage,
    FunctionCall,
    FunctionCallOutput,
    FunctionTool,
    InputAudio,
    InputText,
    OutputAudio,
    OutputText,
    SystemMessage,
    Usage,
    UserMessage,
)

INSTRUCTIONS = "You are Brom Ironhand, the blacksmith."  # 38 characters: 10 tokens
EVENT = SystemMessage(id="item_sys", content=(InputText(text="Game event: player_waves"),))  # 6
HEARD = UserMessage(id="item_heard", content=(InputAudio(transcript="What's the price?"),))
HEARD_BYTES = 2350 * 48  # 2.35 s of the player: 24 tokens (23.5 rounded up)
SAID = "Forty gold, and it is yours."  # 28 characters: 7 tokens
REPLY = AssistantMessage(id="item_reply", content=(OutputAudio(transcript=SAID),))
REPLY_BYTES = 2300 * 48  # 2.3 s of the NPC: 46 tokens
TYPED = UserMessage(id="item_typed", content=(InputText(text="I'll take it."),))  # 4 tokens
ARGS = '{"item":"iron sword","price_gold":40}'  # 37 characters: 10 tokens
CALL = FunctionCall(id="item_call", name="sell_item", arguments=ARGS, call_id="call_1")


def first_turn() -> tuple[Piece, ...]:
    return prompt(
        INSTRUCTIONS,
        (),
        [input_piece("item_sys", EVENT), input_piece("item_heard", HEARD, HEARD_BYTES)],
    )


def second_turn(reply_bytes: int = REPLY_BYTES) -> tuple[Piece, ...]:
    return (
        *first_turn(),
        input_piece("item_reply", REPLY, reply_bytes, SAID),
        input_piece("item_typed", TYPED),
    )


def assert_adds_up(usage: Usage) -> None:
    inp, out = usage.input_token_details, usage.output_token_details
    assert inp is not None and out is not None and inp.cached_tokens_details is not None
    assert usage.input_tokens == (inp.text_tokens or 0) + (inp.audio_tokens or 0)
    assert usage.output_tokens == (out.text_tokens or 0) + (out.audio_tokens or 0)
    assert usage.total_tokens == (usage.input_tokens or 0) + (usage.output_tokens or 0)
    cached = inp.cached_tokens_details
    assert inp.cached_tokens == (cached.text_tokens or 0) + (cached.audio_tokens or 0)


def test_a_spoken_answer_to_the_players_audio() -> None:
    usage = estimate(first_turn(), [output_piece(REPLY, REPLY_BYTES, SAID)])
    assert_adds_up(usage)
    inp, out = usage.input_token_details, usage.output_token_details
    assert inp is not None and out is not None
    # Instructions and the event note are text; the heard transcript is not: the model hears.
    assert (inp.text_tokens, inp.audio_tokens, inp.cached_tokens) == (10 + 6, 24, 0)
    assert (out.text_tokens, out.audio_tokens) == (7, 46)
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (40, 53, 93)


def test_the_next_turn_reads_the_spoken_reply_as_audio_and_the_last_input_from_cache() -> None:
    usage = estimate(second_turn(), [output_piece(CALL)], first_turn())
    assert_adds_up(usage)
    inp, out = usage.input_token_details, usage.output_token_details
    assert inp is not None and out is not None and inp.cached_tokens_details is not None
    assert (inp.text_tokens, inp.audio_tokens) == (16 + 4, 24 + 46), "the reply at 50 ms a token"
    assert inp.cached_tokens == 40, "all of the first turn's input"
    cached = inp.cached_tokens_details
    assert (cached.text_tokens, cached.audio_tokens, cached.image_tokens) == (16, 24, 0)
    assert (out.text_tokens, out.audio_tokens) == (10, 0), "a call's arguments are output text"


def test_a_truncated_reply_counts_what_was_kept_and_ends_the_cached_prefix() -> None:
    truncated = second_turn(reply_bytes=1000 * 48)
    usage = estimate(truncated, [], second_turn())
    assert_adds_up(usage)
    inp = usage.input_token_details
    assert inp is not None and inp.cached_tokens_details is not None
    assert inp.audio_tokens == 24 + 20
    cached = inp.cached_tokens_details
    # The typed line after the changed reply is the same, but no longer part of a prefix.
    assert (cached.text_tokens, cached.audio_tokens) == (16, 24)


def test_new_instructions_leave_nothing_cached() -> None:
    changed = prompt("You are Mara, the herbalist.", (), second_turn()[1:])
    usage = estimate(changed, [], second_turn())
    assert usage.input_token_details is not None
    assert usage.input_token_details.cached_tokens == 0


def test_replies_without_audio_and_function_items_are_text() -> None:
    written = AssistantMessage(id="item_w", content=(OutputText(text=SAID),))
    answered = FunctionCallOutput(id="item_out", call_id="call_1", output='{"ok": true}')
    pieces = [
        input_piece("item_w", written),
        input_piece("item_spoken_then_cut", REPLY, 0, SAID),  # truncated to 0 ms: its words
        input_piece("item_call", CALL),
        input_piece("item_out", answered),
    ]
    usage = estimate(prompt("", (), pieces), [output_piece(written)])
    inp, out = usage.input_token_details, usage.output_token_details
    assert inp is not None and out is not None
    assert (inp.text_tokens, inp.audio_tokens) == (7 + 7 + 10 + 3, 0)
    assert (out.text_tokens, out.audio_tokens) == (7, 0)


def test_audio_given_inline_counts_by_its_length_and_typed_text_beside_it_as_text() -> None:
    second = audio.b64encode(bytes(1000 * 48))
    item = UserMessage(content=(InputText(text="Listen:"), InputAudio(audio=second)))
    usage = estimate(prompt("", (), [input_piece("item_inline", item)]), [])
    assert usage.input_token_details is not None
    assert usage.input_token_details.audio_tokens == 10
    assert usage.input_token_details.text_tokens == 2


def test_tool_declarations_are_input_text() -> None:
    description = "Sell the player an item from the forge. " * 10  # 400 characters
    tool = FunctionTool(
        name="sell_item",
        description=description,
        parameters={"type": "object", "properties": {"item": {"type": "string"}}},
    )
    bare = estimate(prompt(INSTRUCTIONS, (), []), []).input_tokens or 0
    declared = estimate(prompt(INSTRUCTIONS, (tool,), []), []).input_tokens or 0
    assert 100 < declared - bare < 130, "the description's 100 tokens and the JSON around it"
