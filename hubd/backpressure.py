"""Back pressure: resource levels Normal / Medium / High, and what each level refuses.

Owns: turning measured values (free disk, memory, bytes in flight, queued recipients) into
a level per resource with hysteresis, the node's level (the worst of them), the changes
worth logging, and which senders a level admits.
Public: Level, Thresholds, Change, Levels, next_level(), admits().
Limits: pure logic over plain values; measuring is hubd/pressure.py's job.
See also: docs/design.md (Back pressure), hubd/smtp/session.py (refuses at MAIL and RCPT),
Exchange's back pressure (events 15004/15005), which this follows.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass


class Level(enum.IntEnum):
    NORMAL = 0
    MEDIUM = 1
    HIGH = 2

    def __str__(self) -> str:
        return self.name.title()


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Where a resource turns Medium and High; 0 turns that check off.

    `falling`: lower values are worse (free disk space); otherwise higher ones are.
    """

    medium: int
    high: int
    falling: bool = False

    def reached(self, value: int, threshold: int, relax: float) -> bool:
        """Whether `value` is at or past `threshold`, moved by the fraction `relax` towards
        the safe side (so a level once reached holds until the value is clearly back)."""
        if not threshold:
            return False
        if self.falling:
            return value <= threshold * (1 + relax)
        return value >= threshold * (1 - relax)


def _level_at(value: int, thresholds: Thresholds, relax: float) -> Level:
    if thresholds.reached(value, thresholds.high, relax):
        return Level.HIGH
    if thresholds.reached(value, thresholds.medium, relax):
        return Level.MEDIUM
    return Level.NORMAL


def next_level(current: Level, value: int, thresholds: Thresholds, hysteresis: float) -> Level:
    """The level of a resource after a new reading: up as soon as a threshold is reached,
    down only once the value is `hysteresis` (a fraction) past it on the safe side."""
    raw = _level_at(value, thresholds, 0.0)
    if raw >= current:
        return raw
    return min(current, _level_at(value, thresholds, hysteresis))


def admits(level: Level, *, privileged: bool) -> bool:
    """Whether new mail is taken at `level`: from anyone at Normal, only from privileged
    senders (trusted networks, authenticated users, shadow peers) at Medium, none at High."""
    if level is Level.NORMAL:
        return True
    return level is Level.MEDIUM and privileged


@dataclass(frozen=True, slots=True)
class Change:
    """One resource moved from one level to another, and the reading that moved it."""

    resource: str
    old: Level
    new: Level
    value: int
    thresholds: Thresholds


class Levels:
    """The level of each watched resource, fed readings; the node's level is the worst."""

    def __init__(self, thresholds: Mapping[str, Thresholds], hysteresis: float) -> None:
        self._thresholds = {k: t for k, t in thresholds.items() if t.medium or t.high}
        self._hysteresis = hysteresis
        self._levels = dict.fromkeys(self._thresholds, Level.NORMAL)

    @property
    def watched(self) -> frozenset[str]:
        """The resources with at least one check on."""
        return frozenset(self._thresholds)

    @property
    def level(self) -> Level:
        return max(self._levels.values(), default=Level.NORMAL)

    def update(self, readings: Mapping[str, int]) -> list[Change]:
        """Take new readings (resources not watched are ignored); the levels that changed."""
        changes = []
        for resource, value in readings.items():
            thresholds = self._thresholds.get(resource)
            if thresholds is None:
                continue
            old = self._levels[resource]
            new = next_level(old, value, thresholds, self._hysteresis)
            if new is not old:
                self._levels[resource] = new
                changes.append(Change(resource, old, new, value, thresholds))
        return changes
