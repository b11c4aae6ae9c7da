"""`npcd test`: run persona test files against a real npcd, over gRPC, as a game would.

Each test is one `Converse` stream with the character (capabilities transcripts and actions):
each step sends a typed line or a trigger, reads the NPC's answer to the end (answering any
action it asks for with ok, then reading what it says after), and checks the expectations.
The daemon runs in this process on the local backend by default, so tests are offline and
deterministic; `--backend openai` (or any other) runs them against a real model.
"""

from __future__ import annotations

import asyncio
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import orjson

from npcd.config import Settings, parse_listen
from npcd.personatests.spec import Case, Expect, Step, Suite
from npcd.server.app import RunningServer, serving, wait_for_npcs
from npcd.v1 import npcd_pb2 as pb
from npcd.v1 import npcd_pb2_grpc as pb_grpc

__all__ = ["CaseResult", "run_suites", "write_junit"]

STEP_TIMEOUT_S = 60.0


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
        output_modalities=[pb.MODALITY_TEXT],
        capabilities=pb.Capabilities(transcripts=True, actions=True),
    )
    requests.put_nowait(pb.ConverseRequest(start=start))

    async def feed() -> AsyncIterator[pb.ConverseRequest]:
        while (request := await requests.get()) is not None:
            yield request

    async with grpc.aio.insecure_channel(running.address.grpc_target) as channel:
        call = pb_grpc.NpcServiceStub(channel).Converse(feed())
        try:
            await _next(call, "ready")
            for step in case.steps:
                reply, actions = await _step(call, requests, step)
                result.replies.append(reply)
                result.failures.extend(check(step, reply, actions))
        except (grpc.aio.AioRpcError, TimeoutError, RuntimeError) as exc:
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
) -> tuple[str, list[tuple[str, dict[str, Any]]]]:
    if step.say is not None:
        requests.put_nowait(pb.ConverseRequest(text=pb.TextMessage(text=step.say)))
    else:
        trigger = pb.Trigger(name=step.trigger or "", params=step.params)
        requests.put_nowait(pb.ConverseRequest(trigger=trigger))
    said: list[str] = []
    actions: list[tuple[str, dict[str, Any]]] = []
    pending = 1  # responses still to read: one, and one more after each action answered
    async with asyncio.timeout(STEP_TIMEOUT_S):
        while pending:
            message = await call.read()
            if message is grpc.aio.EOF:
                raise RuntimeError("the stream ended mid-step")
            kind = message.WhichOneof("kind")
            if kind == "action_request":
                request = message.action_request
                actions.append((request.name, orjson.loads(request.arguments_json or "{}")))
                answer = pb.ActionResult(call_id=request.call_id, ok=True, result_json='"done"')
                requests.put_nowait(pb.ConverseRequest(action_result=answer))
                pending += 1
            elif kind == "response_done":
                if message.response_done.transcript:
                    said.append(message.response_done.transcript)
                pending -= 1
    return " ".join(said), actions


def check(
    step: Step, reply: str, actions: list[tuple[str, dict[str, Any]]]
) -> list[tuple[str, str]]:
    """The failed expectations of ``step`` for what the NPC said and did."""
    expect: Expect = step.expect
    failures: list[tuple[str, str]] = []
    lowered = reply.lower()
    quoted = f"{reply!r}"
    for text in expect.contains:
        if text.lower() not in lowered:
            failures.append((expect.where["contains"], f"expected {text!r} in {quoted}"))
    for text in expect.not_contains:
        if text.lower() in lowered:
            failures.append((expect.where["not_contains"], f"{text!r} must not be said: {quoted}"))
    if expect.matches is not None and not expect.matches.search(reply):
        failures.append(
            (expect.where["matches"], f"{quoted} does not match {expect.matches.pattern!r}")
        )
    if expect.similar_to is not None:
        score = similarity(reply, expect.similar_to)
        if score < expect.similar_min:
            failures.append(
                (
                    expect.where["similar"],
                    f"{quoted} is {score:.2f} similar to {expect.similar_to!r}, "
                    f"wanted {expect.similar_min:.2f}",
                )
            )
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
