"""The `npcd.v1.NpcService` servicer: checks requests, maps errors to statuses, delegates."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping

import grpc

from npcd.errors import BackendUnavailable, InvalidRequest, NpcdError, UnknownCharacter
from npcd.personas import LoadedPersona
from npcd.pool import SessionPool
from npcd.server.conversation import Conversation
from npcd.server.convert import character_message
from npcd.slot import NpcSlot
from npcd.v1 import npcd_pb2 as pb
from npcd.v1 import npcd_pb2_grpc as pb_grpc

_LOGGER = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["NpcService"].full_name
#: A client that opens Converse and says nothing is dropped after this long.
FIRST_MESSAGE_TIMEOUT = 10.0
#: How long a conversation waits for its NPC's backend session to (re)connect.
READY_TIMEOUT = 10.0


class NpcService(pb_grpc.NpcServiceServicer):
    """Serves characters from a catalogue the daemon can swap on reload, and conversations
    through the session pool (None: no backend, Converse answers UNAVAILABLE)."""

    def __init__(
        self,
        personas: Callable[[], Mapping[str, LoadedPersona]],
        pool: SessionPool | None = None,
        *,
        first_message_timeout: float = FIRST_MESSAGE_TIMEOUT,
        ready_timeout: float = READY_TIMEOUT,
    ):
        self._personas = personas
        self._pool = pool
        self._first_message_timeout = first_message_timeout
        self._ready_timeout = ready_timeout

    async def ListCharacters(
        self, request: pb.ListCharactersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListCharactersResponse:
        personas = self._personas()
        return pb.ListCharactersResponse(
            characters=[self._character(personas[key]) for key in sorted(personas)]
        )

    async def GetCharacter(
        self, request: pb.GetCharacterRequest, context: grpc.aio.ServicerContext
    ) -> pb.Character:
        try:
            return self._character(self._lookup(request.character_id))
        except NpcdError as exc:
            await _abort(context, exc)
            raise  # unreachable: abort raises

    async def Converse(
        self,
        request_iterator: AsyncIterator[pb.ConverseRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.ConverseResponse]:
        pool = self._pool
        if pool is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "npcd runs without a backend")
            return
        try:
            async with asyncio.timeout(self._first_message_timeout):
                first = await anext(aiter(request_iterator), None)
        except TimeoutError:
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"no Start message within {self._first_message_timeout:.0f} s",
            )
        if first is None:
            return  # the client closed at once: nothing to do
        try:
            start = _check_start(first)
            async with pool.lease(
                start.character_id, wait=start.busy_policy == pb.BUSY_POLICY_WAIT
            ) as slot:
                async for message in self._converse(slot, start, first, request_iterator):
                    yield message
        except NpcdError as exc:
            await _abort(context, exc)

    async def _converse(
        self,
        slot: NpcSlot,
        start: pb.Start,
        first: pb.ConverseRequest,
        requests: AsyncIterator[pb.ConverseRequest],
    ) -> AsyncIterator[pb.ConverseResponse]:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._ready_timeout):
                await slot.wait_ready()
        if not slot.ready:
            raise BackendUnavailable(
                f"npc {slot.id!r} has no backend session"
                + (f": {slot.last_error}" if slot.last_error else "")
            )
        conversation = Conversation(slot, start)
        slot.listener = conversation
        reader = asyncio.create_task(_read(requests, conversation))
        try:
            ready = await conversation.open()
            yield pb.ConverseResponse(ready=ready, request_id=first.request_id)
            while (message := await conversation.next_message()) is not None:
                yield message
                conversation.note_sent(message)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            await conversation.close()
        if conversation.failure is not None:
            raise conversation.failure

    def _character(self, loaded: LoadedPersona) -> pb.Character:
        slot = self._pool.slots.get(loaded.persona.id) if self._pool else None
        return character_message(
            loaded.persona,
            ready=slot is not None and slot.ready,
            busy=self._pool is not None and self._pool.busy(loaded.persona.id),
        )

    def _lookup(self, character_id: str) -> LoadedPersona:
        personas = self._personas()
        found = personas.get(character_id)
        if found is None:
            known = ", ".join(sorted(personas)) or "none loaded"
            raise UnknownCharacter(f"no character {character_id!r} (known: {known})")
        return found


def _check_start(first: pb.ConverseRequest) -> pb.Start:
    if first.WhichOneof("kind") != "start":
        raise InvalidRequest("the first message must be Start")
    start = first.start
    if not start.character_id:
        raise InvalidRequest("start.character_id: required")
    return start


async def _read(requests: AsyncIterator[pb.ConverseRequest], conversation: Conversation) -> None:
    """Feed client messages to the conversation until the client is done."""
    try:
        async for request in requests:
            if not await conversation.handle(request):
                break
    except NpcdError as exc:
        conversation.finish(exc)
        return
    except asyncio.CancelledError:
        raise
    except Exception:
        _LOGGER.exception("conversation %s failed", conversation.id)
        conversation.finish(NpcdError("internal error; see npcd's log"))
        return
    conversation.finish()


async def _abort(context: grpc.aio.ServicerContext, error: NpcdError) -> None:
    await context.abort(grpc.StatusCode[error.status], error.message)
