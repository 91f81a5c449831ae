"""Back pressure's level logic and its configuration, as plain values."""

from __future__ import annotations

import pytest

from hubd.backpressure import Level, Levels, Thresholds, admits, next_level
from hubd.config import BackpressureConfig, parse_config
from hubd.errors import ConfigError
from hubd.pressure import thresholds_of

USE = Thresholds(medium=100, high=200)
FREE = Thresholds(medium=200, high=100, falling=True)


@pytest.mark.parametrize(
    ("current", "value", "expected"),
    [
        (Level.NORMAL, 99, Level.NORMAL),
        (Level.NORMAL, 100, Level.MEDIUM),
        (Level.NORMAL, 250, Level.HIGH),
        (Level.HIGH, 190, Level.HIGH),  # within the hysteresis of high (180)
        (Level.HIGH, 179, Level.MEDIUM),
        (Level.HIGH, 10, Level.NORMAL),
        (Level.MEDIUM, 91, Level.MEDIUM),  # within the hysteresis of medium (90)
        (Level.MEDIUM, 89, Level.NORMAL),
        (Level.MEDIUM, 200, Level.HIGH),
    ],
)
def test_use_levels(current: Level, value: int, expected: Level) -> None:
    """A use rises at its thresholds and falls only 10% below them."""
    assert next_level(current, value, USE, 0.1) is expected


@pytest.mark.parametrize(
    ("current", "value", "expected"),
    [
        (Level.NORMAL, 201, Level.NORMAL),
        (Level.NORMAL, 200, Level.MEDIUM),
        (Level.NORMAL, 0, Level.HIGH),
        (Level.HIGH, 109, Level.HIGH),  # free space must pass 110 to leave High
        (Level.HIGH, 111, Level.MEDIUM),
        (Level.MEDIUM, 219, Level.MEDIUM),
        (Level.MEDIUM, 221, Level.NORMAL),
        (Level.HIGH, 10_000, Level.NORMAL),
    ],
)
def test_free_space_levels(current: Level, value: int, expected: Level) -> None:
    """Free space is worse the lower it is, and must grow 10% past a threshold to drop."""
    assert next_level(current, value, FREE, 0.1) is expected


def test_zero_turns_a_check_off() -> None:
    """A threshold of 0 never fires, whatever the value."""
    assert next_level(Level.NORMAL, 0, Thresholds(0, 0, falling=True), 0.1) is Level.NORMAL
    assert next_level(Level.NORMAL, 10**12, Thresholds(0, 50), 0.1) is Level.HIGH
    assert next_level(Level.NORMAL, 10**12, Thresholds(100, 0), 0.1) is Level.MEDIUM
    assert Levels({"disk_free": Thresholds(0, 0, falling=True)}, 0.1).watched == frozenset()


def test_levels_report_each_change_once() -> None:
    """The node's level is the worst resource's; only a change is reported."""
    levels = Levels({"queued": USE, "disk_free": FREE}, 0.1)
    assert levels.update({"queued": 150, "disk_free": 500}) != []
    assert levels.level is Level.MEDIUM
    assert levels.update({"queued": 160, "disk_free": 500}) == []
    (change,) = levels.update({"queued": 160, "disk_free": 50})
    assert (change.resource, change.old, change.new, change.value) == (
        "disk_free",
        Level.NORMAL,
        Level.HIGH,
        50,
    )
    assert levels.level is Level.HIGH
    levels.update({"queued": 0, "disk_free": 10_000, "unwatched": 5})
    assert levels.level is Level.NORMAL


def test_admits() -> None:
    """Normal takes anyone, Medium only privileged senders, High nobody."""
    assert admits(Level.NORMAL, privileged=False)
    assert admits(Level.MEDIUM, privileged=True)
    assert not admits(Level.MEDIUM, privileged=False)
    assert not admits(Level.HIGH, privileged=True)


def test_config_sizes_and_off() -> None:
    """Sizes take B/KiB/MiB/GiB; "0" and 0 turn a check off."""
    config = parse_config(
        {
            "backpressure": {
                "disk_free_medium": "0",
                "disk_free_high": 0,
                "memory_medium": "512MiB",
                "memory_high": "1GiB",
                "queued_medium": "0",
                "hysteresis": 0.2,
            }
        }
    ).backpressure
    assert (config.disk_free_medium, config.disk_free_high) == (0, 0)
    assert (config.memory_medium, config.memory_high) == (512 << 20, 1 << 30)
    assert config.queued_medium == 0
    assert config.hysteresis == 0.2


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ({"memory_medium": "2GiB", "memory_high": "1GiB"}, "memory_medium must be less"),
        ({"disk_free_medium": "1GiB", "disk_free_high": "2GiB"}, "disk_free_medium must be more"),
        ({"hysteresis": 1.5}, "backpressure.hysteresis"),
        ({"queued_high": -1}, "backpressure.queued_high"),
        ({"inflight_high": "3TB"}, "backpressure.inflight_high"),
    ],
)
def test_config_problems(section: dict[str, object], expected: str) -> None:
    """Bad [backpressure] settings are refused naming the key."""
    with pytest.raises(ConfigError) as caught:
        parse_config({"backpressure": section})
    assert expected in "\n".join(caught.value.problems)


def test_defaults_admit_the_performance_loads() -> None:
    """100,000 queued recipients and 20 concurrent 30 MB messages stay Normal by default."""
    levels = Levels(thresholds_of(BackpressureConfig()), BackpressureConfig().hysteresis)
    levels.update({"queued": 100_000, "inflight": 20 * 30_000_000, "disk_free": 20 << 30})
    assert levels.level is Level.NORMAL


def test_inflight_shared_among_acceptors() -> None:
    """Each of several acceptors watches its share of the in-flight thresholds."""
    config = BackpressureConfig(inflight_medium=1000, inflight_high=2000)
    assert thresholds_of(config, inflight_share=4)["inflight"] == Thresholds(250, 500)
