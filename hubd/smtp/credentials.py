"""Checking submission passwords off the event loop, in a bounded pool of threads.

Owns: running CheckCredentials actions: at most `workers` argon2 checks at once in threads
(argon2-cffi releases the GIL while it hashes), at most `max_waiting` more queued (past that:
AuthBusy at once, 454 4.7.0), and the delay before a failure is reported (it holds no
thread, so a flood of wrong passwords waits without stalling anyone).
Public: Credentials.
Failures: none raised but cancellation; a fault in a check is logged and reported AuthBusy.
See also: hubd/users.py (the file and its hashes), hubd/smtp/executor.py (the caller).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from hubd.smtp.actions import (
    AuthBusy,
    Authenticated,
    CheckCredentials,
    NotAuthenticated,
    Outcome,
)
from hubd.users import UsersFile

log = logging.getLogger(__name__)


class Credentials:
    """Password checks for every submission session of a process."""

    def __init__(self, users: UsersFile, *, workers: int = 2, max_waiting: int = 64) -> None:
        self._users = users
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="auth")
        self._slots = asyncio.Semaphore(workers + max_waiting)

    async def check(self, action: CheckCredentials) -> Outcome:
        """Authenticated, NotAuthenticated (after the action's delay), or AuthBusy."""
        if self._slots.locked():
            return AuthBusy()
        async with self._slots:
            loop = asyncio.get_running_loop()
            try:
                user = await loop.run_in_executor(
                    self._pool, self._users.verify, action.username, action.password
                )
            except Exception:
                log.exception("checking the password of %r failed", action.username)
                return AuthBusy()
        if user is None:
            await asyncio.sleep(action.failure_delay)
            return NotAuthenticated()
        return Authenticated(user.name, frozenset(user.addresses))

    def close(self) -> None:
        """Let the threads go (checks in flight finish first)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
