"""Queue ids: short, sortable by time, unique within a queue database's life.

Public: new_queue_id(), queue_id_time().
Limits: 48 bits of milliseconds and 40 random bits; the database's UNIQUE constraint is the
final guard (a collision fails that one intake with a transient reply).
"""

from __future__ import annotations

import random

_ALPHABET = "0123456789BCDFGHJKLMNPQRSTVWXZ"  # no vowels: ids never spell words


def _encode(value: int, width: int) -> str:
    out = []
    for _ in range(width):
        value, digit = divmod(value, len(_ALPHABET))
        out.append(_ALPHABET[digit])
    return "".join(reversed(out))


def new_queue_id(now: float, rng: random.Random) -> str:
    """A queue id from the time of receipt and a random tail."""
    millis = int(now * 1000) & ((1 << 48) - 1)
    return _encode(millis, 10) + _encode(rng.getrandbits(40), 9)


def queue_id_time(queue_id: str) -> float | None:
    """The time of receipt a queue id records (to the millisecond); None if not such an id."""
    if len(queue_id) != 19 or not set(queue_id) <= set(_ALPHABET):
        return None
    millis = 0
    for char in queue_id[:10]:
        millis = millis * len(_ALPHABET) + _ALPHABET.index(char)
    return millis / 1000
