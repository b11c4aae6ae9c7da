"""The pool-wide backend gate: one prober while the backend is down, everyone on its return."""

from __future__ import annotations

import asyncio

from npcd.reachability import Reachability


async def test_one_prober_retries_while_the_others_wait_for_a_success() -> None:
    reach = Reachability()
    prober, waiter = object(), object()
    reach.failed(prober, "refused")
    reach.failed(waiter, "refused")
    assert reach.down and reach.probing(prober) and not reach.probing(waiter)
    waiting = asyncio.create_task(reach.wait_turn(waiter, delay=0.0, patience=60.0))
    await asyncio.wait_for(reach.wait_turn(prober, delay=0.0, patience=60.0), 1.0)
    assert not waiting.done(), "a non-prober does not retry on its own"
    reach.succeeded(prober)
    await asyncio.wait_for(waiting, 1.0)
    assert not reach.down and reach.reason == ""


async def test_a_waiter_takes_over_when_the_prober_leaves() -> None:
    reach = Reachability()
    prober, waiter = object(), object()
    reach.failed(prober, "refused")
    reach.failed(waiter, "refused")
    reach.leave(prober)
    await asyncio.wait_for(reach.wait_turn(waiter, delay=0.0, patience=0.01), 1.0)
    assert reach.probing(waiter)


async def test_a_failure_of_ones_own_while_the_backend_is_up_is_not_a_shared_wait() -> None:
    reach = Reachability()
    alone = object()
    reach.failed(alone, "refused")
    reach.succeeded(object())  # another slot got through meanwhile
    await asyncio.wait_for(reach.wait_turn(alone, delay=0.0, patience=60.0), 1.0)


async def test_when_nobody_is_left_trying_the_backend_is_no_longer_taken_for_down() -> None:
    reach = Reachability()
    only = object()
    reach.failed(only, "refused")
    flipped = asyncio.create_task(reach.changed())
    await asyncio.sleep(0)
    reach.leave(only)  # suspended, closed, or failed for good
    await asyncio.wait_for(flipped, 1.0)
    assert not reach.down
