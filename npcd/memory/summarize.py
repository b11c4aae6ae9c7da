"""Summaries of older turns written by the backend's own model (OpenAI, Azure).

The extractive summary (`npcd.memory.store`) keeps the gist of each line; a model can keep
what matters (names, promises, debts, what was bought) in fewer words. When a conversation
ends and enough turns have left the recent window, npcd asks the same backend for a text-only,
out-of-band response (`conversation: "none"`, the turns as its `input`): never spoken, never
billed as audio, and in a short session of its own, so the NPC's session and its state machine
never see it. The result replaces the older turns' extractive gist in the memory note.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Final

from npcd.memory.recall import LABELS
from npcd.memory.store import SummaryWork, Turn
from npcd.realtime import events as ev
from npcd.realtime.endpoints import Backend
from npcd.realtime.protocol import RealtimeSession
from npcd.realtime.values import EventError, InputText, ResponseOverrides, UserMessage
from npcd.transport.ws import ConnectFailed, LinkClosed, RealtimeLink

__all__ = ["MIN_TURNS", "summary_overrides", "write_summary"]

_LOGGER = logging.getLogger(__name__)

#: Fewer new old turns than this are not worth a request (the extractive gist covers them).
MIN_TURNS: Final = 8
#: Marks the request in the backend's logs and events.
METADATA: Final = {"npcd": "memory-summary"}
TIMEOUT_S: Final = 30.0


def summary_overrides(work: SummaryWork, character: str, limit_chars: int) -> ResponseOverrides:
    """The out-of-band `response.create` settings for ``work``."""
    instructions = (
        f"You keep the memory of {character}, a game character, about one player. Write a "
        f"summary of at most {limit_chars} characters, in the third person, of what matters "
        "for later conversations: names, facts the player told, promises, deals, what was "
        "bought or sold, feelings. Merge it with the earlier summary if there is one. Plain "
        "text, no preamble, no lists."
    )
    return ResponseOverrides(
        instructions=instructions,
        output_modalities=("text",),
        conversation="none",
        metadata=METADATA,
        tools=(),
        input=(UserMessage(content=(InputText(text=_transcript(work.previous, work.turns)),)),),
    )


def _transcript(previous: str, turns: Sequence[Turn]) -> str:
    lines = [f"Earlier summary: {previous}"] if previous else []
    lines.append("Conversation:")
    lines.extend(f"{LABELS[turn.role]}{' '.join(turn.text.split())}" for turn in turns)
    return "\n".join(lines)


async def write_summary(
    backend: Backend, work: SummaryWork, character: str, limit_chars: int
) -> str | None:
    """The backend model's summary of ``work``, or None (logged) if it could not be had."""
    try:
        async with asyncio.timeout(TIMEOUT_S):
            return await _ask(backend, summary_overrides(work, character, limit_chars))
    except (TimeoutError, ConnectFailed, LinkClosed) as exc:
        _LOGGER.warning("memory: no summary from %s: %s", backend.describe, type(exc).__name__)
        return None


async def _ask(backend: Backend, overrides: ResponseOverrides) -> str | None:
    session = RealtimeSession(backend.dialect)
    link = await RealtimeLink.open(backend)
    text: list[str] = []
    try:
        asked = False
        while True:
            frame = await link.recv()
            try:
                event = session.receive(frame)
            except EventError:
                continue
            if session.ready and not asked:
                session.request_response(overrides, tag="summary")
                await link.send_many(session.data_to_send())
                asked = True
            if isinstance(event, ev.ResponseOutputTextDelta):
                text.append(event.delta)
            elif isinstance(event, ev.ResponseDone):
                status = event.response.status
                if status != "completed":
                    _LOGGER.warning("memory: the summary response ended %s", status)
                    return None
                return "".join(text).strip() or None
            elif isinstance(event, ev.ErrorEvent):
                _LOGGER.warning("memory: the backend refused the summary: %s", event.error.code)
                return None
    finally:
        await link.close()
