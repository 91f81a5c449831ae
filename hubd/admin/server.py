"""The admin API's HTTP side: routes, the bearer token, and the sockets it is served on.

Owns: GET /healthz, /readyz, /metrics (hubd/admin/metrics.py), /queues, /queue/messages
(filters), /queue/messages/{id} (recipients and history); POST
/queue/messages/{id}/{action} and /queue/{action} (several ids, a next hop, or all; the
action one of retry, suspend, resume, remove, and in bulk redirect with `"to"`; a removal
with `"dsn": true` queues each sender's failure DSN in the same transaction); POST
/queue/flush (`{"next_hop": H}` or null: every deferred recipient due now, and down hops
tried again); the token check on everything but /metrics, /healthz and /readyz; serving
on <data_dir>/admin.sock (mode 0600, always) and on `[admin] listen` (when set).
Public: AdminServer, serving(), PUBLIC_PATHS.
Failures: OSError from start() when a socket cannot be bound (the node does not start);
requests get JSON errors: 400 bad filter, 401 no or wrong token, 404 no such message,
503 while the node starts or stops.
Limits: reads go through a read-only engine of its own (mode=ro, aiosqlite), never the
node's; writes through the repository of the process that serves the API. Runs in the
queue's one owner: the supervisor, or a node of one process (docs/design.md).
See also: hubd/admin/client.py (the CLI's side), hubd/admin/wire.py (the JSON forms).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from hubd.admin.metrics import CONTENT_TYPE, scrape
from hubd.admin.token import ensure_token
from hubd.admin.unix import reachable
from hubd.admin.wire import (
    filter_from_query,
    flush_hop_from_json,
    message_json,
    rfc3339,
    selection_from_json,
)
from hubd.backpressure import Level
from hubd.config import Config
from hubd.queue_changes import apply_change, removal_notices, select_ids
from storage import QueueReader, Repository, Spool, open_reader

log = logging.getLogger(__name__)

PUBLIC_PATHS = frozenset({"/metrics", "/healthz", "/readyz"})
ACTIONS = ("retry", "suspend", "resume", "remove")
BULK_ACTIONS = (*ACTIONS, "redirect")  # a redirect names where to: in the body
SOCKET_MODE = 0o600

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class _Attached:
    """The running node's queue, once it is open."""

    reader: QueueReader
    engine: AsyncEngine
    control: Repository
    flush: Callable[[], None]  # after a retry: delivery tries down hops again, now


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


class AdminServer:
    """The admin API of one node, started before its children and stopped after them."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Callable[[], float] = time.time,
        pressure: Callable[[], Level] = lambda: Level.NORMAL,
    ) -> None:
        self.config = config
        self._clock = clock
        # The node's back-pressure level, set by whoever runs the node once it has one.
        self.pressure = pressure
        self._token = ""
        self._runner: web.AppRunner | None = None
        self._attached: _Attached | None = None
        self._ready = False
        self.socket_path = config.node.data_dir / "admin.sock"

    # -- life -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind admin.sock and `[admin] listen`: health answers from now on."""
        config = self.config
        config.node.data_dir.mkdir(parents=True, exist_ok=True)
        app = web.Application(middlewares=[self._authorise])
        self._routes(app)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        self._runner = runner
        # Under the data-directory lock: a socket file left here is a dead run's.
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        with reachable(self.socket_path) as name:
            await web.UnixSite(runner, name).start()
            os.chmod(name, SOCKET_MODE)
        listen = config.admin.listen
        if listen is not None:
            await web.TCPSite(runner, listen.host, listen.port).start()
            port = next(a[1] for a in runner.addresses if isinstance(a, tuple))  # if it was 0
            log.info("admin API on http://%s", listen.model_copy(update={"port": port}))

    def attach(self, control: Repository, flush: Callable[[], None]) -> None:
        """The queue is open: serve it (until then the guarded routes answer 503).

        The token is made here, at the first start that got this far, so that a node that
        cannot open its queue leaves nothing new behind.
        """
        self._token = ensure_token(self.config.admin_token_file)
        path = self.config.node.data_dir / "queue.db"
        engine = open_reader(path)
        reader = QueueReader(engine, Spool(path.with_name("spool")))
        self._attached = _Attached(reader, engine, control, flush)

    def set_ready(self, ready: bool) -> None:
        """Every process of the node is up (True), or the node began to stop (False)."""
        self._ready = ready

    async def stop(self) -> None:
        self._ready = False
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        if self._attached is not None:
            await self._attached.engine.dispose()
            self._attached = None

    # -- HTTP -----------------------------------------------------------------------------

    def _routes(self, app: web.Application) -> None:
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/queues", self._queues)
        app.router.add_get("/queue/messages", self._messages)
        app.router.add_get("/queue/messages/{queue_id}", self._message)
        app.router.add_post("/queue/messages/{queue_id}/{action}", self._change)
        app.router.add_post("/queue/flush", self._flush)  # before /queue/{action}: it wins
        app.router.add_post("/queue/{action}", self._change_many)

    @web.middleware
    async def _authorise(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in PUBLIC_PATHS:
            return await handler(request)
        if not self._token:
            return _error(503, "the node is starting")
        given = request.headers.get("Authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(
            token.strip().encode(), self._token.encode()
        ):
            return _error(
                401,
                "a bearer token is required (Authorization: Bearer <token from admin.token>)",
                **{"WWW-Authenticate": 'Bearer realm="hubd"'},
            )
        return await handler(request)

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "node": self.config.node.name})

    async def _readyz(self, _request: web.Request) -> web.Response:
        reason = self._not_ready()
        if reason is not None:
            return web.json_response({"ready": False, "reason": reason}, status=503)
        return web.json_response({"ready": True})

    async def _metrics(self, _request: web.Request) -> web.Response:
        reader = self._attached.reader if self._attached is not None else None
        body = await scrape(reader, self.pressure(), self._clock())
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    def _not_ready(self) -> str | None:
        if not self._ready:
            return "starting" if self._attached is None else "not every process is up"
        if self.pressure() >= Level.HIGH:
            return "back pressure is High"
        return None

    def _queue(self) -> _Attached:
        assert self._attached is not None  # _authorise answered 503 until it was
        return self._attached

    async def _queues(self, _request: web.Request) -> web.Response:
        depths = await self._queue().reader.depths()
        return web.json_response(
            {
                "next_hops": [
                    {
                        "next_hop": hop.next_hop,
                        "pending": hop.pending,
                        "held": hop.held,
                        "oldest_received_at": rfc3339(hop.oldest) if hop.oldest else None,
                    }
                    for hop in depths.hops
                ],
                "shadows_held": depths.shadows_held,
                "notices_owed": depths.notices_owed,
            }
        )

    async def _messages(self, request: web.Request) -> web.Response:
        try:
            selected = filter_from_query(request.query)
        except ValueError as error:
            return _error(400, str(error))
        messages = await self._queue().reader.list_messages()
        now = self._clock()

        def listing() -> str:  # a second or so for 100,000 messages: not on the event loop
            chosen = selected.select(messages, now)
            return json.dumps({"messages": [message_json(m) for m in chosen]})

        return web.Response(text=await asyncio.to_thread(listing), content_type="application/json")

    async def _message(self, request: web.Request) -> web.Response:
        queue_id = request.match_info["queue_id"]
        found = await self._queue().reader.list_messages(queue_id)
        if not found:
            return _error(404, f"no message {queue_id} in the queue")
        (message,) = found
        history = await asyncio.to_thread(self._history, queue_id, message.received_at)
        return web.json_response({**message_json(message), "history": history})

    def _history(self, queue_id: str, received_at: float) -> list[dict[str, Any]]:
        """The message's tracking events, oldest first (read in a thread: files)."""
        from hubd.tracking_files import read_events
        from hubd.tracking_query import TrackFilter, search

        since = datetime.fromtimestamp(received_at, UTC)
        selected = TrackFilter.build(queue_ids=[queue_id], start=since.replace(microsecond=0))
        directory = self.config.node.data_dir / "tracking"
        events = read_events(directory, selected.first_day(), selected.last_day())
        return [dict(record.line) for record in search([events], selected)]

    async def _change(self, request: web.Request) -> web.Response:
        queue_id, action = request.match_info["queue_id"], request.match_info["action"]
        if action not in ACTIONS:
            return _error(404, f"no action {action!r} (known: {', '.join(ACTIONS)})")
        queue = self._queue()
        if not await queue.reader.list_messages(queue_id):
            return _error(404, f"no message {queue_id} in the queue")
        try:
            changed = await _apply(queue.control, queue_id, action, self._clock())
        except RuntimeError:  # the writer stopped: the node is going down
            return _error(503, "the node is stopping")
        if action in ("retry", "resume") and changed:
            queue.flush()
        log.info("admin API: %s %s (%d changed)", action, queue_id, changed)
        return web.json_response({"queue_id": queue_id, "action": action, "changed": changed})

    async def _flush(self, request: web.Request) -> web.Response:
        try:
            hop = flush_hop_from_json(await request.json())
        except ValueError as error:  # not JSON, or not the object it should be
            return _error(400, f"the body: {error}")
        queue = self._queue()
        try:
            changed = await queue.control.make_due(self._clock(), hop)
        except RuntimeError:  # the writer stopped: the node is going down
            return _error(503, "the node is stopping")
        queue.flush()  # also with nothing deferred: a hop held down is tried again
        log.info("admin API: flush %s (%d recipients due now)", hop or "every next hop", changed)
        return web.json_response({"action": "flush", "next_hop": hop, "changed": changed})

    async def _change_many(self, request: web.Request) -> web.Response:
        action = request.match_info["action"]
        if action not in BULK_ACTIONS:
            return _error(404, f"no action {action!r} (known: {', '.join(BULK_ACTIONS)})")
        try:
            wanted = selection_from_json(await request.json())
        except ValueError as error:  # not JSON, or not the object it should be
            return _error(400, f"the body: {error}")
        if wanted.dsn and action != "remove":
            return _error(400, "the body: dsn: only a removal sends DSNs")
        queue = self._queue()
        queue_ids = list(wanted.queue_ids)
        if wanted.next_hop is not None or wanted.every:
            queue_ids += select_ids(
                await queue.reader.list_messages(), hop=wanted.next_hop, every=wanted.every
            )
        now = self._clock()
        notices = removal_notices(self.config, queue.control, now) if wanted.dsn else None
        try:
            changed = await apply_change(
                queue.control, action, queue_ids, now, notices=notices, to=wanted.to
            )
        except ValueError as error:  # a redirect with no `to`, a bad one, or one not asked
            return _error(400, f"the body: {error}")
        except RuntimeError:  # the writer stopped: the node is going down
            return _error(503, "the node is stopping")
        # After a retry: down hops are tried again; after a removal with DSNs: they go now;
        # after a redirect: the delivery process of the new hop's shard claims them now.
        if (action in ("retry", "resume", "redirect") or wanted.dsn) and any(changed.values()):
            queue.flush()
        named = " ".join(list(changed)[:20]) + (" ..." if len(changed) > 20 else "")
        log.info("admin API: %s %s (%d changed)", action, named, sum(changed.values()))
        return web.json_response({"action": action, "changed": changed})


async def _apply(control: Repository, queue_id: str, action: str, now: float) -> int:
    """One message changed; how many of its recipients (remove: 1, the message)."""
    return (await apply_change(control, action, [queue_id], now))[queue_id]


@contextlib.asynccontextmanager
async def serving(
    config: Config, *, clock: Callable[[], float] = time.time
) -> AsyncIterator[AdminServer]:
    """The admin API, up for the life of the block."""
    server = AdminServer(config, clock=clock)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
