"""Messages on their way to the game, with audio coalescing when the stream falls behind.

Every gRPC write costs the same whatever its size, and most of a relay's CPU is per message. So
when the stream gets to an audio chunk and more chunks of the same response are already waiting
behind it, they leave as one message. Nothing ever waits to be merged: with no backlog every
chunk goes out alone, as soon as it comes, and latency is untouched; under load the writes get
fewer and larger instead of the backlog growing.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence

from npcd.v1 import npcd_pb2 as pb

#: The most audio one merged message carries, to keep the game's chunks small.
MAX_MERGED_MS = 200


class Outbox:
    """A FIFO of outgoing messages (and the end marker) for one Converse stream."""

    def __init__(self) -> None:
        self._items: deque[object] = deque()
        self._waiter: asyncio.Future[None] | None = None

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: object) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> object:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.popleft()

    def push_front(self, items: Sequence[object]) -> None:
        """Put ``items`` back at the head, in order: they leave next."""
        self._items.extendleft(reversed(items))

    def peek(self) -> object | None:
        return self._items[0] if self._items else None

    def pop(self) -> object:
        return self._items.popleft()

    def take_audio(
        self,
        response_id: str,
        room: int,
        companion: Callable[[object, str], bool] | None = None,
    ) -> tuple[list[pb.ConverseResponse], list[object]]:
        """Remove and return the audio chunks of ``response_id`` at the head of the queue, up to
        ``room`` bytes in all, and the items between them that ``companion(item, response_id)``
        says belong with that audio (its lip-sync); stops at the first message of any other
        kind or response."""
        audio: list[pb.ConverseResponse] = []
        companions: list[object] = []
        items = self._items
        while items:
            head = items[0]
            if companion is not None and companion(head, response_id):
                companions.append(head)
                items.popleft()
                continue
            if not isinstance(head, pb.ConverseResponse) or head.WhichOneof("kind") != "audio":
                break
            chunk = head.audio
            if chunk.response_id != response_id or len(chunk.data) > room:
                break
            room -= len(chunk.data)
            audio.append(head)
            items.popleft()
        return audio, companions
