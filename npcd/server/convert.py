"""Domain objects -> protobuf messages (and back), so nothing past the servicer sees protobuf."""

from __future__ import annotations

import json

from npcd.personas.model import Persona
from npcd.v1 import npcd_pb2 as pb


def character_message(persona: Persona, *, ready: bool = False, busy: bool = False) -> pb.Character:
    """The game-facing view of a persona."""
    return pb.Character(
        id=persona.id,
        display_name=persona.name,
        description=persona.description,
        voice=persona.voice,
        greeting=persona.greeting,
        actions=[
            pb.Action(
                name=action.name,
                description=action.description,
                parameters_json_schema=json.dumps(action.parameters, sort_keys=True),
                timeout_ms=action.timeout_ms,
            )
            for action in persona.actions
        ],
        variables=[
            pb.Variable(name=name, description=var.description, default_value=var.default)
            for name, var in sorted(persona.variables.items())
        ],
        ready=ready,
        busy=busy,
    )
