"""npcd's error tree, and the one table that maps each error to a gRPC status.

    NpcdError
    ├── InvalidRequest      INVALID_ARGUMENT    a client message is malformed (says which field)
    ├── UnknownCharacter    NOT_FOUND           no persona has that id
    ├── NpcBusy             FAILED_PRECONDITION the NPC is talking to someone else
    ├── Overloaded          RESOURCE_EXHAUSTED  too many conversations, or a client too slow
    ├── BackendUnavailable  UNAVAILABLE         the Realtime backend cannot be reached now
    ├── BackendRejected     UNAUTHENTICATED     the backend refused npcd's credentials
    └── StartupError        (exit code 2)       npcd cannot start: port taken, bad persona dir

The status is kept as a name so this module stays free of grpc; the servicer looks it up. A
message here goes to game developers verbatim: no secrets, no player content.
"""

from __future__ import annotations


class NpcdError(Exception):
    """Base of every error npcd reports on purpose."""

    status = "INTERNAL"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidRequest(NpcdError):
    status = "INVALID_ARGUMENT"


class UnknownCharacter(NpcdError):
    status = "NOT_FOUND"


class NpcBusy(NpcdError):
    status = "FAILED_PRECONDITION"


class Overloaded(NpcdError):
    status = "RESOURCE_EXHAUSTED"


class BackendUnavailable(NpcdError):
    status = "UNAVAILABLE"


class BackendRejected(NpcdError):
    status = "UNAUTHENTICATED"


class StartupError(NpcdError):
    """The daemon cannot start; the CLI prints the message and exits with code 2."""
