"""A real grpc.aio server on loopback: characters, health, reflection, Unix sockets."""

from __future__ import annotations

import json
import os
import socket
import stat
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from npcd.config import Settings, parse_listen
from npcd.errors import StartupError
from npcd.server.app import RunningServer, serving
from npcd.v1 import npcd_pb2 as pb
from npcd.v1 import npcd_pb2_grpc as pb_grpc
from tests.conftest import SAMPLES


@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    settings = Settings(listen=parse_listen("127.0.0.1:0"), characters=SAMPLES)
    async with serving(settings) as running:
        yield running


@pytest.fixture
async def channel(server: RunningServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(server.address.grpc_target) as channel:
        yield channel


async def test_list_characters(channel: grpc.aio.Channel) -> None:
    reply = await pb_grpc.NpcServiceStub(channel).ListCharacters(pb.ListCharactersRequest())
    ids = [c.id for c in reply.characters]
    assert ids == sorted(ids) == ["blacksmith", "gate_guard", "herbalist", "innkeeper"]
    brom = reply.characters[0]
    assert (brom.display_name, brom.voice) == ("Brom Ironhand", "ash")
    assert [a.name for a in brom.actions] == ["sell_item", "repair_item"]
    schema = json.loads(brom.actions[0].parameters_json_schema)
    assert schema["required"] == ["item", "price_gold"]
    assert brom.actions[0].timeout_ms == 8000
    variables = {v.name: v.default_value for v in brom.variables}
    assert variables["player_name"] == "traveller"


async def test_get_character_and_not_found(channel: grpc.aio.Channel) -> None:
    stub = pb_grpc.NpcServiceStub(channel)
    guard = await stub.GetCharacter(pb.GetCharacterRequest(character_id="gate_guard"))
    assert guard.display_name == "Sergeant Tamsin Vale"
    assert "{player_name}" in guard.greeting
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetCharacter(pb.GetCharacterRequest(character_id="dragon"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no character 'dragon'" in (caught.value.details() or "")
    assert "blacksmith" in (caught.value.details() or ""), "the error lists what exists"


@pytest.mark.parametrize("service", ["", "npcd.v1.NpcService"])
async def test_health_reports_serving(channel: grpc.aio.Channel, service: str) -> None:
    reply = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=service)
    )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def reflect(
    channel: grpc.aio.Channel, **request: str
) -> reflection_pb2.ServerReflectionResponse:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(**request)]))
    async for reply in call:
        return reply
    raise AssertionError("no reflection reply")


async def test_reflection_lists_and_describes_the_service(channel: grpc.aio.Channel) -> None:
    """What `grpcurl -plaintext HOST list` and `grpcurl describe` do."""
    listed = await reflect(channel, list_services="")
    names = {s.name for s in listed.list_services_response.service}
    assert {"npcd.v1.NpcService", "grpc.health.v1.Health"} <= names
    described = await reflect(channel, file_containing_symbol="npcd.v1.NpcService")
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in described.file_descriptor_response.file_descriptor_proto
    ]
    service = next(s for f in files for s in f.service if s.name == "NpcService")
    methods = {m.name: (m.client_streaming, m.server_streaming) for m in service.method}
    assert methods["Converse"] == (True, True)
    assert methods["ListCharacters"] == (False, False)


async def test_second_server_on_the_same_port_is_refused(server: RunningServer) -> None:
    settings = Settings(listen=server.address, characters=SAMPLES)
    with pytest.raises(StartupError, match="in use"):
        async with serving(settings):
            pass


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    # Short path: sockaddr_un holds 107 bytes, and pytest's tmp_path can be long.
    with tempfile.TemporaryDirectory(prefix="npcd-", dir="/tmp") as folder:
        yield Path(folder)


async def test_unix_socket_is_private_and_removed(socket_dir: Path) -> None:
    path = socket_dir / "run" / "npcd.sock"
    settings = Settings(listen=parse_listen(f"unix://{path}"), characters=SAMPLES)
    async with serving(settings) as running:
        assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        async with grpc.aio.insecure_channel(running.address.grpc_target) as channel:
            reply = await pb_grpc.NpcServiceStub(channel).ListCharacters(pb.ListCharactersRequest())
        assert len(reply.characters) == 4
    assert not path.exists(), "socket file removed on shutdown"


async def test_stale_unix_socket_is_replaced(socket_dir: Path) -> None:
    path = socket_dir / "npcd.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens: what a crash leaves behind
    settings = Settings(listen=parse_listen(f"unix://{path}"), characters=SAMPLES)
    async with serving(settings):
        assert stat.S_ISSOCK(os.stat(path).st_mode)


async def test_live_unix_socket_is_not_stolen(socket_dir: Path) -> None:
    path = socket_dir / "npcd.sock"
    settings = Settings(listen=parse_listen(f"unix://{path}"), characters=SAMPLES)
    async with serving(settings):
        with pytest.raises(StartupError, match="another process is serving there"):
            async with serving(settings):
                pass


async def test_regular_file_in_the_way_is_refused(socket_dir: Path) -> None:
    path = socket_dir / "npcd.sock"
    path.write_text("not a socket")
    settings = Settings(listen=parse_listen(f"unix://{path}"), characters=SAMPLES)
    with pytest.raises(StartupError, match="not a socket"):
        async with serving(settings):
            pass
    assert path.read_text() == "not a socket", "npcd never deletes a file it did not make"
