"""Waiting for a condition with a deadline: polling with a growing pause, never a bare sleep.

Owns: wait_until() for threads and plain code, async_wait_until() inside an event loop.
Public: wait_until(), async_wait_until().
Failures: TimeoutError naming what was awaited, once the deadline has passed.
Limits: polling, so a condition is seen up to 200 ms after it holds; wait on an event where
there is one.
See also: hubd/testing (re-exports both for tests), hubd/bench (waits for its children).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, overload

T = TypeVar("T")


def wait_until(predicate: Callable[[], T | None], timeout: float, what: str = "condition") -> T:
    """Poll `predicate` until it returns something truthy; raise TimeoutError after `timeout`."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


@overload
async def async_wait_until(
    predicate: Callable[[], Awaitable[T]], within: float, what: str = "condition"
) -> T: ...


@overload
async def async_wait_until(
    predicate: Callable[[], T], within: float, what: str = "condition"
) -> T: ...


async def async_wait_until(
    predicate: Callable[[], T | Awaitable[T]], within: float, what: str = "condition"
) -> T:
    """Like wait_until(), inside an event loop; the predicate may be a coroutine function."""
    deadline = time.monotonic() + within
    delay = 0.01
    while True:
        value = predicate()
        if isinstance(value, Awaitable):
            value = await value
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.2)
