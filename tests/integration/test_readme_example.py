"""The failover test printed in README.md runs, as written, against a real cluster."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from hubd.testing import Cluster

pytestmark = [pytest.mark.integration, pytest.mark.slow]

README = Path(__file__).resolve().parents[2] / "README.md"


def _example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)
    (code,) = [block for block in blocks if "def test_" in block]
    return code


def test_readme_failover_example(hubd_cluster: Cluster) -> None:
    """The README's example test passes against the fixture it documents."""
    namespace: dict[str, Any] = {}
    exec(compile(_example(), str(README), "exec"), namespace)
    (test,) = [v for k, v in namespace.items() if k.startswith("test_")]
    test(hubd_cluster)
