"""The pytest plugin that hubd installs: the `hubd_cluster` fixture.

Public: hubd_cluster (fixture).
Limits: one cluster per test by default (a few seconds to start); for a module-wide cluster,
use `hubd.testing.Cluster` in a fixture of your own with a wider scope.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hubd.testing.cluster import Cluster


@pytest.fixture
def hubd_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A running local cluster (3 hubs, mailstore, outside MX host, DNS), killed afterwards."""
    with Cluster(tmp_path / "cluster") as cluster:
        yield cluster
