"""Budgets over the real gRPC stream: an NPC whose budget is spent refuses (RESOURCE_EXHAUSTED)
or goes on, with its history, on the offline backend, while other NPCs keep talking; spend
survives a restart; every ResponseDone says what the response cost."""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path

import grpc
import pytest

from npcd.localbackend.server import LocalBackend
from npcd.v1 import npcd_pb2 as pb
from tests.conftest import SAMPLES
from tests.integration.test_converse import TIMEOUT, Game, start, start_daemon, warm_engines
from tests.integration.test_memory import KEY, backend

__all__ = ["backend", "warm_engines"]

#: The offline backend priced as if it were gpt-realtime, so its responses cost something.
PRICES = """\
npcd-local:
  text: {input: 4.0, cached: 0.4, output: 16.0}
  audio: {input: 32.0, cached: 0.4, output: 64.0}
"""


def characters(tmp_path: Path, blacksmith_budget: str) -> Path:
    """The samples, with the blacksmith's `budget:` block replaced."""
    folder = tmp_path / "characters"
    shutil.copytree(SAMPLES, folder)
    path = folder / "blacksmith.yaml"
    text, found = re.subn(r"(?m)^budget:\n(?:  .*\n)+", blacksmith_budget, path.read_text())
    assert found == 1, "the blacksmith sample has one budget: block"
    path.write_text(text)
    return folder


def priced_offline(tmp_path: Path) -> Path:
    """A prices file that gives the offline backend gpt-realtime's prices."""
    prices = tmp_path / "prices.yaml"
    prices.write_text(PRICES)
    return prices


async def say(game: Game, line: str) -> pb.ResponseDone:
    game.send(text=pb.TextMessage(text=line))
    done: pb.ResponseDone = await game.until("response_done")
    return done


async def refused(channel: grpc.aio.Channel, character: str) -> grpc.aio.AioRpcError:
    game = Game(channel, start(character))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await game.until("ready")
    return caught.value


async def test_a_spent_budget_refuses_the_npc_and_others_keep_talking(tmp_path: Path) -> None:
    folder = characters(tmp_path, "budget:\n  day_usd: 0.000001\n  on_exceeded: refuse\n")
    prices = priced_offline(tmp_path)
    context, running = await start_daemon(characters=folder, prices=prices)
    try:
        async with grpc.aio.insecure_channel(running.address.grpc_target) as channel:
            herbalist = Game(channel, start("herbalist"))
            await herbalist.until("ready")
            blacksmith = Game(channel, start("blacksmith"))
            await blacksmith.until("ready")
            done = await say(blacksmith, "what do you sell?")
            assert done.status == pb.RESPONSE_STATUS_COMPLETED, "the response is heard in full"
            assert done.usage.priced and done.usage.cost_usd > 0.000001
            error = await blacksmith.until("error")
            assert error.code == pb.ERROR_CODE_BUDGET_EXCEEDED and error.fatal
            assert "budget for today" in error.message and "day_usd" in error.message
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                await blacksmith.until("ready")  # the stream ends with its status
            assert ended.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

            again = await refused(channel, "blacksmith")
            assert again.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "resets at 00:00 UTC" in (again.details() or "")

            other = await say(herbalist, "hello")
            assert other.status == pb.RESPONSE_STATUS_COMPLETED and other.usage.priced
            assert other.transcript and not herbalist.of("error")
            herbalist.end()
    finally:
        await context.__aexit__(None, None, None)

    # The day's spend is on disk: a restarted daemon still refuses the blacksmith.
    context, running = await start_daemon(characters=folder, prices=prices)
    try:
        async with grpc.aio.insecure_channel(running.address.grpc_target) as channel:
            after = await refused(channel, "blacksmith")
            assert after.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        await context.__aexit__(None, None, None)


@pytest.fixture
async def paid(backend: LocalBackend) -> LocalBackend:
    """A Realtime server standing in for a paid one: npcd prices it as gpt-realtime."""
    return backend


def items_of(backend: LocalBackend, persona: str) -> list[str]:
    """The texts in the conversation of ``backend``'s live session for ``persona``."""
    sessions = [s.describe() for s in backend.live]
    [session] = [s for s in sessions if s["persona"] == persona]
    return [str(item["text"]) for item in session["items"]]


async def test_a_spent_session_budget_moves_the_npc_to_the_offline_backend_with_its_history(
    tmp_path: Path, paid: LocalBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NPCD_API_KEY", KEY)
    folder = characters(tmp_path, "budget:\n  session_usd: 0.0001\n  on_exceeded: local\n")
    url = "ws" + paid.base_url.removeprefix("http")
    context, running = await start_daemon(characters=folder, backend=url)
    try:
        async with grpc.aio.insecure_channel(running.address.grpc_target) as channel:
            game = Game(channel, start("blacksmith"))
            await game.until("ready")
            first = await say(game, "what do you sell?")
            assert first.usage.priced and first.usage.cost_usd > 0.0001  # gpt-realtime prices
            notice = await game.until("error")
            assert notice.code == pb.ERROR_CODE_BUDGET_EXCEEDED and not notice.fatal
            assert "offline backend" in notice.message
            status = await game.until("session_status")
            assert status.state == pb.SESSION_STATE_ROTATED and status.context_kept
            assert "offline backend" in status.detail

            second = await say(game, "who are you?")
            assert second.status == pb.RESPONSE_STATUS_COMPLETED and second.transcript
            assert second.usage.priced and second.usage.cost_usd == 0  # the offline one is free
            assert running.fallback is not None and running.fallback.local is not None
            given = " ".join(items_of(running.fallback.local, "blacksmith"))
            assert first.transcript in given, "the offline session was given the conversation"
            game.end()
            async with asyncio.timeout(TIMEOUT):
                while await game.call.read() is not grpc.aio.EOF:
                    pass

            # A new conversation has a fresh session budget: back on the paid backend (where
            # one answer spends it again).
            game = Game(channel, start("blacksmith"))
            await game.until("ready")
            assert any(s.describe()["persona"] == "blacksmith" for s in paid.live)
            back = await say(game, "what do you sell?")
            assert back.usage.cost_usd > 0.0001, "priced as gpt-realtime again"
            assert (await game.until("error")).code == pb.ERROR_CODE_BUDGET_EXCEEDED
            game.end()
    finally:
        await context.__aexit__(None, None, None)


async def test_a_response_cut_by_the_player_leaving_is_still_charged(tmp_path: Path) -> None:
    folder = characters(tmp_path, "budget:\n  day_usd: 0.000001\n  on_exceeded: refuse\n")
    prices = priced_offline(tmp_path)
    context, running = await start_daemon(characters=folder, prices=prices)
    try:
        assert running.governor is not None
        ledger = running.governor.ledger
        async with grpc.aio.insecure_channel(running.address.grpc_target) as channel:
            game = Game(channel, start("blacksmith"))
            await game.until("ready")
            game.send(text=pb.TextMessage(text="what do you sell?"))
            await game.until("response_started")
            game.end()  # the player walks away mid-answer: the backend still bills it
            async with asyncio.timeout(TIMEOUT):  # its response.done comes after the stream
                while ledger.spent_today("blacksmith") == 0:
                    await running.governor.charged()
            late = await refused(channel, "blacksmith")
            assert late.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        await context.__aexit__(None, None, None)


async def test_on_the_offline_backend_already_a_spent_budget_only_says_so(tmp_path: Path) -> None:
    folder = characters(tmp_path, "budget:\n  session_usd: 0.000001\n  on_exceeded: local\n")
    prices = priced_offline(tmp_path)
    context, running = await start_daemon(characters=folder, prices=prices)
    try:
        async with grpc.aio.insecure_channel(running.address.grpc_target) as channel:
            game = Game(channel, start("blacksmith"))
            await game.until("ready")
            await say(game, "what do you sell?")
            notice = await game.until("error")
            assert notice.code == pb.ERROR_CODE_BUDGET_EXCEEDED and not notice.fatal
            assert "on the offline backend and goes on" in notice.message
            again = await say(game, "who are you?")
            assert again.status == pb.RESPONSE_STATUS_COMPLETED and again.transcript
            game.end()
    finally:
        await context.__aexit__(None, None, None)
