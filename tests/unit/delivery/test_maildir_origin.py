"""Maildir files named after the origin key: every copy of one key finds the first one's file."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hubd.delivery.courier import DeliveryJob
from hubd.delivery.maildir import MaildirCourier
from hubd.queueid import new_queue_id, queue_id_time
from hubd.routing import HopKind, NextHop
from storage import ClaimedRecipient, StoredBody

T0 = 1_700_000_000.0
ORIGIN = f"h1.0123456789abcdef.{new_queue_id(T0, random.Random(1))}"


def _job(queue_id: str, received_at: float, origin: str, *addresses: str) -> DeliveryJob:
    recipients = [
        ClaimedRecipient(
            recipient_id=n,
            address=address,
            attempts=0,
            message=1,
            queue_id=queue_id,
            sender="alice@client.test",
            received_at=received_at,
            size=10,
            message_id=None,
            origin=origin,
            envid="",
            ret="",
            notify="",
            orcpt="",
            delay_notified=False,
            lease_owner="run-1",
        )
        for n, address in enumerate(addresses)
    ]
    return DeliveryJob(
        NextHop(HopKind.LOCAL, "corp.test"),
        queue_id,
        "alice@client.test",
        received_at,
        None,
        StoredBody(b"Subject: x\r\n\r\nx\r\n"),
        recipients,
        origin,
    )


def _files(root: Path) -> list[Path]:
    return sorted(root.glob("corp.test/*/new/*"))


class TestQueueIdTime:
    @given(st.floats(min_value=0, max_value=(2**48 - 1) / 1000), st.integers(min_value=0))
    def test_round_trip(self, now: float, seed: int) -> None:
        """The time a queue id records is the millisecond it was made in."""
        made = new_queue_id(now, random.Random(seed))
        assert queue_id_time(made) == int(now * 1000) / 1000

    @pytest.mark.parametrize(
        "queue_id",
        ["", "ORIG000157", "02Q32G3GBF1GHCGG8L", "02Q32G3GBF1GHCGG8LAA", "02Q32G3GBF1GHCGG8La"],
        ids=["empty", "foreign", "short", "long", "lower-case"],
    )
    def test_not_one_of_ours(self, queue_id: str) -> None:
        """An id of another shape records no time."""
        assert queue_id_time(queue_id) is None


class TestCopiesOfOneOriginKey:
    async def test_second_copy_finds_the_first(self, tmp_path: Path) -> None:
        """A copy with its own queue id and time of receipt writes no second file."""
        courier = MaildirCourier(tmp_path, "m.hubd.test")
        first = await courier.deliver(_job("0AAAA", T0 + 5, ORIGIN, "bob@corp.test"))
        again = await courier.deliver(_job("0BBBB", T0 + 65, ORIGIN, "BOB@corp.test"))
        assert [r.text for r in first + again] == [
            "2.0.0 Delivered to mailbox",
            "2.0.0 Already in mailbox",
        ]
        (name,) = [path.name for path in _files(tmp_path)]
        assert name.startswith(f"{int(T0)}.{ORIGIN.rpartition('.')[2]}_")

    @pytest.mark.parametrize(
        ("other_origin", "other_recipient"),
        [
            (ORIGIN.replace("h1.", "h9."), "bob@corp.test"),
            (ORIGIN.replace("0123456789abcdef", "fedcba9876543210"), "bob@corp.test"),
            (ORIGIN, "carol@corp.test"),
        ],
        ids=["other-node", "other-incarnation", "other-recipient"],
    )
    async def test_other_keys_get_their_own_file(
        self, tmp_path: Path, other_origin: str, other_recipient: str
    ) -> None:
        """Another origin key, even with the same queue id, or another recipient: two files."""
        courier = MaildirCourier(tmp_path, "m.hubd.test")
        await courier.deliver(_job("0AAAA", T0, ORIGIN, "bob@corp.test"))
        result = await courier.deliver(_job("0BBBB", T0, other_origin, other_recipient))
        assert result[0].text == "2.0.0 Delivered to mailbox"
        assert len(_files(tmp_path)) == 2

    async def test_foreign_origin_id_still_names_one_file(self, tmp_path: Path) -> None:
        """An origin whose queue id records no time still gives one name per key."""
        courier = MaildirCourier(tmp_path, "m.hubd.test")
        origin = "h1.0123456789abcdef.ORIG000157"
        await courier.deliver(_job("0AAAA", T0 + 0.9, origin, "bob@corp.test"))
        await courier.deliver(_job("0BBBB", T0 + 1.2, origin, "bob@corp.test"))
        assert len(_files(tmp_path)) == 1
