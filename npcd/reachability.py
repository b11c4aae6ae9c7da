"""Whether the Realtime backend answers, shared by every NPC slot of a pool.

When the backend goes down, every NPC loses its session at once. If each retried on its own
backoff, 500 NPCs would hammer a server that is failing, and a long backoff (to spare it) would
leave players waiting long after it is back. Instead one slot, the *prober*, retries on a short
capped backoff (every 2 s at most) while the others wait; the moment any connect gets through,
all waiters go at once (the pool's connect semaphore paces them). So recovery takes one
probe interval, and a dead backend sees one attempt per interval, not one per NPC.
"""

from __future__ import annotations

import asyncio
import contextlib


class Reachability:
    """The backend's state as the slots last saw it: up, or down with a reason."""

    def __init__(self) -> None:
        self.reason = ""
        self._up = asyncio.Event()
        self._up.set()
        self._prober: object | None = None
        #: Slots whose latest attempt failed and that are still trying.
        self._trying: set[object] = set()
        self._flipped = asyncio.Event()

    @property
    def down(self) -> bool:
        return not self._up.is_set()

    async def changed(self) -> None:
        """Wait until the backend next goes down or comes back (health follows it)."""
        await self._flipped.wait()

    def _flip(self) -> None:
        self._flipped.set()
        self._flipped = asyncio.Event()

    def failed(self, who: object, reason: str) -> None:
        """``who`` could not connect (a retryable failure): the backend is down until a connect
        succeeds. The first to fail while nobody probes becomes the prober."""
        self.reason = reason
        self._trying.add(who)
        if not self.down:
            self._up.clear()
            self._flip()
        if self._prober is None:
            self._prober = who

    def succeeded(self, who: object) -> None:
        """A connect got through: the backend is up, and every waiter may try now."""
        self.reason = ""
        self._prober = None
        self._trying.clear()
        if self.down:
            self._up.set()
            self._flip()

    def probing(self, who: object) -> bool:
        """Whether ``who`` is the one probing a down backend."""
        return self.down and self._prober is who

    def leave(self, who: object) -> None:
        """``who`` stops trying (suspended, closed, failed for good): another slot may probe.
        When nobody is left trying, nothing is known any more: the next slot to start tries
        at once, and health does not stay NOT_SERVING for a backend nobody tests."""
        self._trying.discard(who)
        if self._prober is who:
            self._prober = None
        if self.down and not self._trying:
            self.reason = ""
            self._up.set()
            self._flip()

    async def wait_turn(self, who: object, delay: float, patience: float) -> None:
        """Wait before ``who``'s next connect attempt.

        The prober (or a slot whose failure was its own: the backend is up for the others)
        waits ``delay``; the others wait until a connect gets through, checking every
        ``patience`` seconds whether the prober has left so that one of them takes over.
        """
        while True:
            if self._prober is None and self.down:
                self._prober = who
            if self._prober is who or not self.down:
                await asyncio.sleep(delay)
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(patience):
                    await self._up.wait()
                    return
