"""The `npcd.v1.NpcService` servicer: checks requests, maps errors to statuses, delegates.

Requests are parsed leniently (`add_to_server`): bytes that are not a valid message (garbage,
a string field that is not UTF-8) become a `MalformedMessage` instead of an exception inside
grpc, so the caller gets INVALID_ARGUMENT with a reason, npcd logs one line, not a traceback,
and nothing else is disturbed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Protocol, TypeVar

import grpc
import orjson
from google.protobuf.message import DecodeError

from npcd.cost.governor import CostGovernor
from npcd.errors import (
    BackendUnavailable,
    InvalidRequest,
    NpcdError,
    Overloaded,
    UnknownCharacter,
)
from npcd.memory.keeper import MemoryKeeper, MemoryUnavailable
from npcd.metrics import Metrics
from npcd.personas import LoadedPersona
from npcd.pool import SessionPool
from npcd.realtime.endpoints import Backend
from npcd.server.conversation import Conversation, check_identity
from npcd.server.convert import character_message
from npcd.slot import NpcSlot
from npcd.v1 import npcd_pb2 as pb
from npcd.v1 import npcd_pb2_grpc as pb_grpc

_LOGGER = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["NpcService"].full_name
#: A client that opens Converse and says nothing is dropped after this long.
FIRST_MESSAGE_TIMEOUT = 10.0
#: How long a conversation waits for its NPC's backend session to (re)connect, unless the
#: backend is known to be down (then it fails at once) or `Start.backend_wait_ms` says.
READY_TIMEOUT = 10.0
MAX_BACKEND_WAIT_MS = 120_000
#: Metadata a game sends on `Converse` so a proxy can keep each NPC on one npcd process.
NPC_HEADER = "x-npc-id"
#: Metadata npcd answers with: the name of the process serving the stream.
WORKER_HEADER = "x-npcd-worker"

_M = TypeVar("_M", covariant=True)
_R = TypeVar("_R")
_T = TypeVar("_T")


class _Parser(Protocol[_M]):
    def FromString(self, data: bytes, /) -> _M: ...  # noqa: N802 - protobuf's name


class MalformedMessage:
    """Bytes from a client that do not parse as the message the method takes."""

    __slots__ = ("detail", "size")

    def __init__(self, size: int, detail: str) -> None:
        self.size = size
        self.detail = detail

    @property
    def reason(self) -> str:
        return f"malformed message: {self.size} bytes that do not parse ({self.detail})"


def _lenient(message_type: _Parser[_M]) -> Callable[[bytes], _M | MalformedMessage]:
    def parse(data: bytes) -> _M | MalformedMessage:
        try:
            return message_type.FromString(data)
        except DecodeError as exc:
            return MalformedMessage(len(data), str(exc) or "invalid protobuf")

    return parse


def add_to_server(servicer: NpcService, server: grpc.aio.Server) -> None:
    """Register ``servicer`` like the generated `add_NpcServiceServicer_to_server`, with
    lenient request parsing."""
    handlers = {
        "Converse": grpc.stream_stream_rpc_method_handler(
            servicer.Converse,
            request_deserializer=_lenient(pb.ConverseRequest),
            response_serializer=pb.ConverseResponse.SerializeToString,
        ),
        "ListCharacters": grpc.unary_unary_rpc_method_handler(
            servicer.ListCharacters,
            request_deserializer=_lenient(pb.ListCharactersRequest),
            response_serializer=pb.ListCharactersResponse.SerializeToString,
        ),
        "GetCharacter": grpc.unary_unary_rpc_method_handler(
            servicer.GetCharacter,
            request_deserializer=_lenient(pb.GetCharacterRequest),
            response_serializer=pb.Character.SerializeToString,
        ),
    }
    for name, request, response in (
        ("ListMemories", pb.ListMemoriesRequest, pb.ListMemoriesResponse),
        ("CopySaveSlot", pb.CopySaveSlotRequest, pb.MemoryChange),
        ("DeleteSaveSlot", pb.DeleteSaveSlotRequest, pb.MemoryChange),
        ("ForgetPlayer", pb.ForgetPlayerRequest, pb.MemoryChange),
        ("ExportMemory", pb.ExportMemoryRequest, pb.ExportMemoryResponse),
        ("ImportMemory", pb.ImportMemoryRequest, pb.MemoryChange),
    ):
        handlers[name] = grpc.unary_unary_rpc_method_handler(
            getattr(servicer, name),
            request_deserializer=_lenient(request),
            response_serializer=response.SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)


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
        memory: MemoryKeeper | None = None,
        metrics: Metrics | None = None,
        governor: CostGovernor | None = None,
        fallback: Callable[[str], Awaitable[Backend]] | None = None,
        worker: str = "npcd",
        routed: bool = False,
    ):
        self._worker = worker
        self._routed = routed
        #: Set by a drain: conversations in progress go on, new ones are refused.
        self.draining = False
        self._governor = governor
        self._fallback = fallback
        self._personas = personas
        self._pool = pool
        self._memory = memory
        self.metrics = metrics or Metrics()
        self._first_message_timeout = first_message_timeout
        self._ready_timeout = ready_timeout

    async def ListCharacters(
        self,
        request: pb.ListCharactersRequest | MalformedMessage,
        context: grpc.aio.ServicerContext,
    ) -> pb.ListCharactersResponse:
        if isinstance(request, MalformedMessage):
            await _refuse_malformed(context, request)
        personas = self._personas()
        return pb.ListCharactersResponse(
            characters=[self._character(personas[key]) for key in sorted(personas)]
        )

    async def GetCharacter(
        self, request: pb.GetCharacterRequest | MalformedMessage, context: grpc.aio.ServicerContext
    ) -> pb.Character:
        if isinstance(request, MalformedMessage):
            await _refuse_malformed(context, request)
            raise AssertionError("unreachable: abort raises")
        try:
            return self._character(self._lookup(request.character_id))
        except NpcdError as exc:
            await _abort(context, exc)
            raise  # unreachable: abort raises

    # -- memory -----------------------------------------------------------------------------------

    async def ListMemories(
        self, request: pb.ListMemoriesRequest | MalformedMessage, context: grpc.aio.ServicerContext
    ) -> pb.ListMemoriesResponse:
        checked = await self._memory_request(request, context)
        slots = await self._memory_call(
            context, lambda m: m.slots(checked.player_id or None, checked.character_id or None)
        )
        return pb.ListMemoriesResponse(
            slots=[
                pb.MemorySlot(
                    character_id=s.character,
                    player_id=s.player,
                    save_slot=s.slot,
                    conversations=s.conversations,
                    turns=s.turns,
                    last_unix_ms=int(s.last_at * 1000),
                )
                for s in slots
            ]
        )

    async def CopySaveSlot(
        self, request: pb.CopySaveSlotRequest | MalformedMessage, context: grpc.aio.ServicerContext
    ) -> pb.MemoryChange:
        r = await self._memory_request(request, context, player=True)
        count = await self._memory_call(
            context,
            lambda m: m.copy_slot(r.player_id, r.from_slot, r.to_slot, r.character_id or None),
        )
        return pb.MemoryChange(conversations=count)

    async def DeleteSaveSlot(
        self,
        request: pb.DeleteSaveSlotRequest | MalformedMessage,
        context: grpc.aio.ServicerContext,
    ) -> pb.MemoryChange:
        r = await self._memory_request(request, context, player=True)
        count = await self._memory_call(
            context, lambda m: m.delete_slot(r.player_id, r.save_slot, r.character_id or None)
        )
        self._forget_in_sessions(r.player_id, r.save_slot)
        return pb.MemoryChange(conversations=count)

    async def ForgetPlayer(
        self, request: pb.ForgetPlayerRequest | MalformedMessage, context: grpc.aio.ServicerContext
    ) -> pb.MemoryChange:
        r = await self._memory_request(request, context, player=True)
        count = await self._memory_call(context, lambda m: m.forget_player(r.player_id))
        self._forget_in_sessions(r.player_id, None)
        if self._governor is not None:
            await self._governor.forget_player(r.player_id)  # per-player budgets name them
        return pb.MemoryChange(conversations=count)

    async def ExportMemory(
        self, request: pb.ExportMemoryRequest | MalformedMessage, context: grpc.aio.ServicerContext
    ) -> pb.ExportMemoryResponse:
        r = await self._memory_request(request, context, player=True)
        slot = r.save_slot if r.HasField("save_slot") else None
        document = await self._memory_call(context, lambda m: m.export(r.player_id, slot))
        return pb.ExportMemoryResponse(json=orjson.dumps(document).decode())

    async def ImportMemory(
        self, request: pb.ImportMemoryRequest | MalformedMessage, context: grpc.aio.ServicerContext
    ) -> pb.MemoryChange:
        r = await self._memory_request(request, context)
        try:
            document = orjson.loads(r.json)
        except orjson.JSONDecodeError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"json: not JSON ({exc})")
            raise AssertionError("unreachable: abort raises") from None
        if not isinstance(document, dict):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "json: must be an object")
        count = await self._memory_call(context, lambda m: m.import_(document, replace=r.replace))
        return pb.MemoryChange(conversations=count)

    async def _memory_request(
        self,
        request: _R | MalformedMessage,
        context: grpc.aio.ServicerContext,
        player: bool = False,
    ) -> _R:
        if isinstance(request, MalformedMessage):
            await _refuse_malformed(context, request)
            raise AssertionError("unreachable: abort raises")
        if player and not getattr(request, "player_id", ""):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "player_id: required")
        return request

    async def _memory_call(
        self, context: grpc.aio.ServicerContext, call: Callable[[MemoryKeeper], Awaitable[_T]]
    ) -> _T:
        memory = self._memory
        if memory is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "npcd runs without memory")
            raise AssertionError("unreachable: abort raises")
        try:
            return await call(memory)
        except MemoryUnavailable as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        raise AssertionError("unreachable: abort raises")

    def _forget_in_sessions(self, player: str, save_slot: str | None) -> None:
        """NPC sessions holding that player's memory drop it now, not at the next player."""
        if self._pool is None:
            return
        for slot in self._pool.slots.values():
            key = slot.memory_key
            if key is not None and key.player == player and save_slot in (None, key.slot):
                # Busy: the talk goes on, but the player's next conversation starts afresh.
                slot.memory_key = None
                if not self._pool.busy(slot.persona.persona.id):
                    slot.session.forget_conversation()
                    asyncio.get_running_loop().create_task(slot.flush())  # noqa: RUF006

    async def Converse(
        self,
        request_iterator: AsyncIterator[pb.ConverseRequest | MalformedMessage],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.ConverseResponse]:
        pool = self._pool
        errors = self.metrics.errors
        await context.send_initial_metadata(((WORKER_HEADER, self._worker),))
        if pool is None:
            errors.labels("call", "UNAVAILABLE").inc()
            await context.abort(grpc.StatusCode.UNAVAILABLE, "npcd runs without a backend")
            return
        if self.draining:
            errors.labels("call", "UNAVAILABLE").inc()
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"npcd ({self._worker}) is draining: it finishes its conversations and takes no "
                "new ones; try another instance",
            )
            return
        try:
            async with asyncio.timeout(self._first_message_timeout):
                first = await anext(aiter(request_iterator), None)
        except TimeoutError:
            errors.labels("call", "DEADLINE_EXCEEDED").inc()
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"no Start message within {self._first_message_timeout:.0f} s",
            )
        if first is None:
            return  # the client closed at once: nothing to do
        if isinstance(first, MalformedMessage):
            errors.labels("call", "INVALID_ARGUMENT").inc()
            await _refuse_malformed(context, first)
            return
        try:
            start = _check_start(first)
            _check_routing(context, start, required=self._routed)
            self._refuse_if_spent(start)
            async with pool.lease(
                start.character_id, wait=start.busy_policy == pb.BUSY_POLICY_WAIT
            ) as slot:
                if self.draining:  # it waited for the NPC, or for its Start, while drain began
                    raise BackendUnavailable(
                        f"npcd ({self._worker}) is draining: it takes no new conversations; "
                        "try another instance"
                    )
                async for message in self._converse(slot, start, first, request_iterator):
                    yield message
        except NpcdError as exc:
            errors.labels("call", exc.status).inc()
            await _abort(context, exc)

    def _refuse_if_spent(self, start: pb.Start) -> None:
        """An NPC whose spent budget refuses conversations does so before it is leased (which
        could suspend another NPC to make room for it)."""
        governor = self._governor
        loaded = self._personas().get(start.character_id)
        if governor is None or loaded is None:
            return
        budget = loaded.persona.budget
        if budget.on_exceeded == "local":
            return  # it goes on, on the offline backend: the conversation moves it there
        over = governor.exceeded(start.character_id, start.player.id or None, "", budget)
        if over is not None:
            self.metrics.budget_exceeded.labels(start.character_id, over.scope, "refused").inc()
            raise Overloaded(over.message)

    async def _converse(
        self,
        slot: NpcSlot,
        start: pb.Start,
        first: pb.ConverseRequest,
        requests: AsyncIterator[pb.ConverseRequest | MalformedMessage],
    ) -> AsyncIterator[pb.ConverseResponse]:
        if not slot.ready:
            await self._wait_for_backend(slot, start.backend_wait_ms)
        metrics = self.metrics
        conversation = Conversation(
            slot,
            start,
            memory=self._memory,
            metrics=metrics,
            governor=self._governor,
            fallback=self._fallback,
        )
        slot.listener = conversation
        reader = asyncio.create_task(_read(requests, conversation, metrics))
        try:
            ready = await conversation.open()
            yield pb.ConverseResponse(ready=ready, request_id=first.request_id)
            metrics.conversations.labels(slot.id).inc()
            metrics.frame_out("ready")
            while (message := await conversation.next_message()) is not None:
                yield message
                conversation.note_sent(message)
                kind = message.WhichOneof("kind") or "unset"
                metrics.frame_out(kind)
                if kind == "error":
                    code = message.error.code
                    metrics.errors.labels("stream", _ERROR_NAMES.get(code, str(code))).inc()
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            await conversation.close()
        if conversation.failure is not None:
            raise conversation.failure

    async def _wait_for_backend(self, slot: NpcSlot, wait_ms: int) -> None:
        """Wait for the NPC's session: ``wait_ms`` through failed attempts if the game asked
        for that; otherwise up to `READY_TIMEOUT` for a session being (re)connected, and not
        at all for a backend known to be down (a clear UNAVAILABLE beats a long silence)."""
        if wait_ms > MAX_BACKEND_WAIT_MS:
            raise InvalidRequest(
                f"start.backend_wait_ms: at most {MAX_BACKEND_WAIT_MS} (got {wait_ms})"
            )
        if wait_ms or not slot.unreachable:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_ms / 1000 if wait_ms else self._ready_timeout):
                    await (slot.wait_connected() if wait_ms else slot.wait_ready())
        if not slot.ready:
            raise BackendUnavailable(
                f"npc {slot.id!r} has no backend session"
                + (f": {slot.last_error}" if slot.last_error else "")
                + "; npcd keeps reconnecting, try again shortly"
                + ("" if wait_ms else " (or set start.backend_wait_ms to wait)")
            )

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


_ERROR_NAMES = {value: name.removeprefix("ERROR_CODE_") for name, value in pb.ErrorCode.items()}


def _check_routing(context: grpc.aio.ServicerContext, start: pb.Start, *, required: bool) -> None:
    """A proxy routes a stream by its ``x-npc-id`` metadata (README, Scale-out): one that
    names another NPC than the stream's `Start` would send this NPC's talk to a process that
    is not its own, and behind the proxy of ``--workers`` (``required``) a stream without it
    would be spread over the workers, so the NPC could live on two at once."""
    values = [v for k, v in context.invocation_metadata() or () if k == NPC_HEADER]
    if required and len(values) != 1:
        raise InvalidRequest(
            f"metadata {NPC_HEADER}: one value, the character id, is required behind the proxy "
            f"(got {len(values)})"
        )
    for value in values:
        if value != start.character_id:
            shown = value if isinstance(value, str) else repr(value)
            raise InvalidRequest(
                f"metadata {NPC_HEADER} {shown[:80]!r} is not start.character_id "
                f"{start.character_id!r}: a proxy routes the stream by it, so they must match"
            )


def _check_start(first: pb.ConverseRequest) -> pb.Start:
    if first.WhichOneof("kind") != "start":
        raise InvalidRequest("the first message must be Start")
    start = first.start
    if not start.character_id:
        raise InvalidRequest("start.character_id: required")
    check_identity(start)  # before the NPC is leased (or waited for)
    return start


async def _read(
    requests: AsyncIterator[pb.ConverseRequest | MalformedMessage],
    conversation: Conversation,
    metrics: Metrics,
) -> None:
    """Feed client messages to the conversation until the client is done."""
    try:
        async for request in requests:
            if isinstance(request, MalformedMessage):
                _log_malformed(request)
                raise InvalidRequest(request.reason)
            metrics.frame_in(request.WhichOneof("kind") or "unset")
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


def _log_malformed(message: MalformedMessage) -> None:
    _LOGGER.warning("a client message of %d bytes did not parse: INVALID_ARGUMENT", message.size)


async def _refuse_malformed(context: grpc.aio.ServicerContext, message: MalformedMessage) -> None:
    _log_malformed(message)
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, message.reason)


async def _abort(context: grpc.aio.ServicerContext, error: NpcdError) -> None:
    await context.abort(grpc.StatusCode[error.status], error.message)
