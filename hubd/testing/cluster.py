"""A local hubd cluster for your own integration tests: start it, send, wait, break nodes.

Owns: the public test API over `hubd cluster`: a context manager that starts a cluster on
free loopback addresses in a temporary directory, sends mail, waits (with timeouts, never
sleeps) until a message is in a mailbox or an event is tracked, and kills, stops, starts or
wipes nodes.
Public: Cluster, Sent.
Failures: TimeoutError naming what was awaited; ClusterError when it cannot start.
See also: README.md (Testing your application's failover), hubd/testing/plugin.py.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import shutil
import smtplib
import ssl
import tempfile
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from hubd.cluster import control, pki
from hubd.cluster.layout import CLUSTER_DOMAIN, OUTSIDE_DOMAIN, Layout, NodePlan, Role
from hubd.cluster.run import bring_down, bring_up
from hubd.cluster.status import NodeStatus, cluster_status
from hubd.config import HostPort
from hubd.delivery.maildir import mailbox_dirname
from hubd.testing.helpers import maildir_messages, wait_until
from hubd.tracking import read_events
from storage.summary import summarise_queue


@dataclass(frozen=True, slots=True)
class Sent:
    """A message the cluster accepted: its Message-ID and the queue id in the 250 reply."""

    message_id: str
    queue_id: str
    via: str


class Cluster:
    """Hubs, a mailstore for corp.test, an outside MX host for example.net, a DNS server."""

    def __init__(
        self, directory: Path | None = None, *, hubs: int = 3, heartbeat: str = "1s"
    ) -> None:
        self._own_directory = directory is None
        self.directory = directory or Path(tempfile.mkdtemp(prefix="hubd-cluster-"))
        self._hubs = hubs
        self._heartbeat = heartbeat
        self.layout: Layout | None = None

    def __enter__(self) -> Self:
        self.layout = bring_up(self.directory, hubs=self._hubs, heartbeat=self._heartbeat)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self.layout is not None:
            for plan in self.layout.nodes:
                control.kill_node(plan)
        if self._own_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def close(self) -> None:
        """Stop every node cleanly (SIGTERM), keeping the directory."""
        bring_down(self._layout())

    # -- where things are --

    def _layout(self) -> Layout:
        if self.layout is None:
            raise RuntimeError("the cluster is not started (use it as a context manager)")
        return self.layout

    def node(self, name: str) -> NodePlan:
        return self._layout().node(name)

    @property
    def hubs(self) -> list[str]:
        return [n.name for n in self._layout().nodes if n.role is Role.HUB]

    def relay(self, name: str = "hub-1") -> HostPort:
        return HostPort.parse(self.node(name).relay)

    def submission(self, name: str = "hub-1") -> HostPort:
        """A node's submission port: STARTTLS (trust `ca_file`), then AUTH as `credentials`."""
        return HostPort.parse(self.node(name).submission)

    @property
    def ca_file(self) -> Path:
        """The cluster's CA certificate: every node's certificate is signed by it."""
        return pki.ca_file(Path(self._layout().directory))

    @property
    def credentials(self) -> tuple[str, str]:
        """The ready submission user and its password; it sends as CLIENT_ADDRESSES."""
        return pki.CLIENT_USER, pki.password_file(Path(self._layout().directory)).read_text(
            encoding="utf-8"
        ).strip()

    def tls_context(self) -> ssl.SSLContext:
        """A client context that trusts the cluster's CA (and checks names and addresses)."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def mailbox(self, address: str) -> Path:
        """The Maildir of a corp.test (mailstore) or example.net (outside host) address."""
        local, _, domain = address.rpartition("@")
        owner = {CLUSTER_DOMAIN: "mbx-1", OUTSIDE_DOMAIN: "outside-1"}.get(domain.lower())
        if owner is None:
            raise ValueError(
                f"{address}: the cluster keeps mail for {CLUSTER_DOMAIN} and {OUTSIDE_DOMAIN}"
            )
        root = Path(self.node(owner).data_dir) / "mailboxes" / domain.lower()
        return root / mailbox_dirname(local)

    # -- sending and waiting --

    def send(
        self,
        to: str | list[str],
        *,
        sender: str = "tester@example.org",
        via: str = "hub-1",
        subject: str = "hubd test",
        body: str = "Sent by hubd.testing.Cluster.\n",
        submission: bool = False,
    ) -> Sent:
        """Submit one message to a node's relay port (or, with `submission`, its submission
        port: STARTTLS and AUTH as `credentials`, the sender one of the user's addresses);
        returns once it answered 250."""
        recipients = [to] if isinstance(to, str) else list(to)
        message = EmailMessage(policy=email.policy.SMTP)
        message["From"] = sender
        message["To"] = ", ".join(recipients)
        message["Subject"] = subject
        message["Message-ID"] = email.utils.make_msgid(domain="hubd.test")
        message.set_content(body)
        address = self.submission(via) if submission else self.relay(via)
        with smtplib.SMTP(address.host, address.port, timeout=60) as client:
            client.ehlo("hubd-testing")
            if submission:
                client.starttls(context=self.tls_context())
                client.ehlo("hubd-testing")
                client.login(*self.credentials)
            code, reply = client.mail(sender)
            if code != 250:
                raise smtplib.SMTPSenderRefused(code, reply, sender)
            for recipient in recipients:
                client.rcpt(recipient)
            code, reply = client.data(message.as_bytes())
        if code != 250:
            raise smtplib.SMTPDataError(code, reply)
        return Sent(str(message["Message-ID"]), reply.decode().split()[1], via)

    def messages(self, address: str) -> list[EmailMessage]:
        """Every message in an address's Maildir, parsed."""
        return [
            email.message_from_bytes(data, policy=email.policy.default)
            for data in maildir_messages(self.mailbox(address)).values()
        ]

    def copies(self, address: str, message_id: str) -> int:
        """How many copies of a Message-ID an address's Maildir holds."""
        return sum(1 for m in self.messages(address) if m["Message-ID"] == message_id)

    def wait_for_message(self, address: str, message_id: str, within: float = 60) -> EmailMessage:
        """Wait until the message is in the address's Maildir; return it."""

        def found() -> EmailMessage | None:
            return next((m for m in self.messages(address) if m["Message-ID"] == message_id), None)

        return wait_until(found, within, f"{message_id} in {address}'s mailbox")

    def events(self, node: str, event: str | None = None) -> list[dict[str, Any]]:
        """A node's tracking events (all, or of one kind), oldest first."""
        tracking = Path(self.node(node).data_dir) / "tracking"
        found = list(read_events(tracking)) if tracking.exists() else []
        return [e for e in found if event is None or e["event"] == event]

    def wait_for_event(
        self, node: str, event: str, within: float = 60, **fields: Any
    ) -> dict[str, Any]:
        """Wait until the node tracked an event whose fields match; return it."""

        def found() -> dict[str, Any] | None:
            for item in self.events(node, event):
                if all(item.get(key) == value for key, value in fields.items()):
                    return item
            return None

        return wait_until(found, within, f"{event} {fields} on {node}")

    def queued(self, node: str) -> int:
        """Recipients waiting in a node's queue (pending or held)."""
        return summarise_queue(Path(self.node(node).data_dir) / "queue.db").queued

    def shadows(self, node: str) -> int:
        """Shadows a node holds for its next hops."""
        return summarise_queue(Path(self.node(node).data_dir) / "queue.db").shadows

    def status(self) -> list[NodeStatus]:
        return cluster_status(self._layout())

    # -- breaking things --

    def kill(self, node: str) -> None:
        """SIGKILL: a crash."""
        control.kill_node(self.node(node))

    def stop(self, node: str) -> None:
        """SIGTERM: a clean stop."""
        control.stop_node(self.node(node))

    def start(self, node: str, within: float = 60) -> None:
        """Start a node and wait until it accepts mail."""
        plan = self.node(node)
        control.start_node(plan)
        control.wait_until_serving([plan], within)

    def wipe(self, node: str) -> None:
        """Kill the node (if running) and delete its data: a lost disk."""
        control.wipe_node(self.node(node))
