"""What a local cluster looks like right now: each node's state, queues and shadows.

Owns: the status of each node (up or down, its endpoints, recipients waiting per next hop,
shadows held, notices owed), as a table, as JSON, and as the one-line live summary.
Public: NodeStatus, cluster_status(), format_table(), format_line(), to_json().
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from hubd.cluster import pki
from hubd.cluster.control import is_up, node_pid
from hubd.cluster.layout import Layout, Role
from storage.summary import summarise_queue


@dataclass(frozen=True, slots=True)
class NodeStatus:
    name: str
    role: str
    state: str  # "up" or "down"
    relay: str
    submission: str
    data_dir: str
    pid: int | None
    queued: int
    queues: dict[str, int]
    shadows_held: int
    notices_owed: int


def cluster_status(layout: Layout) -> list[NodeStatus]:
    """The status of every node, in layout order."""
    out = []
    for plan in layout.nodes:
        summary = summarise_queue(Path(plan.data_dir) / "queue.db")
        out.append(
            NodeStatus(
                name=plan.name,
                role=str(plan.role),
                state="up" if is_up(plan) else "down",
                relay=plan.relay,
                submission=plan.submission,
                data_dir=plan.data_dir,
                pid=node_pid(plan),
                queued=summary.queued,
                queues=summary.waiting,
                shadows_held=summary.shadows,
                notices_owed=summary.owed,
            )
        )
    return out


def to_json(statuses: list[NodeStatus]) -> str:
    return json.dumps([asdict(s) for s in statuses], indent=2)


def _submission_column(status: NodeStatus) -> str:
    # Submission listens on the relay's address in a local cluster: its port says it all.
    if not status.submission:
        return "-"
    host, _, port = status.submission.rpartition(":")
    return f":{port}" if host == status.relay.rpartition(":")[0] else status.submission


def format_table(statuses: list[NodeStatus], layout: Layout) -> str:
    """The endpoints table (80 columns), queue and shadow counts, and where the mailboxes are."""
    row = "{:<9} {:<9} {:<5} {:<21} {:<6} {:>6} {:>7} {:>5}"
    lines = [row.format("node", "role", "state", "relay", "submit", "queued", "shadows", "owed")]
    for s in statuses:
        lines.append(
            row.format(
                s.name,
                s.role,
                s.state,
                s.relay,
                _submission_column(s),
                s.queued,
                s.shadows_held,
                s.notices_owed,
            )
        )
    for plan in layout.nodes:
        if plan.role in (Role.MAILSTORE, Role.OUTSIDE):
            lines.append(f"mailboxes of {plan.name}: {Path(plan.data_dir) / 'mailboxes'}")
    root = Path(layout.directory)
    lines.append(f"CA (STARTTLS everywhere, deliveries verified): {pki.ca_file(root)}")
    lines.append(
        f"submission user: {pki.CLIENT_USER} (sends as {', '.join(pki.CLIENT_ADDRESSES)}),"
        f" password in {pki.password_file(root)}"
    )
    return "\n".join(lines)


def format_line(statuses: list[NodeStatus]) -> str:
    """One line: nodes up, messages waiting, shadows held."""
    up = sum(s.state == "up" for s in statuses)
    queued = sum(s.queued for s in statuses)
    shadows = sum(s.shadows_held for s in statuses)
    down = [s.name for s in statuses if s.state != "up"]
    tail = f" | down: {', '.join(down)}" if down else ""
    return f"nodes up {up}/{len(statuses)} | queued {queued} | shadows {shadows}{tail}"
