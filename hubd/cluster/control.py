"""Running a local cluster's processes: start, stop, kill, wipe, and waiting until they serve.

Owns: one `hubd serve` (or `hubd dns-server`) process per node, in its own session, logging
to DIR/<node>/node.log, with its pid in DIR/<node>/node.pid, so that every command works
from any terminal; telling whether a node is up (its process lives and it answers).
Public: start_node(), stop_node(), kill_node(), wipe_node(), node_pid(), is_up(),
wait_until_serving().
Failures: OSError when a process cannot be started; TimeoutError naming the nodes that did
not come up.
Limits: Linux (/proc) for telling a live process from a zombie or a reused pid.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from hubd.cluster.layout import NodePlan, Role
from hubd.config import HostPort
from hubd.probe import smtp_greets

# Processes this process started: held so that they are reaped (and Popen does not warn)
# when they end; nodes started elsewhere are found by their pid files.
_children: dict[int, subprocess.Popen[bytes]] = {}


def _command(plan: NodePlan) -> list[str]:
    if plan.role is Role.DNS:
        return [
            sys.executable,
            "-m",
            "hubd",
            "dns-server",
            "--listen",
            plan.relay,
            "--zone",
            plan.config,
        ]
    return [sys.executable, "-m", "hubd", "serve", "-c", plan.config]


def _alive(pid: int, plan: NodePlan) -> bool:
    """The pid is a live (not zombie) process running this node's command."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    if stat.rsplit(")", 1)[1].split()[0] == "Z":
        return False
    # A dying process reads an empty cmdline but still holds its ports: count it as alive.
    return not cmdline or plan.config.encode() in cmdline.split(b"\0")


def node_pid(plan: NodePlan) -> int | None:
    """The pid of the node's live process, or None."""
    try:
        pid = int(plan.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    child = _children.get(pid)
    if child is not None:  # our own child: ask it, which also reaps it when it has ended
        return pid if child.poll() is None else None
    return pid if _alive(pid, plan) else None


def start_node(plan: NodePlan) -> int:
    """Start the node's process unless it is running; returns its pid."""
    running = node_pid(plan)
    if running is not None:
        return running
    Path(plan.data_dir).mkdir(parents=True, exist_ok=True)
    with plan.log.open("ab") as log:
        process = subprocess.Popen(
            _command(plan),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in the terminal reaches `cluster up`, not them
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    plan.pid_file.write_text(f"{process.pid}\n")
    _children[process.pid] = process
    return process.pid


def _wait_gone(pid: int, plan: NodePlan, within: float) -> bool:
    child = _children.get(pid)
    if child is not None:
        # Our own child: wait for its exit status. (/proc is no guide while a process dies:
        # its cmdline reads empty before it is gone.)
        try:
            child.wait(timeout=within)
        except subprocess.TimeoutExpired:
            return False
        del _children[pid]
        return True
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not _alive(pid, plan):
            return True
        time.sleep(0.05)
    return not _alive(pid, plan)


def kill_node(plan: NodePlan) -> bool:
    """SIGKILL (a crash); True when a process was killed."""
    pid = node_pid(plan)
    if pid is None:
        return False
    # The node leads its own process group (start_node): its children die with it.
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        os.kill(pid, signal.SIGKILL)
    _wait_gone(pid, plan, 10)
    return True


def stop_node(plan: NodePlan, grace: float = 15.0) -> bool:
    """SIGTERM and wait (the node drains); SIGKILL after `grace`. True when one was running."""
    pid = node_pid(plan)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    if not _wait_gone(pid, plan, grace):
        os.kill(pid, signal.SIGKILL)
        _wait_gone(pid, plan, 10)
    return True


def wipe_node(plan: NodePlan) -> None:
    """Kill the node if it runs and delete its data (queue, tracking, mailboxes)."""
    kill_node(plan)
    shutil.rmtree(plan.data_dir, ignore_errors=True)


def _answers(plan: NodePlan) -> bool:
    address = HostPort.parse(plan.relay)
    if plan.role is Role.DNS:
        return _dns_answers(address)
    return smtp_greets(address.host, address.port)


def _dns_answers(address: HostPort) -> bool:
    import dns.exception
    import dns.message
    import dns.query

    query = dns.message.make_query("mbx-1.hubd.test", "A")
    try:
        dns.query.udp(query, address.host, port=address.port, timeout=1)
    except (dns.exception.DNSException, OSError):
        return False
    return True


def is_up(plan: NodePlan) -> bool:
    """The node's process lives and it answers (SMTP greeting, or a DNS reply)."""
    return node_pid(plan) is not None and _answers(plan)


def wait_until_serving(
    plans: Iterable[NodePlan], within: float, stop: threading.Event | None = None
) -> None:
    """Block until every node answers; TimeoutError naming the ones that do not.

    InterruptedError as soon as `stop` is set (Ctrl-C during `hubd cluster up`).
    """
    waiting = list(plans)
    deadline = time.monotonic() + within
    while waiting:
        if stop is not None and stop.is_set():
            raise InterruptedError("interrupted")
        waiting = [plan for plan in waiting if not is_up(plan)]
        if not waiting:
            return
        dead = [plan.name for plan in waiting if node_pid(plan) is None]
        if dead:
            raise OSError(f"node(s) exited at start: {', '.join(dead)}; see their node.log")
        if time.monotonic() >= deadline:
            names = ", ".join(plan.name for plan in waiting)
            raise TimeoutError(f"not serving after {within}s: {names}")
        if stop is not None:
            stop.wait(0.1)
        else:
            time.sleep(0.1)
