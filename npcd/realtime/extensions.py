"""npcd's one extension to the Realtime protocol: phoneme timing from the local backend.

The official protocol has no lip-sync data, but the embedded backend's synthesiser knows each
phoneme's start to the millisecond. A client that asks for it (``npcd_phonemes=1`` in the
WebSocket URL's query) gets, before each audio delta, a server event

    {"type": "npcd.output_audio.phonemes", "event_id": ..., "response_id": ..., "item_id": ...,
     "output_index": 0, "content_index": 0, "phonemes": [[audio_ms, "ipa"], ...]}

with the phonemes that start in that audio, ``audio_ms`` on the item's audio clock (0 = the
item's first audio byte; an empty name is a pause). Nobody else asks, so the official SDK and
OpenAI-compatible tools never see it. npcd decodes it as an `UnknownServerEvent` (the codec
keeps unknown types verbatim) and parses it here, defensively: it is still input from a socket.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from npcd.realtime.events import UnknownServerEvent

__all__ = [
    "PHONEMES_EVENT",
    "PHONEMES_QUERY",
    "PhonemeTiming",
    "parse_phonemes",
    "phonemes_event",
]

PHONEMES_EVENT: Final = "npcd.output_audio.phonemes"
#: The query parameter that asks the local backend for `PHONEMES_EVENT`s.
PHONEMES_QUERY: Final = "npcd_phonemes"
#: More than any one audio delta can hold (eSpeak: about 15 phonemes a second).
MAX_PHONEMES: Final = 4096
_MAX_NAME: Final = 16


@dataclass(frozen=True, slots=True)
class PhonemeTiming:
    """The phonemes starting in the next audio of one item."""

    response_id: str
    item_id: str
    phonemes: tuple[tuple[int, str], ...]


def phonemes_event(
    event_id: str,
    *,
    response_id: str,
    item_id: str,
    output_index: int,
    content_index: int,
    phonemes: Sequence[tuple[int, str]],
) -> UnknownServerEvent:
    """The event the local backend sends (encoded verbatim by `codec.encode_server`)."""
    return UnknownServerEvent(
        PHONEMES_EVENT,
        {
            "type": PHONEMES_EVENT,
            "event_id": event_id,
            "response_id": response_id,
            "item_id": item_id,
            "output_index": output_index,
            "content_index": content_index,
            "phonemes": [[int(ms), name] for ms, name in phonemes],
        },
    )


def parse_phonemes(event: UnknownServerEvent) -> PhonemeTiming | None:
    """The timing carried by ``event``; None if it is another event or malformed."""
    if event.type != PHONEMES_EVENT:
        return None
    raw = event.raw
    response_id = raw.get("response_id")
    item_id = raw.get("item_id")
    entries = raw.get("phonemes")
    if (
        not isinstance(response_id, str)
        or not isinstance(item_id, str)
        or not isinstance(entries, list)
        or len(entries) > MAX_PHONEMES
    ):
        return None
    phonemes: list[tuple[int, str]] = []
    for entry in entries:
        if not isinstance(entry, list) or len(entry) != 2:
            return None
        ms, name = entry
        if type(ms) is not int or ms < 0 or not isinstance(name, str) or len(name) > _MAX_NAME:
            return None
        phonemes.append((ms, name))
    return PhonemeTiming(response_id, item_id, tuple(phonemes))
