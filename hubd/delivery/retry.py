"""Retry schedule and expiry for deferred recipients.

Owns: when a deferred recipient is tried next, and when it expires.  Not: running attempts.
Public: next_attempt(), RetryPolicy, EXPIRED.
Failures: none raised; returns EXPIRED when the message's lifetime has passed.
Limits: the schedule is per recipient, counted from its attempts; after the last interval
the last one repeats.
See also: delivery/scheduler.py, RFC 5321 section 4.5.4.1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    intervals: Sequence[float]  # seconds after each failed attempt, in order
    expiry: float  # seconds from receipt

    def __post_init__(self) -> None:
        if not self.intervals:
            raise ValueError("a retry policy needs at least one interval")


EXPIRED: Final = "expired"


def next_attempt(
    policy: RetryPolicy, *, received_at: float, attempts: int, now: float
) -> float | Literal["expired"]:
    """When to try again after `attempts` failed attempts, or EXPIRED when past the expiry."""
    deadline = received_at + policy.expiry
    if now >= deadline:
        return EXPIRED
    index = min(max(attempts, 1), len(policy.intervals)) - 1
    # The last try lands on the deadline itself, so expiry is decided by an attempt.
    return min(now + policy.intervals[index], deadline)
