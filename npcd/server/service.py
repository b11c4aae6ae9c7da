"""The `npcd.v1.NpcService` servicer: checks requests, maps errors to statuses, delegates."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping

import grpc

from npcd.errors import NpcdError, UnknownCharacter
from npcd.personas import LoadedPersona
from npcd.server.convert import character_message
from npcd.v1 import npcd_pb2 as pb
from npcd.v1 import npcd_pb2_grpc as pb_grpc

_LOGGER = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["NpcService"].full_name


class NpcService(pb_grpc.NpcServiceServicer):
    """Serves characters from a catalogue the daemon can swap on reload."""

    def __init__(self, personas: Callable[[], Mapping[str, LoadedPersona]]):
        self._personas = personas

    async def ListCharacters(
        self, request: pb.ListCharactersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListCharactersResponse:
        personas = self._personas()
        return pb.ListCharactersResponse(
            characters=[character_message(personas[key].persona) for key in sorted(personas)]
        )

    async def GetCharacter(
        self, request: pb.GetCharacterRequest, context: grpc.aio.ServicerContext
    ) -> pb.Character:
        try:
            return character_message(self._lookup(request.character_id).persona)
        except NpcdError as exc:
            await _abort(context, exc)
            raise  # unreachable: abort raises

    async def Converse(
        self,
        request_iterator: AsyncIterator[pb.ConverseRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.ConverseResponse]:
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            "Converse is not available in this build yet: it arrives with the session pool",
        )
        yield pb.ConverseResponse()  # pragma: no cover - makes this an async generator

    def _lookup(self, character_id: str) -> LoadedPersona:
        personas = self._personas()
        found = personas.get(character_id)
        if found is None:
            known = ", ".join(sorted(personas)) or "none loaded"
            raise UnknownCharacter(f"no character {character_id!r} (known: {known})")
        return found


async def _abort(context: grpc.aio.ServicerContext, error: NpcdError) -> None:
    await context.abort(grpc.StatusCode[error.status], error.message)
