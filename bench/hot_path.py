"""npcd's own Python work per audio frame, without sockets: what the relay adds on top of gRPC
and WebSocket.

Run: python bench/hot_path.py [--frames N]. Upstream is `Conversation.handle` of a 20 ms PCM16
24 kHz chunk up to the append event queued for the WebSocket; downstream is an audio delta's JSON
through `RealtimeSession.receive`, the conversation and the outbox up to the message handed to
gRPC. The link is a stub that takes frames and does nothing, so only npcd's code is timed.
Medians over 5 repeats; results also go to bench/results/hot_path.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from npcd import audio  # noqa: E402
from npcd.config import Secret  # noqa: E402
from npcd.personas import load_directory  # noqa: E402
from npcd.realtime.endpoints import Backend, Provider  # noqa: E402
from npcd.server.conversation import Conversation  # noqa: E402
from npcd.slot import NpcSlot, SlotOptions, SlotState  # noqa: E402
from npcd.v1 import npcd_pb2 as pb  # noqa: E402

CREATED = (
    '{"type":"response.created","event_id":"e","response":{"id":"resp_1",'
    '"object":"realtime.response","status":"in_progress","output":[]}}'
)
DELTA = (
    b'{"type":"response.output_audio.delta","event_id":"e","response_id":"resp_1",'
    b'"item_id":"item_1","output_index":0,"content_index":0,"delta":"'
    + audio.b64encode(bytes(960)).encode()
    + b'"}'
)


class _NullLink:
    async def send(self, frame: str | bytes) -> None:
        return None


def _conversation() -> Conversation:
    persona = load_directory(ROOT / "characters").personas["blacksmith"]
    backend = Backend(Provider.COMPATIBLE, "ws://127.0.0.1:9/v1", api_key=Secret("sk-bench"))
    slot = NpcSlot(persona, SlotOptions(backend))
    slot._link = _NullLink()  # type: ignore[assignment]  # a link that sends nowhere
    slot.state = SlotState.READY
    conversation = Conversation(slot, pb.Start(character_id="blacksmith"))
    slot.listener = conversation
    return conversation


async def _upstream(conversation: Conversation, frames: int) -> float:
    request = pb.ConverseRequest(audio=pb.AudioChunk(data=bytes(960)))
    began = time.perf_counter()
    for _ in range(frames):
        await conversation.handle(request)
    return (time.perf_counter() - began) / frames * 1e6


async def _downstream(conversation: Conversation, frames: int) -> float:
    """What the slot's reader task and the servicer do with one delta (see slot._pump)."""
    slot, session = conversation.slot, conversation.slot.session
    conversation.on_event(session.receive(CREATED))
    await conversation.next_message()  # response_started
    began = time.perf_counter()
    for _ in range(frames):
        event = session.receive(DELTA, 0.0)
        if session.has_outgoing:
            await slot.flush()
        conversation.on_event(event)
        message = await conversation.next_message()
        assert message is not None
        conversation.note_sent(message)
    return (time.perf_counter() - began) / frames * 1e6


def main(frames: int) -> dict[str, float]:
    ups, downs = [], []
    for _ in range(5):
        ups.append(asyncio.run(_upstream(_conversation(), frames)))
        downs.append(asyncio.run(_downstream(_conversation(), frames)))
    return {"upstream_us": statistics.median(ups), "downstream_us": statistics.median(downs)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--frames", type=int, default=20_000)
    result = main(parser.parse_args().frames)
    print(
        f"npcd's own work per 20 ms frame: upstream {result['upstream_us']:.1f} us, "
        f"downstream {result['downstream_us']:.1f} us, "
        f"round trip {result['upstream_us'] + result['downstream_us']:.1f} us"
    )
    out = ROOT / "bench/results/hot_path.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
