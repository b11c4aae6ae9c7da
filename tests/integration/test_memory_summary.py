"""Summaries written by a model backend: an out-of-band, text-only `response.create` in a
short session of its own, against a server double built to the GA wire format (OpenAI cannot
be reached from here), and the summary then used in the memory note."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from websockets.asyncio.server import ServerConnection

from npcd.config import Secret
from npcd.memory.keeper import MemoryKeeper
from npcd.memory.recall import memory_note
from npcd.memory.store import Entry, MemoryKey
from npcd.realtime import events as ev
from npcd.realtime.codec import encode_server
from npcd.realtime.endpoints import Backend, Provider
from npcd.realtime.values import Dialect, Response
from tests.fakes.realtime_peer import RealtimePeer
from tests.unit.sdk_validator import validate

KEY = MemoryKey("blacksmith", "ada", "1")
SUMMARY = "Ada hunts wolves, bought an iron sword for forty gold and owes Brom ten more."


def model(requests: list[dict[str, Any]]) -> Any:
    """A Realtime server that answers a text response with `SUMMARY`."""

    async def handler(ws: ServerConnection) -> None:
        await ws.send('{"type":"session.created","event_id":"e1","session":{"type":"realtime"}}')
        async for frame in ws:
            request = orjson.loads(frame)
            requests.append(request)
            if request["type"] != "response.create":
                continue
            response = Response(id="resp_s", status="in_progress")
            await ws.send(encode_server(ev.ResponseCreated(event_id="e2", response=response)))
            for n, part in enumerate(SUMMARY.split(" ")):
                delta = ev.ResponseOutputTextDelta(
                    event_id=f"d{n}",
                    response_id="resp_s",
                    item_id="item_s",
                    output_index=0,
                    content_index=0,
                    delta=part if n == 0 else " " + part,
                )
                await ws.send(encode_server(delta))
            done = Response(id="resp_s", status="completed")
            await ws.send(encode_server(ev.ResponseDone(event_id="e3", response=done)))

    return handler


async def test_a_model_backend_writes_the_summary_of_older_turns(tmp_path: Path) -> None:
    requests: list[dict[str, Any]] = []
    keeper = await MemoryKeeper.open(tmp_path / "memory.sqlite3")
    try:
        conversation = await keeper.begin(KEY, 1.0)
        assert conversation is not None
        lines = [
            Entry("player" if n % 2 == 0 else "npc", f"line {n} about wolves") for n in range(30)
        ]
        for n, entry in enumerate(lines):
            await keeper.append(conversation, KEY, [entry], 2.0 + n)
        before = await keeper.recall(KEY, 600, 16)
        assert before is not None and SUMMARY not in before.summary
        async with RealtimePeer(model(requests)) as peer:
            keeper.summaries = Backend(Provider.OPENAI, peer.base_url, api_key=Secret("sk-0"))
            keeper.summarize_later(KEY, "Brom", 600, 16)
            await keeper.idle()
        after = await keeper.recall(KEY, 600, 16)
        assert after is not None and after.summary.startswith(SUMMARY)
        assert "line 29 about wolves" in memory_note(after, "Ada"), "recent turns still verbatim"
        [create] = [r for r in requests if r["type"] == "response.create"]
        validate(create, Dialect.GA, "client")  # as the official SDK's models read it
        for r in requests:  # every event npcd sent in that session
            validate(r, Dialect.GA, "client")
        response = create["response"]
        assert response["conversation"] == "none" and response["output_modalities"] == ["text"]
        assert response["metadata"] == {"npcd": "memory-summary"}
        [given] = response["input"]
        told = given["content"][0]["text"]
        assert "Player: line 0 about wolves" in told and "line 29" not in told, (
            "only the turns that left the recent window"
        )
        # Nothing new since: no second request.
        async with RealtimePeer(model(requests)) as peer:
            keeper.summaries = Backend(Provider.OPENAI, peer.base_url, api_key=Secret("sk-0"))
            keeper.summarize_later(KEY, "Brom", 600, 16)
            await keeper.idle()
        assert len([r for r in requests if r["type"] == "response.create"]) == 1
    finally:
        await keeper.close()
