"""The admin API of a running node (`hubd serve`, several processes): token, health,
queues and messages as JSON, and every queue operation while the node delivers."""

from __future__ import annotations

import json
import smtplib
import stat
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from prometheus_client.parser import text_string_to_metric_families

from hubd.dns_server import DnsServer
from hubd.testing import NodeProcess, free_loopback_address, maildir_messages, wait_until
from hubd.testing import write_config as write_toml
from tests.conftest import merge, node_settings

pytestmark = pytest.mark.integration


class _Sink:
    """An SMTP server standing for the next hop once it comes back; keeps what it got."""

    def __init__(self) -> None:
        self.received: list[Envelope] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.received.append(envelope)
        return "250 2.0.0 ok"


class Api:
    """Plain HTTP to a node's admin listener, as any client would speak it."""

    def __init__(self, address: tuple[str, int], token_file: Path) -> None:
        self.base = f"http://{address[0]}:{address[1]}"
        self.token_file = token_file

    def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        auth: bool = True,
        body: object = None,
    ) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if auth:
            secret = token if token is not None else self.token_file.read_text().strip()
            request.add_header("Authorization", f"Bearer {secret}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status, body = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, body = error.code, error.read()
        kind = "json" if body[:1] in (b"{", b"[") else "text"
        return status, json.loads(body) if kind == "json" else body.decode()

    def get(self, path: str) -> Any:
        status, body = self.call("GET", path)
        assert status == 200, (path, status, body)
        return body

    def post(self, path: str, body: object = None) -> Any:
        status, answer = self.call("POST", path, body=body)
        assert status == 200, (path, status, answer)
        return answer


def _send(relay: tuple[str, int], sender: str, recipient: str, tag: str) -> str:
    with smtplib.SMTP(*relay, local_hostname="client.test", timeout=10) as client:
        client.ehlo()
        client.mail(sender)
        client.rcpt(recipient)
        code, reply = client.data(f"Subject: {tag}\r\nMessage-ID: <{tag}@t>\r\n\r\n{tag}\r\n")
    assert code == 250
    return reply.decode().split()[1]


class LiveNode:
    """A `hubd serve` of two processes with an admin listener, a local domain, and a route
    whose next hop (`down`) nothing listens on until a test starts a sink there."""

    def __init__(self, tmp_path: Path, processes: int = 2, **overrides: Any) -> None:
        host, port = free_loopback_address()
        self.down = free_loopback_address()
        admin = free_loopback_address()
        self.data_dir = tmp_path / "node"
        settings = merge(
            node_settings(self.data_dir, "a", host, port),
            {
                "local_domains": ["corp.test"],
                "node": {"processes": processes},
                "admin": {"listen": f"{admin[0]}:{admin[1]}"},
                "routes": [
                    {"domains": ["down.test"], "next_hops": [f"{self.down[0]}:{self.down[1]}"]}
                ],
                # Only an operator's retry brings a deferred message back within the test.
                "queue": {"retry": ["1h"]},
            },
        )
        self.config = write_toml(tmp_path / "a.toml", merge(settings, overrides))
        self.relay = (host, port)
        self.process = NodeProcess(self.config, self.relay, tmp_path / "a.log")
        self.api = Api(admin, self.data_dir / "admin.token")

    def send(self, sender: str, recipient: str, tag: str) -> str:
        return _send(self.relay, sender, recipient, tag)


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveNode]:
    node = LiveNode(tmp_path)
    node.process.start()
    yield node
    node.process.kill()


def _ids(listing: Any) -> set[str]:
    return {m["queue_id"] for m in listing["messages"]}


def _deferred(api: Api, queue_id: str) -> bool:
    status, body = api.call("GET", f"/queue/messages/{queue_id}")
    return status == 200 and body["recipients"][0]["attempts"] >= 1


class TestAccess:
    def test_the_token_guards_the_queue_and_not_health(self, live: LiveNode) -> None:
        """401 without a token or with a wrong one, 200 with admin.token (mode 0600);
        /healthz and /readyz answer anyone."""
        token_file = live.data_dir / "admin.token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert stat.S_IMODE((live.data_dir / "admin.sock").stat().st_mode) == 0o600
        assert len(token_file.read_text().strip()) >= 32
        api = live.api
        status, body = api.call("GET", "/queue/messages", auth=False)
        assert status == 401
        assert "bearer token" in body["error"]
        assert api.call("POST", "/queue/messages/x/retry", auth=False)[0] == 401
        assert api.call("GET", "/queues", token="wrong")[0] == 401
        assert api.call("GET", "/queue/messages")[0] == 200
        assert api.call("GET", "/healthz", auth=False) == (200, {"status": "ok", "node": "a"})
        assert api.call("GET", "/readyz", auth=False) == (200, {"ready": True})

    def test_a_restart_keeps_the_token_and_counts_afresh(self, live: LiveNode) -> None:
        """The token is made at the first start only; the metrics directory is emptied at
        each start, so counters begin again while the queue's depth stays."""
        before = (live.data_dir / "admin.token").read_text()
        live.send("alice@outside.test", "bob@down.test", "one")
        assert _value(_samples(live.api), "hubd_smtp_received_total") == 1
        assert live.process.terminate() == 0
        assert not (live.data_dir / "admin.sock").exists()
        live.process.start()
        assert (live.data_dir / "admin.token").read_text() == before
        assert live.api.call("GET", "/queues")[0] == 200
        again = _samples(live.api)
        # Counted afresh: a counter nothing has counted yet may not be exported at all.
        assert _value(again, "hubd_smtp_received_total", default=0.0) == 0
        assert _value(again, "hubd_queue_depth", next_hop="route:down.test") == 1

    def test_a_remote_listen_address_is_refused(self, tmp_path: Path) -> None:
        """admin.listen off loopback without allow_remote is a config error (exit 2)."""
        node = LiveNode(tmp_path, admin={"listen": "0.0.0.0:8025"})
        for command in (["config", "check"], ["serve"]):
            done = subprocess.run(
                [sys.executable, "-m", "hubd", *command, "-c", str(node.config)],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert done.returncode == 2, done.stderr
            assert "admin.allow_remote" in done.stderr
        assert not (node.data_dir / "queue.db").exists()


class TestQueue:
    def test_listing_filters_and_one_message_with_its_history(self, live: LiveNode) -> None:
        """Messages for a down hop list by state, next hop, sender, recipient and age;
        one shows its recipients' state and its tracking history."""
        api = live.api
        stuck = live.send("alice@outside.test", "bob@down.test", "stuck")
        other = live.send("carol@outside.test", "dave@down.test", "other")
        wait_until(lambda: _deferred(api, stuck) and _deferred(api, other), 15, "attempts")

        assert _ids(api.get("/queue/messages")) == {stuck, other}
        assert _ids(api.get("/queue/messages?state=pending&next_hop=route:down.test")) == {
            stuck,
            other,
        }
        assert _ids(api.get("/queue/messages?state=HELD")) == set()
        assert _ids(api.get("/queue/messages?sender=ALICE@outside.test")) == {stuck}
        assert _ids(api.get("/queue/messages?recipient=@down.test")) == {stuck, other}
        assert _ids(api.get("/queue/messages?recipient=dave@down.test")) == {other}
        assert _ids(api.get("/queue/messages?next_hop=local")) == set()
        assert _ids(api.get("/queue/messages?newer_than=1h")) == {stuck, other}
        assert _ids(api.get("/queue/messages?older_than=1h")) == set()
        assert api.call("GET", "/queue/messages?state=LOST")[0] == 400
        assert api.call("GET", "/queue/messages?colour=red")[0] == 400

        shown = api.get(f"/queue/messages/{stuck}")
        assert shown["sender"] == "alice@outside.test"
        (recipient,) = shown["recipients"]
        assert recipient["state"] == "PENDING"
        assert recipient["next_hop"] == "route:down.test"
        assert recipient["last_error"].startswith("451")
        events = [e["event"] for e in shown["history"]]
        assert events[:2] == ["RECEIVE", "DEFER"]
        assert {e["queue_id"] for e in shown["history"]} == {stuck}
        assert api.call("GET", "/queue/messages/NOSUCH")[0] == 404

        queues = api.get("/queues")
        (hop,) = queues["next_hops"]
        assert (hop["next_hop"], hop["pending"], hop["held"]) == ("route:down.test", 2, 0)

    def test_every_operation_while_the_node_delivers(self, live: LiveNode) -> None:
        """suspend holds, resume releases, retry delivers at once when the hop is back,
        remove deletes: while a client keeps sending local mail, all of it delivered."""
        api = live.api
        mailboxes = live.data_dir / "mailboxes"
        kept = live.send("alice@outside.test", "bob@down.test", "kept")
        gone = live.send("alice@outside.test", "eve@down.test", "gone")
        wait_until(lambda: _deferred(api, kept) and _deferred(api, gone), 15, "attempts")
        load = 40
        sender = threading.Thread(
            target=lambda: [
                live.send("alice@outside.test", f"u{i}@corp.test", f"load{i}") for i in range(load)
            ]
        )
        sender.start()

        assert api.post(f"/queue/messages/{kept}/suspend")["changed"] == 1
        assert api.get(f"/queue/messages/{kept}")["recipients"][0]["state"] == "HELD"
        assert _ids(api.get("/queue/messages?state=HELD")) == {kept}
        hops = {h["next_hop"]: h for h in api.get("/queues")["next_hops"]}
        assert (hops["route:down.test"]["pending"], hops["route:down.test"]["held"]) == (1, 1)
        assert api.post(f"/queue/messages/{kept}/resume")["changed"] == 1
        assert api.get(f"/queue/messages/{kept}")["recipients"][0]["state"] == "PENDING"
        # Bulk: every message with a recipient for the hop, then the whole queue.
        by_hop = api.post("/queue/suspend", {"next_hop": "route:down.test"})
        assert by_hop == {"action": "suspend", "changed": {kept: 1, gone: 1}}
        everything = api.post("/queue/resume", {"all": True, "queue_ids": ["NOSUCH"]})
        changed = everything["changed"]  # local mail in flight is made due now too
        assert (changed[kept], changed[gone], changed["NOSUCH"]) == (1, 1, 0)
        assert _ids(api.get("/queue/messages?state=HELD")) == set()
        assert api.call("POST", "/queue/resume", body={})[0] == 400
        assert api.call("POST", "/queue/resume", body={"queue_ids": "A"})[0] == 400
        assert api.call("POST", "/queue/explode", body={"all": True})[0] == 404

        assert api.post(f"/queue/messages/{gone}/remove") == {
            "queue_id": gone,
            "action": "remove",
            "changed": 1,
        }
        assert api.call("GET", f"/queue/messages/{gone}")[0] == 404
        assert api.call("POST", f"/queue/messages/{gone}/retry")[0] == 404

        sink = _Sink()
        controller = Controller(sink, hostname=live.down[0], port=live.down[1])
        controller.start()
        try:
            # The retry schedule says an hour; only the operator's retry sends it now.
            assert api.post(f"/queue/messages/{kept}/retry")["changed"] == 1
            wait_until(lambda: len(sink.received) == 1, 15, "the retried message delivered")
        finally:
            controller.stop()
        assert sink.received[0].rcpt_tos == ["bob@down.test"]
        sender.join(60)
        wait_until(lambda: len(maildir_messages(mailboxes)) == load, 15, "every local delivery")
        wait_until(lambda: api.get("/queue/messages")["messages"] == [], 15, "an empty queue")


def _samples(api: Api) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """One scrape of /metrics (no token), parsed by prometheus-client's own parser."""
    status, text = api.call("GET", "/metrics", auth=False)
    assert status == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(
    samples: dict[Any, float], name: str, default: float | None = None, **labels: str
) -> float:
    """A sample's value; a sample not exported is an error unless a default is given."""
    key = (name, tuple(sorted(labels.items())))
    if default is not None:
        return samples.get(key, default)
    assert key in samples, f"{name}{labels} is not exported"
    return samples[key]


class TestMetrics:
    def test_counts_summed_across_processes_and_the_queue_per_hop(
        self, tmp_path: Path, dns_server: DnsServer
    ) -> None:
        """Received and delivered (counted in the acceptor and the delivery process),
        deferred, failed, the DSN, an NXDOMAIN, the queue depth of a down hop, the
        oldest message's age and the commit histograms match what the test sent."""
        node = LiveNode(tmp_path, dns={"nameservers": [dns_server.address], "timeout": "2s"})
        node.process.start()
        try:
            api = node.api
            down = [node.send("alice@outside.test", f"d{i}@down.test", f"d{i}") for i in range(3)]
            for i in range(4):
                node.send("alice@outside.test", f"u{i}@corp.test", f"u{i}")
            # No such domain: 550 5.1.2, and a DSN back to the local sender.
            node.send("alice@corp.test", "x@nowhere.test", "nx")
            mailboxes = node.data_dir / "mailboxes"
            wait_until(lambda: len(maildir_messages(mailboxes)) == 5, 15, "local deliveries")
            wait_until(lambda: all(_deferred(api, q) for q in down), 15, "down hop tried")

            samples = _samples(api)
            assert _value(samples, "hubd_smtp_received_total") == 8
            assert _value(samples, "hubd_delivery_delivered_total", via="local") == 5
            assert _value(samples, "hubd_delivery_deferred_total") == 3
            assert _value(samples, "hubd_delivery_failed_total") == 1
            assert _value(samples, "hubd_dsn_generated_total", kind="failure") == 1
            assert _value(samples, "hubd_dns_failures_total", kind="nxdomain", rdtype="MX") == 1
            assert _value(samples, "hubd_queue_depth", next_hop="route:down.test") == 3
            assert [k for k in samples if k[0] == "hubd_queue_depth"] == [
                ("hubd_queue_depth", (("next_hop", "route:down.test"),))
            ]
            assert 0 < _value(samples, "hubd_queue_oldest_message_age_seconds") < 60
            assert _value(samples, "hubd_shadow_held") == 0
            assert _value(samples, "hubd_backpressure_level") == 0
            commits = _value(samples, "hubd_storage_commit_seconds_count")
            assert commits >= 8
            assert _value(samples, "hubd_storage_commit_operations_count") == commits
            assert _value(samples, "hubd_storage_commit_operations_sum") >= 8 + 9
            assert _value(samples, "hubd_storage_lock_wait_seconds_count") == commits
            assert _value(samples, "hubd_storage_lock_wait_seconds_bucket", le="+Inf") == commits
            assert _value(samples, "hubd_storage_operations_total", kind="enqueue") >= 8
        finally:
            node.process.kill()


def _hubd(config: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hubd", "queue", *args, "-c", str(config)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _listed(config: Path, *filters: str) -> set[str]:
    done = _hubd(config, "list", "--json", *filters)
    assert done.returncode == 0, done.stderr
    return {json.loads(line)["queue_id"] for line in done.stdout.splitlines()}


def _through_api(node: LiveNode, action: str, queue_id: str) -> bool:
    """Whether the node's own log shows the change made through its admin API."""
    return f"admin API: {action} {queue_id}" in node.process.log.read_text()


class TestQueueCommands:
    def test_every_command_goes_through_a_running_node(self, tmp_path: Path) -> None:
        """hubd queue list/show/suspend/resume/retry/remove on a live node of one process,
        delivering local mail all along, ask it over admin.sock (its log says so; a retry
        flushes the down hop, which only the node can do), and read the file once it is
        gone, a killed node's socket too."""
        node = LiveNode(tmp_path, processes=1)
        node.process.start()
        config = node.config
        try:
            kept = node.send("alice@outside.test", "bob@down.test", "kept")
            gone = node.send("carol@outside.test", "eve@down.test", "gone")
            wait_until(lambda: _deferred(node.api, kept) and _deferred(node.api, gone), 15, "tries")
            load = 30  # local mail delivered all along
            sender = threading.Thread(
                target=lambda: [
                    node.send("alice@outside.test", f"u{i}@corp.test", f"l{i}") for i in range(load)
                ]
            )
            sender.start()

            assert _listed(config, "--hop", "route:down.test") == {kept, gone}
            assert _listed(config, "--sender", "carol@outside.test") == {gone}
            assert _listed(config, "--state", "HELD") == set()
            assert _listed(config, "--hop", "route:down.test", "--newer-than", "1h") == {kept, gone}
            assert _listed(config, "--older-than", "1h") == set()
            assert _hubd(config, "list", "--state", "LOST").returncode == 2
            shown = _hubd(config, "show", kept)
            assert shown.returncode == 0
            assert "bob@down.test" in shown.stdout
            assert "state: PENDING" in shown.stdout
            missing = _hubd(config, "show", "NOSUCH")
            assert (missing.returncode, missing.stderr) == (
                1,
                "hubd: no message NOSUCH in the queue\n",
            )

            done = _hubd(config, "suspend", kept)
            assert (done.returncode, done.stdout) == (0, f"{kept}: suspend (1 recipient(s))\n")
            assert _through_api(node, "suspend", kept)
            assert _listed(config, "--state", "HELD") == {kept}
            assert _hubd(config, "resume", kept).returncode == 0
            assert _through_api(node, "resume", kept)
            # In bulk, the ids on stdin (as `hubd queue list --json | jq ... | hubd ... -`).
            bulk = _hubd(config, "suspend", "-", stdin=f"{kept}\n{gone}\n")
            assert bulk.returncode == 0, bulk.stderr
            assert _listed(config, "--state", "HELD") == {kept, gone}
            assert _hubd(config, "resume", "ALL").returncode == 0
            assert _listed(config, "--state", "HELD") == set()
            assert _hubd(config, "remove", gone).stdout == f"{gone}: removed\n"
            assert _through_api(node, "remove", gone)
            assert _hubd(config, "remove", gone).returncode == 1

            sink = _Sink()
            controller = Controller(sink, hostname=node.down[0], port=node.down[1])
            controller.start()
            try:
                assert _hubd(config, "retry", kept).returncode == 0
                wait_until(lambda: len(sink.received) == 1, 15, "the retried message delivered")
            finally:
                controller.stop()
            assert _through_api(node, "retry", kept)
            sender.join(60)
            mailboxes = node.data_dir / "mailboxes"
            wait_until(lambda: len(maildir_messages(mailboxes)) == load, 15, "local deliveries")
            wait_until(lambda: _listed(config) == set(), 15, "an empty queue")

            held = node.send("alice@outside.test", "bob@down.test", "after")
            wait_until(lambda: _deferred(node.api, held), 15, "an attempt")
        finally:
            node.process.kill()
        # A killed node left admin.sock behind: nothing answers there, so the file is read.
        assert (node.data_dir / "admin.sock").exists()
        assert _listed(config) == {held}
        done = _hubd(config, "suspend", held)
        assert done.returncode == 0, done.stderr
        assert _listed(config, "--state", "HELD") == {held}
