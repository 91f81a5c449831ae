"""How a node's processes are planned from `[node] processes` and the usable cores."""

from __future__ import annotations

import pytest

from hubd.supervisor import Plan, plan_processes, usable_cores


@pytest.mark.parametrize(
    ("configured", "cores", "plan"),
    [
        (1, 8, Plan(1, 0)),
        (0, 1, Plan(1, 0)),
        (0, 2, Plan(1, 1)),
        (2, 1, Plan(1, 1)),
        (3, 2, Plan(2, 1)),
        (0, 4, Plan(2, 2)),
        (5, 2, Plan(3, 2)),
    ],
    ids=["one", "one-core", "two-cores", "two-asked", "three", "four-cores", "five"],
)
def test_plan(configured: int, cores: int, plan: Plan) -> None:
    """Acceptors get the larger half; one process in all means no supervisor."""
    assert plan_processes(configured, cores) == plan
    assert plan.single == (plan.deliverers == 0)


def test_usable_cores_is_at_least_one() -> None:
    """Whatever the affinity mask and cgroup quota say, a node gets a core."""
    assert usable_cores() >= 1
