"""Bringing a whole local cluster up and down, and watching it from the foreground.

Owns: `hubd cluster up` (plan or reuse the layout, start the DNS server, the mailstore, the
outside host and the hubs, wait until all serve), `down`, and the live status line.
Public: bring_up(), bring_down(), watch(), ClusterError, ClusterInterrupted.
Failures: ClusterError when the cluster is already running or a node does not come up;
ClusterInterrupted when start-up is interrupted (what it had started is stopped).
"""

from __future__ import annotations

import random
import sys
import threading
from pathlib import Path
from typing import TextIO

from hubd.cluster.control import node_pid, start_node, stop_node, wait_until_serving
from hubd.cluster.layout import (
    STATE_FILE,
    Layout,
    Role,
    block_free,
    choose_block,
    load_layout,
    plan_cluster,
    write_layout,
)
from hubd.cluster.status import cluster_status, format_line

START_ORDER = (Role.DNS, Role.MAILSTORE, Role.OUTSIDE, Role.HUB)


class ClusterError(Exception):
    """The cluster cannot be brought up as asked."""


class ClusterInterrupted(ClusterError):
    """Start-up was interrupted (Ctrl-C); every node it had started is stopped again."""

    def __init__(self, stopped: list[str]) -> None:
        self.stopped = stopped
        super().__init__(f"interrupted; stopped: {', '.join(stopped) or 'nothing was running'}")


def _layout_for(directory: Path, hubs: int, heartbeat: str, rng: random.Random) -> Layout:
    if (directory / STATE_FILE).exists():
        old = load_layout(directory)
        running = [plan.name for plan in old.nodes if node_pid(plan) is not None]
        if running:
            raise ClusterError(
                f"a cluster is already running in {directory} ({', '.join(running)}); "
                f"see `hubd cluster status --dir {directory}` or stop it with "
                f"`hubd cluster down --dir {directory}`"
            )
        hub_count = sum(plan.role is Role.HUB for plan in old.nodes)
        if hub_count == hubs and old.heartbeat == heartbeat:
            try:
                block = old.block if block_free(old.block) else choose_block(rng)
            except OSError as error:
                raise ClusterError(str(error)) from None
            return plan_cluster(directory, hubs, block, heartbeat)
    try:
        return plan_cluster(directory, hubs, choose_block(rng), heartbeat)
    except OSError as error:
        raise ClusterError(str(error)) from None


def bring_up(
    directory: Path,
    *,
    hubs: int = 3,
    heartbeat: str = "10s",
    within: float = 60.0,
    rng: random.Random | None = None,
    stop: threading.Event | None = None,
) -> Layout:
    """Write the cluster's configs and start every node; return once all serve.

    When `stop` is set meanwhile (the caller's SIGINT handler sets it, so no
    KeyboardInterrupt can land between starting a process and recording it), every node
    started so far is stopped and ClusterInterrupted raised.
    """
    directory.mkdir(parents=True, exist_ok=True)
    layout = _layout_for(directory, hubs, heartbeat, rng or random.Random())
    write_layout(layout)
    try:
        for role in START_ORDER:
            plans = [plan for plan in layout.nodes if plan.role is role]
            for plan in plans:
                if stop is not None and stop.is_set():
                    raise InterruptedError("interrupted")
                start_node(plan)
            wait_until_serving(plans, within, stop)
    except (OSError, TimeoutError) as error:
        stopped = bring_down(layout)
        if stop is not None and stop.is_set():
            raise ClusterInterrupted(stopped) from None
        raise ClusterError(str(error)) from None
    return layout


def bring_down(layout: Layout, grace: float = 15.0) -> list[str]:
    """Stop every node (hubs first, so they can hand on what they hold); the ones stopped."""
    stopped = []
    for role in reversed(START_ORDER):
        for plan in layout.nodes:
            if plan.role is role and stop_node(plan, grace):
                stopped.append(plan.name)
    return stopped


def watch(layout: Layout, stop: threading.Event, out: TextIO = sys.stdout) -> None:
    """Print the live status line until `stop` is set (once a second on a terminal)."""
    interactive = out.isatty()
    while not stop.is_set():
        line = format_line(cluster_status(layout))
        if interactive:
            out.write(f"\r\x1b[2K{line}  (Ctrl-C stops the cluster)")
        else:
            out.write(line + "\n")
        out.flush()
        stop.wait(1.0 if interactive else 10.0)
    if interactive:
        out.write("\n")
