"""`npcd test`: run persona test files against a real npcd, over gRPC, as a game would.

Each test is one `Converse` stream with the character (capabilities transcripts, actions and VAD
events): each step sends a typed line, a trigger or a recording, reads the NPC's answer to the
end (answering any action it asks for with ok, then reading what it says after), and checks the
expectations. A recording is streamed as a microphone would (20 ms chunks in real time, then
silence until the server VAD ends the player's turn), in the one input format every test
declares, PCM16 mono 24 kHz, to which `spec` already converted it.
The daemon runs in this process on the local backend by default, so tests are offline and
deterministic; `--backend openai` (or any other) runs them against a real model.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import orjson

from npcd import audio
from npcd.config import Settings, parse_listen
from npcd.personatests.spec import Case, Expect, Recording, Step, Suite
from npcd.server.app import RunningServer, serving, wait_for_npcs
from npcd.v1 import npcd_pb2 as pb
from npcd.v1 import npcd_pb2_grpc as pb_grpc

__all__ = ["CaseResult", "run_suites", "write_junit"]

STEP_TIMEOUT_S = 60.0
CHUNK_MS = 20
#: Silence after a recording, so the server VAD hears the player stop (then more, as needed).
TRAILING_SILENCE_MS = 1500
_INPUT = pb.AudioFormat(
    encoding=pb.AUDIO_ENCODING_PCM16,
    sample_rate_hz=audio.REALTIME_FORMAT.sample_rate,
    channels=audio.REALTIME_FORMAT.channels,
)

Actions = list[tuple[str, dict[str, Any]]]


class _StepFailed(Exception):
    """A step that cannot go on (the conversation is then left): ``where`` is its file:line."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(message)
        self.where = where
        self.message = message


@dataclass(slots=True)
class _Heard:
    """What a step's answer was: the NPC's words and actions, and the player's heard words."""

    said: list[str] = field(default_factory=list)
    actions: Actions = field(default_factory=list)
    #: Final transcripts by utterance, for the utterances this step's speech began.
    player: dict[str, str | None] = field(default_factory=dict)


@dataclass(slots=True)
class CaseResult:
    suite: Suite
    case: Case
    seconds: float = 0.0
    #: (file:line, message) of each expectation that failed.
    failures: list[tuple[str, str]] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


async def run_suites(
    suites: Sequence[Suite], characters: Path, backend: str = "local"
) -> list[CaseResult]:
    settings = Settings(
        listen=parse_listen("127.0.0.1:0"),
        characters=characters,
        backend=backend,
        reload_interval_s=0,
        memory=False,
    )
    results: list[CaseResult] = []
    async with serving(settings, with_backend=True) as running:
        await wait_for_npcs(running)
        for suite in suites:
            for case in suite.cases:
                results.append(await _run_case(running, suite, case))
    return results


async def _run_case(running: RunningServer, suite: Suite, case: Case) -> CaseResult:
    result = CaseResult(suite, case)
    began = time.perf_counter()
    requests: asyncio.Queue[pb.ConverseRequest | None] = asyncio.Queue()
    start = pb.Start(
        character_id=suite.character,
        player=pb.Player(name=case.player),
        context=case.context,
        input_format=_INPUT,
        output_modalities=[pb.MODALITY_TEXT],
        capabilities=pb.Capabilities(transcripts=True, actions=True, vad_events=True),
        # Cases run one after another: the NPC may still be closing the last one's stream.
        busy_policy=pb.BUSY_POLICY_WAIT,
    )
    requests.put_nowait(pb.ConverseRequest(start=start))

    async def feed() -> AsyncIterator[pb.ConverseRequest]:
        while (request := await requests.get()) is not None:
            yield request

    async with grpc.aio.insecure_channel(running.address.grpc_target) as channel:
        call = pb_grpc.NpcServiceStub(channel).Converse(feed())
        where = case.where
        try:
            await _next(call, "ready")
            for step in case.steps:
                where = step.where
                if step.wav is None:
                    async with asyncio.timeout(STEP_TIMEOUT_S):
                        heard = await _step(call, requests, step)
                else:  # the answer can only start once the recording has been said
                    async with asyncio.timeout(STEP_TIMEOUT_S + step.wav.seconds):
                        heard = await _speak(call, requests, step, step.wav)
                reply = " ".join(heard.said)
                result.replies.append(reply)
                spoken = " ".join(t for t in heard.player.values() if t)
                result.failures.extend(check(step, reply, heard.actions, spoken))
        except _StepFailed as exc:
            result.failures.append((exc.where, exc.message))
        except TimeoutError:
            result.failures.append((where, f"no answer within {STEP_TIMEOUT_S:.0f} s"))
        except (grpc.aio.AioRpcError, RuntimeError) as exc:
            detail = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else str(exc)
            result.failures.append((case.where, f"the conversation failed: {detail}"))
        finally:
            requests.put_nowait(None)
    result.seconds = time.perf_counter() - began
    return result


async def _next(call: Any, kind: str) -> Any:
    async with asyncio.timeout(STEP_TIMEOUT_S):
        while True:
            message = await call.read()
            if message is grpc.aio.EOF:
                raise RuntimeError(f"the stream ended before {kind}")
            if message.WhichOneof("kind") == kind:
                return getattr(message, kind)


async def _step(
    call: Any, requests: asyncio.Queue[pb.ConverseRequest | None], step: Step
) -> _Heard:
    if step.say is not None:
        requests.put_nowait(pb.ConverseRequest(text=pb.TextMessage(text=step.say)))
    else:
        trigger = pb.Trigger(name=step.trigger or "", params=step.params)
        requests.put_nowait(pb.ConverseRequest(trigger=trigger))
    heard = _Heard()
    await _answer(call, requests, heard)
    return heard


async def _speak(
    call: Any, requests: asyncio.Queue[pb.ConverseRequest | None], step: Step, wav: Recording
) -> _Heard:
    """Stream the recording, then silence until the NPC has answered; the answer must come
    after the whole recording, or a pause in it ended the player's turn too soon."""
    heard = _Heard()
    sent = asyncio.Event()
    streaming = asyncio.create_task(_stream(requests, wav.pcm, sent))
    try:
        await _answer(call, requests, heard)
    finally:
        streaming.cancel()
    if not sent.is_set():
        raise _StepFailed(
            step.where,
            f"the NPC answered before the end of {wav.path.name} ({wav.seconds:.1f} s): "
            "a pause in it ended the player's turn",
        )
    if step.expect.heard is not None:  # transcription may finish after the answer
        while any(text is None for text in heard.player.values()):
            _note(await _read(call), heard)
    return heard


async def _stream(
    requests: asyncio.Queue[pb.ConverseRequest | None], pcm: bytes, sent: asyncio.Event
) -> None:
    """Send ``pcm`` in 20 ms chunks paced on an absolute schedule, as a microphone delivers
    them (sleeping per chunk would drift late), then silence until cancelled."""
    chunk = audio.REALTIME_FORMAT.bytes_for_ms(CHUNK_MS)
    data = pcm + bytes(audio.REALTIME_FORMAT.bytes_for_ms(TRAILING_SILENCE_MS))
    loop = asyncio.get_running_loop()
    began = loop.time()
    for n in itertools.count():
        offset = n * chunk
        if offset >= len(pcm):
            sent.set()
        piece = data[offset : offset + chunk] if offset < len(data) else bytes(chunk)
        requests.put_nowait(pb.ConverseRequest(audio=pb.AudioChunk(data=piece)))
        await asyncio.sleep(max(0.0, began + (n + 1) * CHUNK_MS / 1000 - loop.time()))


async def _answer(
    call: Any, requests: asyncio.Queue[pb.ConverseRequest | None], heard: _Heard
) -> None:
    """Read the NPC's answer to its end, answering each action with ok and reading on."""
    pending = 1  # responses still to read: one, and one more after each action answered
    while pending:
        message = await _read(call)
        kind = message.WhichOneof("kind")
        if kind == "action_request":
            request = message.action_request
            heard.actions.append((request.name, orjson.loads(request.arguments_json or "{}")))
            answer = pb.ActionResult(call_id=request.call_id, ok=True, result_json='"done"')
            requests.put_nowait(pb.ConverseRequest(action_result=answer))
            pending += 1
        elif kind == "response_done":
            if message.response_done.transcript:
                heard.said.append(message.response_done.transcript)
            pending -= 1
        else:
            _note(message, heard)


async def _read(call: Any) -> Any:
    message = await call.read()
    if message is grpc.aio.EOF:
        raise RuntimeError("the stream ended mid-step")
    return message


def _note(message: Any, heard: _Heard) -> None:
    """Keep the player's words, only for utterances that began in this step."""
    kind = message.WhichOneof("kind")
    if kind == "speech_started":
        heard.player.setdefault(message.speech_started.utterance_id, None)
    elif kind == "player_transcript" and message.player_transcript.is_final:
        transcript = message.player_transcript
        if transcript.utterance_id in heard.player:
            heard.player[transcript.utterance_id] = transcript.text


def check(step: Step, reply: str, actions: Actions, heard: str = "") -> list[tuple[str, str]]:
    """The failed expectations of ``step`` for what the NPC said and did, and for what the
    player was ``heard`` saying."""
    expect: Expect = step.expect
    failures = _text_failures(expect.heard, heard, f"heard {heard!r}") if expect.heard else []
    failures.extend(_text_failures(expect, reply, f"{reply!r}"))
    if expect.action is not None:
        called = [args for name, args in actions if name == expect.action]
        wanted = expect.action_arguments
        if not any(all(args.get(k) == v for k, v in wanted.items()) for args in called):
            seen = ", ".join(f"{n} {orjson.dumps(a).decode()}" for n, a in actions) or "none"
            failures.append(
                (expect.where["action"], f"expected action {expect.action} {wanted}; got {seen}")
            )
    if expect.no_action and actions:
        names = ", ".join(name for name, _ in actions)
        failures.append((expect.where["no_action"], f"expected no action; got {names}"))
    return failures


def _text_failures(expect: Expect, said: str, quoted: str) -> list[tuple[str, str]]:
    failures: list[tuple[str, str]] = []
    lowered = said.lower()
    for text in expect.contains:
        if text.lower() not in lowered:
            failures.append((expect.where["contains"], f"expected {text!r} in {quoted}"))
    for text in expect.not_contains:
        if text.lower() in lowered:
            failures.append((expect.where["not_contains"], f"{text!r} must not be said: {quoted}"))
    if expect.matches is not None and not expect.matches.search(said):
        failures.append(
            (expect.where["matches"], f"{quoted} does not match {expect.matches.pattern!r}")
        )
    if expect.similar_to is not None:
        score = similarity(said, expect.similar_to)
        if score < expect.similar_min:
            failures.append(
                (
                    expect.where["similar"],
                    f"{quoted} is {score:.2f} similar to {expect.similar_to!r}, "
                    f"wanted {expect.similar_min:.2f}",
                )
            )
    return failures


def similarity(a: str, b: str) -> float:
    """Cosine similarity of the two texts' MiniLM embeddings (the `local` extra)."""
    from npcd.localbackend.engines.intents import shared_embedder

    vectors = shared_embedder().embed([a, b])
    return float(vectors[0] @ vectors[1])


def write_junit(results: Sequence[CaseResult], target: Path) -> None:
    """JUnit XML, one <testsuite> per file, one <testcase> per test, for CI."""
    root = ET.Element("testsuites", name="npcd persona tests")
    by_file: dict[Path, list[CaseResult]] = {}
    for result in results:
        by_file.setdefault(result.suite.file, []).append(result)
    for file, cases in by_file.items():
        suite = ET.SubElement(
            root,
            "testsuite",
            name=str(file),
            tests=str(len(cases)),
            failures=str(sum(1 for c in cases if not c.passed)),
            time=f"{sum(c.seconds for c in cases):.3f}",
        )
        for result in cases:
            case = ET.SubElement(
                suite,
                "testcase",
                classname=result.suite.character,
                name=result.case.name,
                file=str(file),
                line=result.case.where.rsplit(":", 1)[-1],
                time=f"{result.seconds:.3f}",
            )
            for where, message in result.failures:
                failure = ET.SubElement(case, "failure", message=f"{where}: {message}")
                failure.text = f"{where}: {message}"
    target.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(target, encoding="utf-8", xml_declaration=True)


def report(results: Sequence[CaseResult]) -> str:
    """What a terminal shows: one line per test, each failure under it with its file:line."""
    lines = []
    for result in results:
        mark = "ok  " if result.passed else "FAIL"
        lines.append(
            f"{mark} {result.suite.character}: {result.case.name} ({result.seconds:.2f} s)"
        )
        lines.extend(f"     {where}: {message}" for where, message in result.failures)
    failed = sum(1 for r in results if not r.passed)
    lines.append(f"{len(results) - failed} passed, {failed} failed")
    return "\n".join(lines)
