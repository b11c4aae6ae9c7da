"""Persona files: the YAML format character writers use to define NPCs.

`model` holds the typed, bounded persona; `loader` reads files (with `extends:`) into it and
reports every problem with file, line and field; `template` fills ``{variables}``; `prompt`
turns a persona plus game context into the instructions a Realtime session gets.
"""

from npcd.personas.loader import (
    Catalog,
    LoadedPersona,
    PersonaError,
    PersonaIssue,
    load_directory,
    load_files,
    load_persona,
)
from npcd.personas.model import Action, Persona, persona_json_schema

__all__ = [
    "Action",
    "Catalog",
    "LoadedPersona",
    "Persona",
    "PersonaError",
    "PersonaIssue",
    "load_directory",
    "load_files",
    "load_persona",
    "persona_json_schema",
]
