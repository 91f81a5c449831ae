"""`hubd track` answers an operator's questions from a real cluster's tracking logs.

Mail goes through the hubs of a local cluster in three batches; the middle batch is the
"between 9 and 10" window. Every answer is checked against what the test sent, through the
real command line (`python -m hubd track --cluster DIR ...`).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from hubd.testing import Cluster, Sent, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BATCH = {"hub-1": 3, "hub-2": 2, "hub-3": 1}
ALICE = "alice@example.org"


def track(cluster: Cluster, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "hubd", "track", "--cluster", str(cluster.directory), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines()]


@dataclass(frozen=True, slots=True)
class Mail:
    sent: Sent
    sender: str
    recipient: str


def send_batch(cluster: Cluster, tag: str) -> list[Mail]:
    """Per hub its share of the batch to bob@corp.test, every other one from alice, and one
    from alice to the outside; returns once every hub has sent its part on."""
    mails = []
    for hub, count in BATCH.items():
        for i in range(count):
            sender = ALICE if i % 2 == 0 else f"other-{tag}@example.org"
            sent = cluster.send("bob@corp.test", sender=sender, via=hub, subject=tag)
            mails.append(Mail(sent, sender, "bob@corp.test"))
    sent = cluster.send("friend@example.net", sender=ALICE, via="hub-1", subject=tag)
    mails.append(Mail(sent, ALICE, "friend@example.net"))
    for mail in mails:
        wait_until(
            lambda m=mail.sent: any(
                e["message_id"] == m.message_id for e in cluster.events(m.via, "SEND")
            ),
            60,
            f"{mail.sent.message_id} sent on by {mail.sent.via}",
        )
    return mails


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def test_operator_questions(hubd_cluster: Cluster) -> None:
    """Sends per hub in a window, messages from one sender, deliveries to one recipient."""
    before = send_batch(hubd_cluster, "before")
    start = now()
    window = send_batch(hubd_cluster, "window")
    end = now()
    after = send_batch(hubd_cluster, "after")
    everything = before + window + after
    wait_until(
        lambda: (
            len(json_lines(track(hubd_cluster, "--event", "DELIVER", "--json"))) == len(everything)
        ),
        60,
        "every message delivered",
    )

    # How many messages did each hub send between the window's start and end?
    per_node = json_lines(
        track(
            hubd_cluster,
            "--event",
            "SEND",
            "--start",
            start,
            "--end",
            end,
            "--count-by",
            "node",
            "--json",
        )
    )
    expected = Counter(m.sent.via for m in window)
    assert {str(row["node"]): row["count"] for row in per_node} == dict(expected)
    table = track(hubd_cluster, "-e", "send", "--start", start, "--end", end, "--count-by", "node")
    assert table.splitlines()[0].split() == ["node", "count"]
    assert table.splitlines()[-1].split() == ["total", str(len(window))]

    # Messages from one sender: delivered ones, wherever their final hop is.
    from_alice = json_lines(track(hubd_cluster, "--sender", ALICE, "--event", "DELIVER", "--json"))
    alices = {m.sent.message_id for m in everything if m.sender == ALICE}
    assert sorted(str(e["message_id"]) for e in from_alice) == sorted(alices)
    assert {e["node"] for e in from_alice} == {"mbx-1", "outside-1"}
    counted = track(hubd_cluster, "--sender", ALICE, "-e", "DELIVER", "--count")
    assert counted.strip() == str(len(alices))

    # To one recipient: every message bob got, in time order, with RFC 3339 times.
    to_bob = json_lines(
        track(hubd_cluster, "--recipient", "BOB@corp.test", "-e", "DELIVER", "--json")
    )
    bobs = {m.sent.message_id for m in everything if m.recipient == "bob@corp.test"}
    assert sorted(str(e["message_id"]) for e in to_bob) == sorted(bobs)
    times = [str(e["time"]) for e in to_bob]
    assert times == sorted(times)
    assert all(t.endswith("Z") and datetime.fromisoformat(t) for t in times)

    # One message's whole path, by its Message-ID, across the nodes.
    first = window[0].sent.message_id
    path = json_lines(track(hubd_cluster, "--message-id", first, "--json"))
    steps = [(e["node"], e["event"]) for e in path]
    assert steps[0] == ("hub-1", "RECEIVE")
    assert {("hub-1", "SEND"), ("mbx-1", "RECEIVE"), ("mbx-1", "DELIVER")} <= set(steps)
    on_mbx = track(hubd_cluster, "--message-id", first, "--node", "mbx-1", "--count")
    assert on_mbx.strip() == str(sum(1 for e in path if e["node"] == "mbx-1"))
