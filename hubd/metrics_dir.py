"""Where the processes of a running node keep their metrics: <data_dir>/metrics/.

Owns: turning on prometheus-client's multiprocess mode for `hubd serve` and every child
it starts (PROMETHEUS_MULTIPROC_DIR, inherited), on a directory emptied at each start: a
node's counters count from its start, as Prometheus expects of a restarted target.
Public: use_metrics_dir(), METRICS_DIR.
Failures: RuntimeError when a metric was made before (hubd.metrics imported too early:
that process's counts would be its own alone, and missing from /metrics).
Limits: run under the data-directory lock, before anything imports hubd.metrics.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

METRICS_DIR = "metrics"
_ENV = "PROMETHEUS_MULTIPROC_DIR"


def use_metrics_dir(data_dir: Path) -> Path:
    """Empty <data_dir>/metrics/ and have this process and its children count there."""
    if "hubd.metrics" in sys.modules:
        raise RuntimeError("hubd.metrics was imported before the node's metrics directory")
    directory = data_dir / METRICS_DIR
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, mode=0o700)
    os.environ[_ENV] = str(directory)
    from prometheus_client import values

    # The value class is chosen when prometheus_client is first imported; it may have been.
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    return directory
