"""The plan of a local cluster: which nodes, on which loopback addresses, with which configs.

Owns: choosing a free 127.x.y.0/24 block, naming the nodes (hub-1..hub-N, mbx-1, outside-1,
dns), their routes and the DNS zone, and writing every config under the cluster directory.
Public: Layout, NodePlan, Role, plan_cluster(), node_settings(), zone_text(),
write_layout(), load_layout().
Limits: hubs route corp.test to mbx-1 first and then to the hubs after them (hub-1 ->
hub-2 -> ...), an order with no cycle, so a message can never loop between hubs while the
mailstore is down; example.net is found by MX through the cluster's DNS server.
See also: hubd/cluster/control.py (processes), README.md (The local cluster).
"""

from __future__ import annotations

import enum
import json
import random
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hubd.cluster import pki
from hubd.config import write_config

CLUSTER_DOMAIN = "corp.test"
OUTSIDE_DOMAIN = "example.net"
RELAY_PORT = 2525  # also the cluster's mx_port: the outside host listens there
SUBMISSION_PORT = 2587
DNS_PORT = 5300
STATE_FILE = "cluster.json"


class Role(enum.StrEnum):
    HUB = "hub"
    MAILSTORE = "mailstore"
    OUTSIDE = "outside"
    DNS = "dns"


@dataclass(frozen=True, slots=True)
class NodePlan:
    name: str
    role: Role
    host: str
    relay: str  # host:port (for the DNS server: where it answers)
    submission: str  # host:port, "" when the node has no submission listener
    home: str  # DIR/<name>: config, log and pid file
    data_dir: str  # DIR/<name>/data: queue.db, tracking/, mailboxes/ (what `wipe` deletes)
    config: str  # its hubd.toml, or the DNS server's zone file

    @property
    def log(self) -> Path:
        return Path(self.home) / "node.log"

    @property
    def pid_file(self) -> Path:
        return Path(self.home) / "node.pid"


@dataclass(frozen=True, slots=True)
class Layout:
    directory: str
    block: str  # "127.x.y"
    nodes: tuple[NodePlan, ...]
    heartbeat: str

    def node(self, name: str) -> NodePlan:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(f"no node {name!r} in this cluster (nodes: {self.names()})")

    def names(self) -> str:
        return ", ".join(node.name for node in self.nodes)

    @property
    def dns_address(self) -> str:
        return self.node("dns").relay or f"{self.block}.53:{DNS_PORT}"


def block_free(block: str) -> bool:
    """Whether nothing listens on the block's addresses (probe one relay port)."""
    for last in (11, 20, 30):
        with socket.socket() as probe:
            try:
                probe.bind((f"{block}.{last}", RELAY_PORT))
            except OSError:
                return False
    return True


def choose_block(rng: random.Random) -> str:
    """A 127.x.y block whose relay ports are free (so two clusters never collide)."""
    for _ in range(200):
        block = f"127.{rng.randint(100, 250)}.{rng.randint(1, 250)}"
        if block_free(block):
            return block
    raise OSError("no free 127.x.y block for a cluster")


def plan_cluster(directory: Path, hubs: int, block: str, heartbeat: str = "10s") -> Layout:
    """The nodes of a cluster with `hubs` hubs in `block`."""
    root = directory.resolve()

    def node(name: str, role: Role, last: int) -> NodePlan:
        host = f"{block}.{last}"
        is_dns = role is Role.DNS
        return NodePlan(
            name=name,
            role=role,
            host=host,
            relay=f"{host}:{DNS_PORT}" if is_dns else f"{host}:{RELAY_PORT}",
            submission="" if is_dns or role is Role.OUTSIDE else f"{host}:{SUBMISSION_PORT}",
            home=str(root / name),
            data_dir=str(root / name / "data"),
            config=str(root / name / ("zone.txt" if is_dns else "hubd.toml")),
        )

    nodes = [node(f"hub-{i}", Role.HUB, 10 + i) for i in range(1, hubs + 1)]
    nodes += [
        node("mbx-1", Role.MAILSTORE, 200),
        node("outside-1", Role.OUTSIDE, 210),
        node("dns", Role.DNS, 53),
    ]
    return Layout(str(root), block, tuple(nodes), heartbeat)


def zone_text(layout: Layout) -> str:
    """The DNS server's zone file: example.net's MX, corp.test's MX and every node's name."""
    outside = layout.node("outside-1")
    lines = [
        f"{OUTSIDE_DOMAIN}. 60 IN MX 10 mx1.{OUTSIDE_DOMAIN}.",
        f"mx1.{OUTSIDE_DOMAIN}. 60 IN A {outside.host}",
        f"{CLUSTER_DOMAIN}. 60 IN MX 10 mbx-1.hubd.test.",
    ]
    lines += [f"{n.name}.hubd.test. 60 IN A {n.host}" for n in layout.nodes]
    return "\n".join(lines) + "\n"


def node_settings(layout: Layout, plan: NodePlan) -> dict[str, Any]:
    """The hubd.toml of one node, as a dictionary."""
    hubs = [n for n in layout.nodes if n.role is Role.HUB]
    root = Path(layout.directory)
    cert, key = pki.node_tls(Path(plan.home))
    settings: dict[str, Any] = {
        "local_domains": [],
        "node": {
            "name": plan.name,
            "hostname": f"{plan.name}.hubd.test",
            "data_dir": plan.data_dir,
            # One process each: a local cluster of six nodes on a laptop, quick to start.
            "processes": 1,
        },
        "smtp": {"listen": [plan.relay], "trusted_networks": ["127.0.0.0/8", "::1/128"]},
        # Every node has a certificate of the cluster's CA, and checks its next hop's.
        "tls": {"cert": str(cert), "key": str(key)},
        "queue": {"retry": ["5s", "30s", "1m", "5m"], "expiry": "2d", "delay_notice": "4h"},
        "delivery": {
            "mx_port": RELAY_PORT,
            "tls": "verify",
            "tls_ca": str(pki.ca_file(root)),
            "connect_timeout": "5s",
        },
        "dns": {"nameservers": [layout.dns_address], "ipv6": "fallback", "timeout": "3s"},
        "shadow": {
            "peers": ["127.0.0.0/8"],
            "heartbeat_interval": layout.heartbeat,
            "heartbeat_failures": 3,
        },
    }
    if plan.submission:
        # STARTTLS and AUTH; the ready user (and any `hubd user add`) is in one shared file.
        settings["submission"] = {
            "listen": [plan.submission],
            "users_file": str(pki.users_file(root)),
        }
    if plan.role is Role.MAILSTORE:
        settings["local_domains"] = [CLUSTER_DOMAIN]
    elif plan.role is Role.OUTSIDE:
        settings["local_domains"] = [OUTSIDE_DOMAIN]
        # The outside world's MTA is no hubd peer: plain SMTP, no shadows.
        settings["shadow"] = {"enabled": False}
    elif plan.role is Role.HUB:
        position = hubs.index(plan)
        later = [h.relay for h in hubs[position + 1 :]]
        settings["routes"] = [
            {"domains": [CLUSTER_DOMAIN], "next_hops": [layout.node("mbx-1").relay, *later]}
        ]
        # A copy on another hub before each 250 to a client; accepted anyway (UNPROTECTED)
        # when none is up, so a cluster of one hub still takes mail.
        others = [h.relay for h in hubs[position + 1 :] + hubs[:position]]
        settings["shadow"] |= {"before_ack": "prefer", "redundancy_peers": others}
    return settings


def identities(plan: NodePlan) -> tuple[str, ...]:
    """What a node's certificate names: its address, its name, and its MX name if any."""
    names = (plan.host, f"{plan.name}.hubd.test")
    return (*names, f"mx1.{OUTSIDE_DOMAIN}") if plan.role is Role.OUTSIDE else names


def write_layout(layout: Layout) -> None:
    """Write every node's config (and the DNS zone), the certificates and the ready user
    (kept when they exist), and the cluster's state file."""
    root = Path(layout.directory)
    pki.ensure_pki(
        root, {Path(p.home): identities(p) for p in layout.nodes if p.role is not Role.DNS}
    )
    for plan in layout.nodes:
        Path(plan.home).mkdir(parents=True, exist_ok=True)
        if plan.role is Role.DNS:
            Path(plan.config).write_text(zone_text(layout), encoding="utf-8")
        else:
            write_config(Path(plan.config), node_settings(layout, plan))
    state = {"layout": asdict(layout)}
    (root / STATE_FILE).write_text(json.dumps(state, indent=2), encoding="utf-8")


def load_layout(directory: Path) -> Layout:
    """The layout a cluster directory was made with."""
    path = directory / STATE_FILE
    if not path.exists():
        raise FileNotFoundError(
            f"{directory} holds no cluster (no {STATE_FILE}); "
            f"run: hubd cluster up --dir {directory}"
        )
    data = json.loads(path.read_text(encoding="utf-8"))["layout"]
    nodes = tuple(NodePlan(**{**n, "role": Role(n["role"])}) for n in data["nodes"])
    return Layout(data["directory"], data["block"], nodes, data["heartbeat"])
