"""Responses with several output items (newer Realtime models say a preamble, then the answer,
in one response), over the real gRPC stream, against a server double that speaks the GA wire
format: the game gets all of their audio and words, and an interruption cuts the item the
player was hearing and removes the ones never heard."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import orjson
import pytest
from websockets.asyncio.server import ServerConnection

from npcd.realtime import events as ev
from npcd.realtime.codec import encode_server
from npcd.realtime.values import AssistantMessage, Response, StatusDetails
from npcd.server.app import RunningServer
from npcd.v1 import npcd_pb2 as pb
from tests.fakes.realtime_peer import RealtimePeer
from tests.integration.test_converse import TIMEOUT, Game, start, start_daemon

KEY = "sk-multi-item-test-0123456789"
PARTS = (("item_pre", 500, "Let me see."), ("item_ans", 2000, "Iron sword, forty gold."))
TOTAL_MS = sum(ms for _, ms, _ in PARTS)


class Model:
    """Answers every `response.create` with two spoken items. With ``hold``, the response
    stays open until the client cancels it (so the game can interrupt it)."""

    def __init__(self, *, hold: bool) -> None:
        self.hold = hold
        self.frames: list[dict[str, Any]] = []
        self.got_frame = asyncio.Event()

    async def __call__(self, ws: ServerConnection) -> None:
        await ws.send('{"type":"session.created","event_id":"e0","session":{"type":"realtime"}}')
        rid: str | None = None
        async for raw in ws:
            frame = orjson.loads(raw)
            self.frames.append(frame)
            self.got_frame.set()
            if frame["type"] == "response.create":
                rid = f"resp_{len(self.frames)}"
                await self._speak(ws, rid)
                if not self.hold:
                    await self._done(ws, rid, "completed")
            elif frame["type"] == "response.cancel" and rid is not None:
                await self._done(ws, rid, "cancelled")
                rid = None

    async def _speak(self, ws: ServerConnection, rid: str) -> None:
        created = Response(id=rid, status="in_progress")
        await ws.send(encode_server(ev.ResponseCreated(event_id="e1", response=created)))
        for index, (item_id, ms, words) in enumerate(PARTS):
            item = AssistantMessage(id=item_id, status="in_progress", content=())
            await ws.send(
                encode_server(
                    ev.ResponseOutputItemAdded(
                        event_id=f"a{index}", response_id=rid, output_index=index, item=item
                    )
                )
            )
            await ws.send(encode_server(ev.ConversationItemAdded(event_id=f"c{index}", item=item)))
            tone = base64.b64encode(b"\x10\x00\xf0\xff" * 12 * ms).decode()  # ms of audio
            where: dict[str, Any] = {"response_id": rid, "item_id": item_id, "output_index": index}
            await ws.send(
                encode_server(
                    ev.ResponseOutputAudioDelta(
                        event_id=f"d{index}", content_index=0, delta=tone, **where
                    )
                )
            )
            await ws.send(
                encode_server(
                    ev.ResponseOutputAudioTranscriptDelta(
                        event_id=f"t{index}", content_index=0, delta=words, **where
                    )
                )
            )

    async def _done(self, ws: ServerConnection, rid: str, status: Any) -> None:
        details = (
            StatusDetails(type=status, reason="client_cancelled") if status != "completed" else None
        )
        done = Response(id=rid, status=status, status_details=details)
        await ws.send(encode_server(ev.ResponseDone(event_id="e9", response=done)))

    async def wait_for(self, kind: str) -> list[dict[str, Any]]:
        async with asyncio.timeout(TIMEOUT):
            while not any(f["type"] == kind for f in self.frames):
                self.got_frame.clear()
                await self.got_frame.wait()
        return [f for f in self.frames if f["type"] == kind]


@contextlib.asynccontextmanager
async def daemon_on(model: Model, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[RunningServer]:
    monkeypatch.setenv("NPCD_API_KEY", KEY)
    async with RealtimePeer(model) as peer:
        url = "ws" + peer.base_url.removeprefix("http")
        context, running = await start_daemon(backend=url)
        try:
            yield running
        finally:
            await context.__aexit__(None, None, None)


async def spoken_ms(game: Game) -> int:
    """Read NPC audio until the whole response's audio has come; its length in ms."""
    got = 0
    async with asyncio.timeout(TIMEOUT):
        while got < TOTAL_MS:
            chunk = await game.until("audio")
            got = chunk.start_ms + len(chunk.data) * 1000 // (2 * 24000)
    return got


async def test_every_item_of_a_response_is_heard_and_said(monkeypatch: pytest.MonkeyPatch) -> None:
    model = Model(hold=False)
    async with daemon_on(model, monkeypatch) as running:
        async with grpc.aio.insecure_channel(running.address.grpc_target) as channel:
            game = Game(channel, start("blacksmith"))
            await game.until("ready")
            game.send(text=pb.TextMessage(text="what do you sell?"))
            done = await game.until("response_done")
            game.end()
        assert done.status == pb.RESPONSE_STATUS_COMPLETED
        assert done.audio_ms == TOTAL_MS, "both items' audio reached the game"
        assert sum(len(a.data) for a in game.of("audio")) == TOTAL_MS * 48
        assert done.transcript == "Let me see. Iron sword, forty gold."
        words = "".join(t.delta for t in game.of("npc_transcript"))
        assert words == done.transcript
        assert len(game.of("response_started")) == 1


@pytest.mark.parametrize(
    ("played_ms", "expected"),
    [
        # In the answer: it is cut there; the preamble was heard in full.
        (1500, [("conversation.item.truncate", "item_ans", 1000)]),
        # In the preamble: it is cut there; the answer was never heard.
        (
            300,
            [
                ("conversation.item.truncate", "item_pre", 300),
                ("conversation.item.delete", "item_ans", None),
            ],
        ),
    ],
)
async def test_an_interrupt_cuts_the_item_being_heard(
    played_ms: int, expected: list[tuple[str, str, int | None]], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = Model(hold=True)
    async with daemon_on(model, monkeypatch) as running:
        async with grpc.aio.insecure_channel(running.address.grpc_target) as channel:
            game = Game(channel, start("blacksmith"))
            await game.until("ready")
            game.send(text=pb.TextMessage(text="what do you sell?"))
            started = await game.until("response_started")
            assert await spoken_ms(game) == TOTAL_MS
            game.send(
                playback=pb.PlaybackProgress(response_id=started.response_id, played_ms=played_ms)
            )
            game.send(interrupt=pb.Interrupt())
            cut = await game.until("interrupted")
            done = await game.until("response_done")
            game.end()
        assert cut.truncated_at_ms == played_ms
        assert done.status == pb.RESPONSE_STATUS_INTERRUPTED
        await model.wait_for("conversation.item.truncate")
        edits = [
            (f["type"], f["item_id"], f.get("audio_end_ms"))
            for f in model.frames
            if f["type"] in ("conversation.item.truncate", "conversation.item.delete")
        ]
        assert edits == expected
