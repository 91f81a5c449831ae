"""/readyz and /healthz of the admin API through its start-up, back pressure and stop,
over a real unix socket in a data directory too deep for sun_path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from hubd.admin.server import AdminServer
from hubd.admin.unix import reachable
from hubd.config import parse_config
from storage import Repository, Writer, open_database

pytestmark = pytest.mark.integration


async def _get(socket: Path, path: str) -> tuple[int, Any]:
    with reachable(socket) as name:
        async with (
            aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=name)) as session,
            session.get(f"http://hubd{path}") as response,
        ):
            return response.status, await response.json()


async def test_ready_only_once_started_and_not_at_high(tmp_path: Path) -> None:
    """503 while starting (the queue routes too, and no token yet), 200 once every
    process is up, 503 at High back pressure and once stopping; /healthz says ok."""
    data_dir = tmp_path / ("deep-" * 20) / "node"
    config = parse_config({"node": {"name": "r", "data_dir": str(data_dir)}})
    level = 0
    server = AdminServer(config, pressure=lambda: level)
    await server.start()
    database = await open_database(data_dir / "queue.db")
    writer = Writer(database.write_engine)
    writer.start()
    socket = server.socket_path
    assert len(str(socket)) > 107
    try:
        assert await _get(socket, "/readyz") == (503, {"ready": False, "reason": "starting"})
        assert await _get(socket, "/healthz") == (200, {"status": "ok", "node": "r"})
        assert (await _get(socket, "/queues"))[0] == 503
        assert not config.admin_token_file.exists()  # made once the queue is open
        server.attach(Repository(database, writer), lambda: None)
        server.set_ready(True)
        assert await _get(socket, "/readyz") == (200, {"ready": True})
        level = 2
        status, body = await _get(socket, "/readyz")
        assert (status, body["reason"]) == (503, "back pressure is High")
        level = 1
        assert (await _get(socket, "/readyz"))[0] == 200
        server.set_ready(False)
        assert (await _get(socket, "/readyz"))[0] == 503
    finally:
        await server.stop()
        await writer.stop()
        await database.close()
    assert not socket.exists()
