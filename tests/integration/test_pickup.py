"""Pickup and replay directories on a running node: good, malformed, half-written, huge files.

Files go in the way an application would drop them (written beside, then renamed in), and
come out in the mailboxes, through the node's queue, with a SUBMIT tracking line each.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from hubd.node import Node
from hubd.testing import async_wait_until, maildir_messages
from hubd.tracking import read_events
from tests.conftest import NodeFactory

pytestmark = pytest.mark.integration

LOCAL = {"local_domains": ["corp.test"], "pickup": {"interval": "100ms"}}


def drop(directory: Path, name: str, data: bytes) -> Path:
    """Write a file beside the directory's files and rename it in, as applications should."""
    temporary = directory / f"{name}.tmp"
    temporary.write_bytes(data)
    final = directory / name
    temporary.rename(final)
    return final


def message(to: str, tag: str, extra: str = "") -> bytes:
    return (
        f"From: app@corp.test\nTo: {to}\n{extra}Subject: {tag}\nMessage-ID: <{tag}@app.test>\n\n"
        f"body of {tag}\n"
    ).encode()


def mailbox(node: Node, local: str) -> dict[Path, bytes]:
    return maildir_messages(node.config.mailbox_dir / "corp.test" / local)


def events(node: Node, event: str) -> list[dict[str, object]]:
    return [e for e in read_events(node.config.node.data_dir / "tracking") if e["event"] == event]


async def next_scans(node: Node, count: int = 2) -> None:
    """Wait until the pickup task has finished `count` more scans."""
    assert node.pickup is not None
    target = node.pickup.scans + count
    pickup = node.pickup
    await async_wait_until(lambda: pickup.scans >= target, 10, f"{count} pickup scans")


class TestPickup:
    async def test_good_file_is_delivered_and_removed(self, start_node: NodeFactory) -> None:
        """A dropped .eml reaches To, Cc and Bcc recipients, without its Bcc header."""
        node = await start_node("pk", **LOCAL)
        pickup_dir = node.config.node.data_dir / "pickup"
        assert stat.S_IMODE(pickup_dir.stat().st_mode) == 0o700
        assert stat.S_IMODE((node.config.node.data_dir / "replay").stat().st_mode) == 0o700
        dropped = drop(
            pickup_dir,
            "one.eml",
            message("bob@corp.test", "one", "Cc: carol@corp.test\nBcc: dave@corp.test\n"),
        )

        for local in ("bob", "carol", "dave"):
            await async_wait_until(lambda local=local: mailbox(node, local), 15, f"{local}'s copy")
        (stored,) = mailbox(node, "dave").values()
        assert b"Subject: one\r\n" in stored
        header_section = stored.partition(b"\r\n\r\n")[0]
        assert b"Bcc" not in header_section
        assert b"dave" not in header_section
        assert b"(hubd, from the pickup directory)" in stored
        assert not dropped.exists()
        (submit,) = events(node, "SUBMIT")
        assert submit["source"] == "pickup"
        assert submit["file"] == "one.eml"
        assert submit["message_id"] == "<one@app.test>"
        assert sorted(submit["recipients"]) == [
            "bob@corp.test",
            "carol@corp.test",
            "dave@corp.test",
        ]  # type: ignore[arg-type]

    async def test_replay_file(self, start_node: NodeFactory) -> None:
        """A replay file goes to its X-Receiver addresses, not to the To: header's."""
        node = await start_node("rp", **LOCAL)
        drop(
            node.config.node.data_dir / "replay",
            "r.eml",
            b"X-Sender: <>\nX-Receiver: <erin@corp.test>\nFrom: MAILER-DAEMON@corp.test\n"
            b"To: frank@corp.test\nSubject: replayed\nMessage-ID: <r@corp.test>\n\nreplayed body\n",
        )
        await async_wait_until(lambda: mailbox(node, "erin"), 15, "erin's copy")
        (stored,) = mailbox(node, "erin").values()
        assert stored.startswith(b"Return-Path: <>\r\n")
        assert b"X-Receiver" not in stored
        assert b"X-Sender" not in stored
        await next_scans(node)
        assert not mailbox(node, "frank")
        (submit,) = events(node, "SUBMIT")
        assert (submit["source"], submit["sender"]) == ("replay", "")

    async def test_bad_files_are_set_aside_with_a_reason(self, start_node: NodeFactory) -> None:
        """Malformed and huge files are renamed .bad with a .reason beside; nothing is queued."""
        node = await start_node("bad", **LOCAL, smtp={"max_message_size": 64 * 1024})
        pickup_dir = node.config.node.data_dir / "pickup"
        cases = {
            "nofrom": (b"To: bob@corp.test\n\nno sender\n", "From: must hold exactly one address"),
            "garbage": (os.urandom(2048).replace(b"\x00", b"") + b"\x00", "NUL bytes"),
            "notmail": (b"just some text\nwith lines\n", "does not start with a header section"),
            "badrcpt": (b"From: a@corp.test\nTo: <<<>>>\n\nx\n", "To: "),
            "huge": (
                message("bob@corp.test", "huge") + (b"y" * 900 + b"\n") * 100,  # about 90 KiB
                "larger than smtp.max_message_size (65536 bytes)",
            ),
        }
        for name, (data, _) in cases.items():
            drop(pickup_dir, f"{name}.eml", data)
        fine = drop(pickup_dir, "fine.eml", message("bob@corp.test", "fine"))

        await async_wait_until(lambda: mailbox(node, "bob"), 15, "the good file's delivery")
        await async_wait_until(
            lambda: len(list(pickup_dir.glob("*.reason"))) == len(cases),
            15,
            "every bad file set aside",
        )
        for name, (data, reason) in cases.items():
            assert (pickup_dir / f"{name}.bad").read_bytes() == data, "set aside untouched"
            assert reason in (pickup_dir / f"{name}.reason").read_text()
            assert not (pickup_dir / f"{name}.eml").exists()
        assert not fine.exists()
        assert len(events(node, "SUBMIT")) == 1
        assert node.repository is not None
        queued = await node.repository.list_messages()
        assert all(m.sender == "app@corp.test" for m in queued), "only the good file was queued"

    async def test_second_bad_file_of_a_name_keeps_the_first(self, start_node: NodeFactory) -> None:
        """A second bad file of the same name is set aside beside the first, not over it."""
        node = await start_node("bad2", **LOCAL)
        pickup_dir = node.config.node.data_dir / "pickup"
        drop(pickup_dir, "x.eml", b"first bad\n")
        await async_wait_until((pickup_dir / "x.bad").exists, 10, "x.bad")
        drop(pickup_dir, "x.eml", b"second bad\n")
        await async_wait_until((pickup_dir / "x-1.bad").exists, 10, "x-1.bad")
        assert (pickup_dir / "x.bad").read_bytes() == b"first bad\n"
        assert (pickup_dir / "x-1.bad").read_bytes() == b"second bad\n"
        assert (pickup_dir / "x-1.reason").exists()


class TestNotYetWritten:
    async def test_tmp_and_empty_files_wait(self, start_node: NodeFactory) -> None:
        """A .tmp file and an empty .eml are left alone, scan after scan, until complete."""
        node = await start_node("half", **LOCAL)
        pickup_dir = node.config.node.data_dir / "pickup"
        being_written = pickup_dir / "big.eml.tmp"
        with being_written.open("wb") as handle:
            handle.write(message("gina@corp.test", "half")[:40])  # half a header section
            handle.flush()
            empty = pickup_dir / "empty.eml"
            empty.touch()
            await next_scans(node, 3)
            assert being_written.exists()
            assert empty.exists()
            assert not list(pickup_dir.glob("*.bad"))
            handle.write(message("gina@corp.test", "half")[40:])
        being_written.rename(pickup_dir / "big.eml")
        empty.write_bytes(message("hank@corp.test", "was-empty"))

        await async_wait_until(lambda: mailbox(node, "gina") and mailbox(node, "hank"), 15, "both")
        (stored,) = mailbox(node, "gina").values()
        assert stored.endswith(b"body of half\r\n"), "taken whole, never half"
        assert not list(pickup_dir.iterdir())

    async def test_pause_and_resume(self, start_node: NodeFactory) -> None:
        """A paused pickup takes nothing (back pressure); resumed, it takes what waited."""
        node = await start_node("pause", **LOCAL)
        pickup = node.pickup
        assert pickup is not None
        pickup.pause()
        assert pickup.paused
        dropped = drop(node.config.node.data_dir / "pickup", "p.eml", message("ivy@corp.test", "p"))
        long_ago = dropped.stat().st_mtime - 60
        os.utime(dropped, (long_ago, long_ago))  # ready by every rule but the pause
        assert await pickup.scan() == 0
        assert dropped.exists()
        pickup.resume()
        await async_wait_until(lambda: mailbox(node, "ivy"), 15, "ivy's copy after resume")
        assert not dropped.exists()

    async def test_disabled(self, start_node: NodeFactory) -> None:
        """pickup.enabled = false: no directories, no task."""
        node = await start_node("off", local_domains=["corp.test"], pickup={"enabled": False})
        assert node.pickup is None
        assert not (node.config.node.data_dir / "pickup").exists()


class TestTakenByADeadRun:
    """The state a kill -9 between commit and removal leaves: a committed file still there.

    It is made for real: a hard link keeps the file's inode while the pickup takes it, and
    linking it back puts the very same file (name, inode, size, mtime) back in place.
    """

    async def test_still_queued_is_removed_not_resubmitted(
        self, tmp_path: Path, start_node: NodeFactory
    ) -> None:
        """A committed file whose message is still queued is removed, not submitted again."""
        # Mail for example.org goes to a closed port, so it stays in the queue.
        node = await start_node(
            "dead1",
            **LOCAL,
            routes=[{"domains": ["example.org"], "next_hops": ["127.0.0.1:9"]}],
        )
        pickup_dir = node.config.node.data_dir / "pickup"
        keep = tmp_path / "keep"
        path = drop(pickup_dir, "q.eml", message("someone@example.org", "q"))
        os.link(path, keep)
        await async_wait_until(lambda: not path.exists(), 10, "the pickup to take it")
        assert node.repository is not None
        (queued,) = await node.repository.list_messages()

        os.link(keep, path)  # the file is back, as if its removal had never happened
        await async_wait_until(lambda: not path.exists(), 10, "the pickup to remove it again")
        assert [m.queue_id for m in await node.repository.list_messages()] == [queued.queue_id]
        assert len(events(node, "SUBMIT")) == 1

    async def test_already_delivered_arrives_once(
        self, tmp_path: Path, start_node: NodeFactory
    ) -> None:
        """A committed file whose message was already delivered is dropped at final delivery."""
        node = await start_node("dead2", **LOCAL)
        pickup_dir = node.config.node.data_dir / "pickup"
        keep = tmp_path / "keep"
        path = drop(pickup_dir, "d.eml", message("jill@corp.test", "d"))
        os.link(path, keep)
        await async_wait_until(lambda: mailbox(node, "jill"), 15, "the first delivery")
        assert node.repository is not None
        await async_wait_until(node.repository.list_messages, 1, "not this") if False else None
        await async_wait_until(lambda: events(node, "DELIVER"), 10, "the DELIVER line")

        os.link(keep, path)
        await async_wait_until(lambda: events(node, "DUPLICATE"), 15, "the second copy dropped")
        assert len(mailbox(node, "jill")) == 1
        first, second = events(node, "SUBMIT")
        assert first["queue_id"] == second["queue_id"], "the same file, the same queue id"
