"""The local cluster and the public test fixture, as a user's failover tests would use them."""

from __future__ import annotations

import json
import os
import re
import signal
import smtplib
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hubd.cluster.layout import load_layout
from hubd.testing import Cluster, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _hubd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hubd", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


class TestUserFailover:
    def test_message_held_on_a_hub_survives_its_crash(self, hubd_cluster: Cluster) -> None:
        """Held on a hub (mailstore down), that hub crashes; it still arrives exactly once."""
        hubd_cluster.stop("mbx-1")
        sent = hubd_cluster.send("bob@corp.test", via="hub-1")
        # With the mailstore down each hub hands the message on to the next one, keeping a
        # shadow; the last hub holds it in its queue.
        holder, upstream = hubd_cluster.hubs[-1], hubd_cluster.hubs[-2]
        wait_until(lambda: hubd_cluster.queued(holder) == 1, 30, f"the message queued on {holder}")
        wait_until(lambda: hubd_cluster.shadows(upstream) == 1, 30, f"{upstream}'s shadow")

        hubd_cluster.kill(holder)
        hubd_cluster.wait_for_event(upstream, "RESUBMIT", within=30)
        hubd_cluster.start("mbx-1")
        hubd_cluster.wait_for_message("bob@corp.test", sent.message_id, within=60)
        hubd_cluster.start(holder)  # it comes back with its queue: its copy must not arrive

        def dropped() -> bool:
            return bool(
                hubd_cluster.events(holder, "DUPLICATE") + hubd_cluster.events("mbx-1", "DUPLICATE")
            )

        wait_until(dropped, 60, f"{holder}'s copy to be dropped")
        assert hubd_cluster.copies("bob@corp.test", sent.message_id) == 1

    def test_hub_disk_wiped_mid_flow(self, hubd_cluster: Cluster) -> None:
        """A hub that holds mail loses its disk; the upstream's shadows deliver it all once."""
        hubd_cluster.stop("mbx-1")
        sent = [
            hubd_cluster.send("carol@corp.test", via="hub-1", subject=f"m{n}") for n in range(5)
        ]
        holder = hubd_cluster.hubs[-1]
        wait_until(lambda: hubd_cluster.queued(holder) == 5, 30, f"five messages on {holder}")
        hubd_cluster.wipe(holder)
        hubd_cluster.start(holder)  # a new, empty queue: a new incarnation
        hubd_cluster.start("mbx-1")
        for message in sent:
            hubd_cluster.wait_for_message("carol@corp.test", message.message_id, within=90)
        assert [hubd_cluster.copies("carol@corp.test", m.message_id) for m in sent] == [1] * 5

    def test_cluster_and_outside_domains(self, hubd_cluster: Cluster) -> None:
        """The relay port and the submission port (STARTTLS, AUTH as the ready user) of any
        hub reach corp.test, and example.net by MX; every hop is TLS, verified against the
        cluster's CA."""
        user, password = hubd_cluster.credentials
        assert password
        assert hubd_cluster.ca_file.is_file()
        for hub in hubd_cluster.hubs:
            for address in (hubd_cluster.relay(hub), hubd_cluster.submission(hub)):
                mid = f"<{hub}.{address.port}@app>"
                data = f"Subject: {hub}\r\nMessage-ID: {mid}\r\n\r\nhi\r\n".encode()
                with smtplib.SMTP(address.host, address.port, timeout=30) as client:
                    sender = "app@example.org"
                    if address == hubd_cluster.submission(hub):
                        client.starttls(context=hubd_cluster.tls_context())
                        client.login(user, password)
                        sender = "client@corp.test"
                    client.sendmail(sender, ["dave@corp.test", "erin@example.net"], data)
                for rcpt in ("dave@corp.test", "erin@example.net"):
                    received = hubd_cluster.wait_for_message(rcpt, mid, within=60)
                    # The final hop's own Received: (the top one) says the hub that handed
                    # the message on did so under TLS.
                    top = str(received.get_all("Received", [""])[0])
                    assert re.search(r"with ESMTPS(?!A)", top), top
        assert hubd_cluster.events("hub-1", "SEND")
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            hubd_cluster.send("dave@corp.test", submission=True, sender="app@example.org")
        assert refused.value.smtp_code == 553
        sent = hubd_cluster.send("dave@corp.test", submission=True, sender="client@corp.test")
        hubd_cluster.wait_for_message("dave@corp.test", sent.message_id, within=60)


class TestClusterCommands:
    def test_two_clusters_and_leftovers(self, tmp_path: Path) -> None:
        """Two clusters side by side do not collide; a killed one leaves nothing that blocks up."""
        with Cluster(tmp_path / "one", hubs=1) as one, Cluster(tmp_path / "two", hubs=1) as two:
            assert one.relay().host != two.relay().host
            for cluster in (one, two):
                sent = cluster.send("frank@corp.test")
                cluster.wait_for_message("frank@corp.test", sent.message_id, within=90)
            for plan in one._layout().nodes:
                os.kill(int(plan.pid_file.read_text()), signal.SIGKILL)
            result = _hubd(
                "cluster", "up", "--detach", "--nodes", "1", "--dir", str(tmp_path / "one")
            )
            assert result.returncode == 0, result.stderr
            statuses = json.loads(
                _hubd("cluster", "status", "--json", "--dir", str(tmp_path / "one")).stdout
            )
            assert {s["state"] for s in statuses} == {"up"}
            assert (
                _hubd("cluster", "up", "--detach", "--dir", str(tmp_path / "one")).returncode == 1
            )

    def test_status_sees_a_kill_within_five_seconds(self, hubd_cluster: Cluster) -> None:
        """`hubd cluster status` reports a killed node as down within 5 seconds."""
        directory = str(hubd_cluster.directory)
        assert _hubd("cluster", "kill", "hub-3", "--dir", directory).returncode == 0
        started = time.monotonic()

        def down() -> bool:
            listing = json.loads(_hubd("cluster", "status", "--json", "--dir", directory).stdout)
            return any(s["name"] == "hub-3" and s["state"] == "down" for s in listing)

        wait_until(down, 5, "hub-3 reported down")
        assert time.monotonic() - started < 5
        fields = json.loads(_hubd("cluster", "status", "--json", "--dir", directory).stdout)[0]
        assert set(fields) >= {"name", "role", "state", "relay", "submission", "data_dir"}

    def test_up_in_the_foreground_and_ctrl_c(self, tmp_path: Path) -> None:
        """`hubd cluster up` serves in the foreground; SIGINT stops every process it started."""
        directory = tmp_path / "fg"
        with subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hubd",
                "cluster",
                "up",
                "--nodes",
                "1",
                "--dir",
                str(directory),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        ) as process:
            assert process.stdout is not None
            lines: list[str] = []
            for line in process.stdout:
                lines.append(line)
                if line.startswith("nodes up"):
                    break
            assert any("all nodes accept mail" in line for line in lines), lines
            layout = load_layout(directory)
            pids = [int(plan.pid_file.read_text()) for plan in layout.nodes]
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=60) == 0
        for pid in pids:
            assert (
                not Path(f"/proc/{pid}").exists()
                or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
            )
