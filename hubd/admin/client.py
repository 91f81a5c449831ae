"""The CLI's side of the admin API: asking the node that serves <data_dir>/admin.sock.

Owns: the requests `hubd queue list/show/retry/suspend/resume/remove/flush` make of a running
node, with the token from its token file, and telling "no node answers" (the command
then works on the file) from "the node said no" (an error for the user).
Public: AdminClient, ask_node(), NodeNotRunning, AdminError.
Failures: NodeNotRunning when nothing listens on the socket (none there, or a dead
node's); AdminError with the node's own words for any other failure.
See also: hubd/admin/server.py (what answers), hubd/cli.py (_on_node: the switch).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from hubd.admin.filters import QueueFilter
from hubd.admin.token import read_token
from hubd.admin.unix import reachable
from hubd.admin.wire import Selection, filter_query, message_from_json, selection_json
from storage import QueuedMessage

T = TypeVar("T")
TIMEOUT = 30.0  # seconds for one answer: a listing of a big queue takes a while


class NodeNotRunning(Exception):
    """Nothing answers on the admin socket."""


class AdminError(Exception):
    """The node answered, with an error (its message is the node's)."""


class AdminClient:
    """Requests to one running node over an open session."""

    def __init__(self, session: aiohttp.ClientSession, token: str) -> None:
        self._session = session
        self._headers = {"Authorization": f"Bearer {token}"}

    async def _call(
        self,
        method: str,
        path: str,
        params: dict[str, str] | None = None,
        json: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        try:
            async with self._session.request(
                method, f"http://hubd{path}", params=params, json=json, headers=self._headers
            ) as response:
                body = await response.json(content_type=None)
        except aiohttp.ClientConnectorError as error:
            raise NodeNotRunning(str(error)) from None
        except (aiohttp.ClientError, ValueError) as error:
            raise AdminError(f"the node's admin API: {error}") from None
        if response.status != 200:
            raise AdminError(body.get("error", f"HTTP {response.status}"))
        if not isinstance(body, dict):
            raise AdminError("the node's admin API answered something else than an object")
        return body

    async def health(self) -> None:
        """Whether the node answers at all (no token needed)."""
        await self._call("GET", "/healthz")

    async def list_messages(self, selected: QueueFilter) -> list[QueuedMessage]:
        answer = await self._call("GET", "/queue/messages", filter_query(selected))
        return [message_from_json(m) for m in answer["messages"]]

    async def show(self, queue_id: str) -> QueuedMessage:
        return message_from_json(await self._call("GET", f"/queue/messages/{queue_id}"))

    async def change(self, action: str, selection: Selection) -> dict[str, int]:
        """retry, suspend, resume or remove the messages selected; what changed per queue id
        (recipients; 1 for a removed message; 0: nothing to change, or no such message)."""
        answer = await self._call("POST", f"/queue/{action}", json=selection_json(selection))
        return {str(k): int(v) for k, v in answer["changed"].items()}

    async def flush(self, next_hop: str | None) -> int:
        """Every deferred recipient (of `next_hop`, or all) due now, down hops tried again;
        how many recipients were made due."""
        answer = await self._call("POST", "/queue/flush", json={"next_hop": next_hop})
        return int(answer["changed"])


async def _ask(socket: Path, token_file: Path, ask: Callable[[AdminClient], Awaitable[T]]) -> T:
    with reachable(socket) as name:
        timeout = aiohttp.ClientTimeout(total=TIMEOUT)
        connector = aiohttp.UnixConnector(path=name)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            # A stale socket (a killed node's) refuses: tell that before reading the token.
            await AdminClient(session, "").health()
            try:
                token = await asyncio.to_thread(read_token, token_file)
            except (OSError, ValueError) as error:
                raise AdminError(f"the admin token: {error}") from None
            return await ask(AdminClient(session, token))


def ask_node(socket: Path, token_file: Path, ask: Callable[[AdminClient], Awaitable[T]]) -> T:
    """What `ask` gets from the node serving `socket`; NodeNotRunning when none does."""
    if not socket.exists():
        raise NodeNotRunning(f"no {socket}")
    return asyncio.run(_ask(socket, token_file, ask))
