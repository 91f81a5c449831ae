"""The `hubd` command: parse arguments, load configuration, call the packages.

Owns: commands, their options, exit codes (0 ok, 1 failure, 2 bad configuration or usage),
and printing user-facing errors as one line each (a traceback only with --debug).
Public: app, main().
See also: README.md (Commands).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from hubd.config import Config, HostPort, load_config, parse_duration
from hubd.errors import ConfigError, StorageError
from hubd.logs import LogFormat, LogLevel, configure

if TYPE_CHECKING:
    from hubd.admin.client import AdminClient
    from hubd.admin.filters import QueueFilter
    from hubd.bench.settings import CompareSettings
    from hubd.cluster.layout import Layout
    from hubd.datadir import DataDirLock
    from hubd.tracking_query import GroupKey
    from hubd.users import User

T = TypeVar("T")

app = typer.Typer(
    help="hubd: an SMTP hub transport that loses no mail.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="The node's hubd.toml (default: $HUBD_CONFIG, ./hubd.toml, /etc/hubd/hubd.toml).",
    ),
]


def _show_version(value: bool) -> None:
    if value:
        from hubd import __version__

        typer.echo(f"hubd {__version__}")
        raise typer.Exit(0)


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """hubd: an SMTP hub transport that loses no mail."""


def _fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"hubd: {message}", err=True)
    return typer.Exit(code)


def _config_path(given: Path | None) -> Path:
    """The config file to read: -c, or where hubd looks for one (one line and exit 2 if none)."""
    from hubd.config import find_config

    try:
        return find_config(given)
    except ConfigError as error:
        raise _fail(error.problems[0], 2) from None


def _load(path: Path | None) -> Config:
    try:
        return load_config(_config_path(path))
    except ConfigError as error:
        for problem in error.problems:
            typer.echo(f"hubd: {error.source}: {problem}", err=True)
        raise typer.Exit(2) from None


LogLevelOption = Annotated[
    LogLevel, typer.Option("--log-level", help="Least severe log records written to stderr.")
]
LogFormatOption = Annotated[
    LogFormat, typer.Option("--log-format", help="text, or json: one object per line.")
]


@app.command()
def serve(
    config: ConfigOption = None,
    debug: Annotated[
        bool, typer.Option(help="Tracebacks, and --log-level debug unless it is given.")
    ] = False,
    log_level: LogLevelOption = LogLevel.INFO,
    log_format: LogFormatOption = LogFormat.TEXT,
) -> None:
    """Run one node in the foreground; SIGTERM drains and exits 0."""
    from hubd.metrics_dir import use_metrics_dir

    config = _config_path(config)
    settings = _load(config)
    _check_tls(settings)
    configure((LogLevel.DEBUG if debug else log_level).number, log_format=log_format)

    def ready(node: Running) -> None:
        addresses = ", ".join(str(a) for a in node.relay_addresses)
        typer.echo(f"hubd: node {settings.node.name} accepting mail on {addresses}", err=True)
        submission = [f"{a} (STARTTLS)" for a in node.submission_addresses] + [
            f"{a} (TLS)" for a in node.submission_tls_addresses
        ]
        if submission:
            typer.echo(f"hubd: submission with AUTH on {', '.join(submission)}", err=True)
        typer.echo(f"hubd: {_serve_hint(settings, node.relay_addresses[0])}", err=True)

    lock = _lock_data_dir(settings.node.data_dir)
    try:
        use_metrics_dir(settings.node.data_dir)  # before hubd.supervisor imports the metrics
        from hubd.supervisor import Running, run_node

        status = asyncio.run(run_node(settings, config, lock.inheritable(), ready))
    except StorageError as error:
        if debug:
            raise
        raise _fail(f"queue database: {error}", 2) from None
    except OSError as error:
        if debug:
            raise
        raise _fail(f"cannot listen: {error}", 1) from None
    finally:
        lock.release()
    if status:
        raise typer.Exit(status)


def _check_tls(settings: Config) -> None:
    """Exit 2 now, not in every child, when the [tls] files cannot be loaded."""
    if settings.tls is None:
        return
    from hubd.tls import ServerTls

    try:
        ServerTls(settings.tls)
    except ConfigError as error:
        for problem in error.problems:
            typer.echo(f"hubd: {error.source}: {problem}", err=True)
        raise typer.Exit(2) from None


def _serve_hint(settings: Config, relay: HostPort) -> str:
    """A `hubd send` to try that stays on this node, or why there is none."""
    if not settings.local_domains:
        return (
            "this node has no local_domains: it keeps no mail itself and relays everything "
            "by its routes or MX; set local_domains to try it with hubd send"
        )
    domain = settings.local_domains[0]
    return (
        f"try: {_command_name()} send --server {relay} --from you@{domain} --to user@{domain}"
        f"   (mailboxes: {settings.mailbox_dir})"
    )


def _lock_data_dir(data_dir: Path) -> DataDirLock:
    """Take the data directory before the queue is opened: one node per queue."""
    from hubd.datadir import DataDirInUse, acquire_data_dir

    def waiting(pid: int | None) -> None:
        typer.echo(
            f"hubd: {data_dir} is locked by what is left of pid {pid} (no longer running); "
            "waiting for it to exit",
            err=True,
        )

    try:
        return acquire_data_dir(data_dir, on_wait=waiting)
    except DataDirInUse as error:
        raise _fail(str(error), 1) from None
    except OSError as error:
        raise _fail(f"data directory {data_dir}: {error}", 1) from None


@app.command()
def send(
    server: Annotated[str, typer.Option(help="host:port of the node.")],
    sender: Annotated[str, typer.Option("--from", help="Envelope sender.")],
    recipients: Annotated[list[str], typer.Option("--to", help="Envelope recipient(s).")],
    count: Annotated[int, typer.Option(min=1, help="How many messages.")] = 1,
    subject: Annotated[str, typer.Option(help="Subject line.")] = "hubd test message",
) -> None:
    """Submit test messages and print each reply."""
    from hubd.sending import SendError, send_test_messages

    try:
        address = HostPort.parse(server)
    except ValueError as error:
        raise _fail(f"--server: {error}", 2) from None
    try:
        failures = asyncio.run(
            send_test_messages(address, sender, recipients, count=count, subject=subject)
        )
    except SendError as error:
        raise _fail(str(error), 1) from None
    raise typer.Exit(1 if failures else 0)


@app.command()
def bench(
    *,
    count: Annotated[
        int | None, typer.Option(help="How many messages [default: 2000; 3000 to compare].")
    ] = None,
    size: Annotated[
        int, typer.Option(help="Bytes per message (with --compare-postfix: of body).")
    ] = 4096,
    concurrency: Annotated[
        list[int] | None,
        typer.Option(
            "--concurrency",
            "--sessions",
            help="Concurrent SMTP sessions [default: 10]; repeat to compare at each.",
        ),
    ] = None,
    server: Annotated[
        str | None, typer.Option(help="host:port of a running node (default: start one).")
    ] = None,
    ceiling: Annotated[
        bool, typer.Option(help="Send to a sink that runs hubd's SMTP code but stores nothing.")
    ] = False,
    compare_postfix: Annotated[
        bool,
        typer.Option(
            "--compare-postfix",
            help="Run smtp-source into a private Postfix and into hubd, in turns (root).",
        ),
    ] = False,
    rounds: Annotated[int, typer.Option(help="Runs of each MTA per session count.")] = 3,
    latency: Annotated[
        bool, typer.Option(help="Also time end of DATA to 250 with hubd's own load.")
    ] = True,
    directory: Annotated[
        Path, typer.Option("--dir", help="Where the compared queues go (a real filesystem).")
    ] = Path("/var/tmp"),
    verify: Annotated[
        bool, typer.Option(help="The sinks keep each message: check each came once.")
    ] = False,
    keep: Annotated[bool, typer.Option(help="Keep the run's configs, logs and queues.")] = False,
    node_setting: Annotated[
        list[str] | None,
        typer.Option(help="SECTION.KEY=VALUE (TOML) added to the compared node's hubd.toml."),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for every delivery.")] = 600.0,
) -> None:
    """Measure accepted messages/s, end-of-DATA latency and time to delivery, or compare."""
    import json

    from hubd.bench import BenchError, BenchMode, BenchSettings, format_report, run_bench
    from hubd.bench.settings import CompareSettings, parse_node_settings

    sessions = concurrency or [10]
    if compare_postfix:
        if server is not None or ceiling:
            raise _fail("--compare-postfix starts its own MTAs: no --server or --ceiling", 2)
        try:
            compared = CompareSettings(
                count=count or 3000,
                size=size,
                sessions=tuple(sessions),
                rounds=rounds,
                latency=latency,
                directory=directory,
                timeout=timeout,
                verify=verify,
                keep=keep,
                node_settings=parse_node_settings(node_setting or []),
            )
        except ValueError as error:
            raise _fail(str(error), 2) from None
        _compare(compared, json_output)
    try:
        if len(sessions) != 1:
            raise ValueError("one --concurrency, except with --compare-postfix")
        address = HostPort.parse(server) if server is not None else None
        if address is not None and ceiling:
            raise ValueError("--server and --ceiling exclude each other")
        mode = BenchMode.CEILING if ceiling else BenchMode.SERVER if address else BenchMode.NODE
        settings = BenchSettings(count or 2000, size, sessions[0], mode, address, timeout)
    except ValueError as error:
        raise _fail(str(error), 2) from None
    try:
        report = run_bench(settings)
    except BenchError as error:
        raise _fail(str(error), 1) from None
    typer.echo(json.dumps(report.as_dict(), indent=2) if json_output else format_report(report))
    raise typer.Exit(1 if report.refused else 0)


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up as Ctrl-C does


def _compare(settings: CompareSettings, json_output: bool) -> None:
    """`hubd bench --compare-postfix`: check what it needs, run it, print the report."""
    import json

    from hubd.bench import BenchError
    from hubd.bench.compare import check_requirements, run_comparison
    from hubd.bench.comparison import format_comparison
    from hubd.bench.node import check_node_settings

    try:
        check_node_settings(settings.node_settings)
    except ConfigError as error:
        for problem in error.problems:
            typer.echo(f"hubd: --node-setting: {problem}", err=True)
        raise typer.Exit(2) from None
    programs, problems = check_requirements(settings.directory)
    if programs is None:
        for problem in problems:
            typer.echo(f"hubd: bench --compare-postfix: {problem}", err=True)
        raise typer.Exit(1)
    previous = signal.signal(signal.SIGTERM, _interrupted)
    try:
        report = run_comparison(settings, programs)
    except BenchError as error:
        raise _fail(str(error), 1) from None
    except KeyboardInterrupt:
        raise _fail("interrupted: every process of the run was stopped", 130) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    text = json.dumps(report.as_dict(), indent=2) if json_output else format_comparison(report)
    typer.echo(text)
    raise typer.Exit(0 if report.every_message_once() else 1)


@app.command("bench-sink", hidden=True)
def bench_sink(listen: Annotated[str, typer.Option(help="host:port to listen on.")]) -> None:
    """Accept mail with hubd's SMTP code and store nothing (the ceiling of `hubd bench`)."""
    from hubd.bench import serve_sink

    try:
        address = HostPort.parse(listen)
    except ValueError as error:
        raise _fail(str(error), 2) from None
    configure()

    def ready(bound: HostPort) -> None:
        typer.echo(f"hubd: bench sink accepting mail on {bound}", err=True)

    asyncio.run(serve_sink(address, ready))


@app.command("bench-queue")
def bench_queue(
    queued: Annotated[list[int], typer.Option(help="Queue sizes to measure.")] = [  # noqa: B006
        1_000,
        10_000,
        100_000,
    ],
    drain: Annotated[
        int,
        typer.Option(
            help="Instead: queue this many messages for one next hop, then start a node and"
            " the hop (Postfix's smtp-sink) and time the drain, with every process's peak RSS."
        ),
    ] = 0,
    directory: Annotated[
        Path, typer.Option("--dir", help="Where the drained queue lives (a real filesystem).")
    ] = Path("/var/tmp"),
    node_setting: Annotated[
        list[str] | None,
        typer.Option(help="SECTION.KEY=VALUE for the drained node (repeatable)."),
    ] = None,
) -> None:
    """Time the scheduler's claim and record of due work as the queue grows."""
    if drain:
        from hubd.bench.drain import format_drain, run_drain
        from hubd.bench.settings import parse_node_settings

        typer.echo(
            format_drain(run_drain(drain, directory, parse_node_settings(node_setting or [])))
        )
        return
    from hubd.bench_queue import format_queue_bench, run_queue_bench

    typer.echo(format_queue_bench(run_queue_bench(queued)))


queue_app = typer.Typer(help="Look at a node's queue.", no_args_is_help=True)
app.add_typer(queue_app, name="queue")
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _echo_lines(text: str) -> None:
    if text:  # an empty listing in JSON is no line at all
        typer.echo(text)


def _on_node(settings: Config, ask: Callable[[AdminClient], Awaitable[T]]) -> T | None:
    """The running node's answer over <data_dir>/admin.sock, or None when no node answers:
    the command then works on the file itself."""
    from hubd.admin.client import AdminError, NodeNotRunning, ask_node

    try:
        return ask_node(settings.node.data_dir / "admin.sock", settings.admin_token_file, ask)
    except NodeNotRunning:
        return None
    except AdminError as error:
        raise _fail(str(error), 1) from None


def _queue_filter(
    *,
    states: list[str],
    next_hop: str | None,
    sender: str | None,
    recipient: str | None,
    older_than: str | None,
    newer_than: str | None,
) -> QueueFilter:
    from hubd.admin.filters import QueueFilter

    def seconds(option: str, value: str | None) -> float | None:
        if value is None:
            return None
        try:
            return parse_duration(value).total_seconds()
        except ValueError as error:
            raise ValueError(f"{option}: {error}") from None

    try:
        return QueueFilter.build(
            states=states,
            next_hop=next_hop,
            sender=sender,
            recipient=recipient,
            older_than=seconds("--older-than", older_than),
            newer_than=seconds("--newer-than", newer_than),
        )
    except ValueError as error:
        raise _fail(str(error), 2) from None


@queue_app.command("list")
def queue_list(
    *,
    config: ConfigOption = None,
    as_json: JsonOption = False,
    shadows: Annotated[bool, typer.Option("--shadows", help="The shadows held instead.")] = False,
    states: Annotated[
        list[str], typer.Option("--state", help="PENDING, HELD, SHADOWED, ... (repeat).")
    ] = [],  # noqa: B006 (typer needs a literal default)
    next_hop: Annotated[
        str | None, typer.Option("--hop", help="Next hop, as listed (route:corp.test).")
    ] = None,
    sender: Annotated[
        str | None, typer.Option(help="Envelope sender, @domain, or <> for none.")
    ] = None,
    recipient: Annotated[str | None, typer.Option(help="A recipient, or @domain.")] = None,
    older_than: Annotated[
        str | None, typer.Option(help="Received longer ago than this (1h, 2d).")
    ] = None,
    newer_than: Annotated[str | None, typer.Option(help="Received within this.")] = None,
) -> None:
    """Every queued message with its recipients' state, next hop and last error."""
    from hubd import queue_report

    selected = _queue_filter(
        states=states,
        next_hop=next_hop,
        sender=sender,
        recipient=recipient,
        older_than=older_than,
        newer_than=newer_than,
    )
    settings = _load(config)
    database = settings.node.data_dir / "queue.db"
    try:
        if shadows:
            held = asyncio.run(queue_report.read_shadows(database))
            if as_json:
                _echo_lines(queue_report.shadows_json(held))
            else:
                typer.echo(queue_report.format_shadows(held))
            return
        messages = _on_node(settings, lambda node: node.list_messages(selected))
        if messages is None:
            messages = selected.select(asyncio.run(queue_report.read_queue(database)), time.time())
    except StorageError as error:
        raise _fail(str(error), 1) from None
    if as_json:
        _echo_lines(queue_report.to_json(messages))
    else:
        typer.echo(queue_report.format_list(messages))


@queue_app.command("show")
def queue_show(
    queue_id: Annotated[str, typer.Argument(help="The queue id.")],
    config: ConfigOption = None,
    as_json: JsonOption = False,
    message: Annotated[
        bool, typer.Option("--message", help="The stored message itself (postcat).")
    ] = False,
) -> None:
    """One message in full: its envelope, its recipients' state and history, or its text."""
    from hubd.queue_report import format_show, read_history, read_queue, show_json

    settings = _load(config)
    if message:
        sys.stdout.buffer.write(_stored_message(settings, queue_id))
        return
    found = _on_node(settings, lambda node: node.show(queue_id))
    try:
        messages = (
            [found]
            if found is not None
            else asyncio.run(read_queue(settings.node.data_dir / "queue.db", queue_id))
        )
    except StorageError as error:
        raise _fail(str(error), 1) from None
    if not messages:
        raise _fail(f"no message {queue_id} in the queue", 1)
    history = read_history(settings.node.data_dir / "tracking", messages[0])
    shown = messages[0]
    typer.echo(show_json(shown, history) if as_json else format_show(shown, history))


def _stored_message(settings: Config, queue_id: str) -> bytes:
    from hubd.queue_report import read_message

    try:
        data = asyncio.run(read_message(settings.node.data_dir / "queue.db", queue_id))
    except StorageError as error:
        raise _fail(str(error), 1) from None
    if data is None:
        raise _fail(f"no message {queue_id} in the queue", 1)
    return data


@queue_app.command("export")
def queue_export(
    queue_id: Annotated[str, typer.Argument(help="The queue id.")],
    config: ConfigOption = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="The file (default: ID.eml here).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Write a queued message, as stored, to an .eml file."""
    from hubd.queue_report import json_lines

    settings = _load(config)
    data = _stored_message(settings, queue_id)
    target = output or Path(f"{queue_id}.eml")
    try:
        with target.open("xb") as handle:  # never over a file that is there
            handle.write(data)
    except OSError as error:
        raise _fail(f"export: cannot write {target}: {error.strerror or error}", 1) from None
    if as_json:
        typer.echo(json_lines([{"queue_id": queue_id, "file": str(target), "size": len(data)}]))
    else:
        typer.echo(f"{queue_id}: {len(data)} bytes to {target}")


@queue_app.command("shape")
def queue_shape(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Waiting recipients by next hop and age in minutes (qshape)."""
    from hubd import queue_report

    settings = _load(config)
    try:
        messages = asyncio.run(queue_report.read_queue(settings.node.data_dir / "queue.db"))
    except StorageError as error:
        raise _fail(str(error), 1) from None
    shape = queue_report.queue_shape(messages, time.time())
    if as_json:
        _echo_lines(queue_report.shape_json(shape))
    else:
        typer.echo(queue_report.format_shape(shape))


cluster_app = typer.Typer(help="A local multi-node cluster on loopback.", no_args_is_help=True)
app.add_typer(cluster_app, name="cluster")
DirOption = Annotated[Path, typer.Option("--dir", help="The cluster's directory.")]
NodeArgument = Annotated[str, typer.Argument(help="Node name, e.g. hub-2 or mbx-1.")]


def _cluster_layout(directory: Path) -> Layout:
    from hubd.cluster.layout import load_layout

    try:
        return load_layout(directory)
    except FileNotFoundError as error:
        raise _fail(str(error), 2) from None


@cluster_app.command("up")
def cluster_up(
    directory: DirOption = Path("var/cluster"),
    hubs: Annotated[
        int, typer.Option("--hubs", "--nodes", min=1, max=9, help="How many hubs.")
    ] = 3,
    detach: Annotated[bool, typer.Option(help="Return once every node accepts mail.")] = False,
    heartbeat: Annotated[str, typer.Option(help="shadow.heartbeat_interval of the nodes.")] = "10s",
) -> None:
    """Start a cluster: hubs, a mailstore, an outside MX host and a DNS server."""
    import threading

    from hubd.cluster.run import ClusterError, ClusterInterrupted, bring_down, bring_up, watch
    from hubd.cluster.status import cluster_status, format_table

    try:
        parse_duration(heartbeat)
    except ValueError as error:
        raise _fail(f"--heartbeat: {error}", 2) from None
    # From here on Ctrl-C only sets `stop`: start-up checks it between steps and stops what
    # it started, so it can never leave a node running unrecorded.
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    started = time.monotonic()
    try:
        layout = bring_up(directory, hubs=hubs, heartbeat=heartbeat, stop=stop)
    except ClusterInterrupted as error:
        typer.echo(f"hubd: cluster start-up {error}", err=True)
        raise typer.Exit(130) from None
    except ClusterError as error:
        raise _fail(str(error), 1) from None
    elapsed = time.monotonic() - started
    typer.echo(format_table(cluster_status(layout), layout))
    typer.echo(f"\nall nodes accept mail ({elapsed:.1f}s). {_cluster_hints(layout, directory)}")
    if detach:
        return
    watch(layout, stop)
    typer.echo("stopping the cluster...")
    stopped = bring_down(layout)
    typer.echo(f"stopped: {', '.join(stopped) or 'nothing was running'}")


def _command_name() -> str:
    """How to run this hubd again from the same directory, as the user started it."""
    import shutil

    invoked = sys.argv[0]
    if invoked.endswith("__main__.py"):
        return f"{sys.executable} -m hubd"
    on_path = shutil.which("hubd")
    if on_path is not None and Path(on_path).resolve() == Path(invoked).resolve():
        return "hubd"
    return invoked


def _cluster_hints(layout: Layout, directory: Path) -> str:
    from hubd.cluster.layout import CLUSTER_DOMAIN, OUTSIDE_DOMAIN

    hubd = _command_name()
    send = f"{hubd} send --server {layout.node('hub-1').relay}"
    return (
        "Try:\n"
        f"  {send} --from you@{OUTSIDE_DOMAIN} --to user@{CLUSTER_DOMAIN}\n"
        f"  {send} --from user@{CLUSTER_DOMAIN} --to friend@{OUTSIDE_DOMAIN}\n"
        f"  {hubd} cluster status --dir {directory}"
    )


@cluster_app.command("status")
def cluster_status_command(
    directory: DirOption = Path("var/cluster"), as_json: JsonOption = False
) -> None:
    """Each node's state, endpoints, queue depth per next hop, shadows held and owed."""
    from hubd.cluster.status import cluster_status, format_table, to_json

    layout = _cluster_layout(directory)
    statuses = cluster_status(layout)
    typer.echo(to_json(statuses) if as_json else format_table(statuses, layout))


@cluster_app.command("down")
def cluster_down(directory: DirOption = Path("var/cluster")) -> None:
    """Stop every node (SIGTERM; they drain)."""
    from hubd.cluster.run import bring_down

    stopped = bring_down(_cluster_layout(directory))
    typer.echo(f"stopped: {', '.join(stopped) or 'nothing was running'}")


def _node_action(directory: Path, node: str, action: str) -> None:
    from hubd.cluster import control

    layout = _cluster_layout(directory)
    try:
        plan = layout.node(node)
    except KeyError as error:
        raise _fail(str(error.args[0]), 2) from None
    running = control.node_pid(plan)
    if action == "start" and running is not None:
        typer.echo(f"{node}: already running (pid {running})")
        return
    if action == "kill":
        done = control.kill_node(plan)
    elif action == "stop":
        done = control.stop_node(plan)
    elif action == "wipe":
        control.wipe_node(plan)
        done = True
    else:
        control.start_node(plan)
        try:
            control.wait_until_serving([plan], 60)
        except (OSError, TimeoutError) as error:
            raise _fail(str(error), 1) from None
        done = True
    typer.echo(f"{node}: {action} {'done' if done else '(it was not running)'}")


@cluster_app.command("kill")
def cluster_kill(node: NodeArgument, directory: DirOption = Path("var/cluster")) -> None:
    """Crash a node (SIGKILL)."""
    _node_action(directory, node, "kill")


@cluster_app.command("stop")
def cluster_stop(node: NodeArgument, directory: DirOption = Path("var/cluster")) -> None:
    """Stop a node cleanly (SIGTERM)."""
    _node_action(directory, node, "stop")


@cluster_app.command("start")
def cluster_start(node: NodeArgument, directory: DirOption = Path("var/cluster")) -> None:
    """Start a stopped node and wait until it accepts mail."""
    _node_action(directory, node, "start")


@cluster_app.command("wipe")
def cluster_wipe(node: NodeArgument, directory: DirOption = Path("var/cluster")) -> None:
    """Kill a node if it runs and delete its data (a disk-loss drill)."""
    _node_action(directory, node, "wipe")


@app.command("dns-server")
def dns_server(
    listen: Annotated[str, typer.Option(help="host:port to answer on (UDP and TCP).")],
    zone: Annotated[Path, typer.Option(help="Zone file (BIND syntax, one record a line).")],
) -> None:
    """Serve a zone on loopback, as the local cluster's DNS server."""
    import threading

    from hubd.dns_server import DnsServer

    try:
        address = HostPort.parse(listen)
        text = zone.read_text(encoding="utf-8")
    except (ValueError, OSError) as error:
        raise _fail(str(error), 2) from None
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with DnsServer(text, host=address.host, port=address.port):
        typer.echo(f"hubd: DNS server answering on {listen}", err=True)
        stop.wait()


def _wanted_ids(given: list[str]) -> tuple[list[str], bool]:
    """The queue ids named (`-` reads more from stdin, whitespace-separated), and whether
    `ALL` was among them."""
    ids: list[str] = []
    for item in given:
        ids.extend(sys.stdin.read().split() if item == "-" else [item])
    every = "ALL" in ids
    return [i for i in ids if i != "ALL"], every


def _change(
    config: Path | None,
    given: list[str],
    hop: str | None,
    action: str,
    as_json: bool,
    *,
    dsn: bool = False,
    to: str | None = None,
) -> None:
    from hubd.queue_changes import NodeRunning, change_stopped_node
    from hubd.queue_report import json_lines

    settings = _load(config)
    from hubd.admin.wire import Selection

    named, every = _wanted_ids(given)
    if not named and not every and hop is None:
        raise _fail(f"queue {action}: name queue ids, '-' (ids on stdin), ALL or --hop H", 2)
    # A running node takes the change itself (its API); a stopped one on its file.
    selection = Selection(tuple(named), hop, every, dsn, to)
    changed = _on_node(settings, lambda node: node.change(action, selection))
    try:
        if changed is None:
            changed = asyncio.run(
                change_stopped_node(
                    settings.node.data_dir,
                    action,
                    named,
                    now=time.time(),
                    hop=hop,
                    every=every,
                    dsn_for=settings if dsn else None,
                    to=to,
                )
            )
    except (StorageError, NodeRunning) as error:
        raise _fail(f"queue {action}: {error}", 1) from None
    missing = [q for q in named if not changed.get(q)]
    for queue_id in missing:
        typer.echo(f"hubd: {action}: no message {queue_id} with recipients to {action}", err=True)
    if as_json:
        rows = [{"queue_id": q, "action": action, "changed": n} for q, n in changed.items()]
        _echo_lines(json_lines(rows))
        if missing:
            raise typer.Exit(1)
        return
    for queue_id in named if len(changed) <= 20 else ():
        count = changed.get(queue_id, 0)
        if count:
            done = "removed" if action == "remove" else f"{action} ({count} recipient(s))"
            typer.echo(f"{queue_id}: {done}")
    if len(changed) > 1:
        hit = sum(1 for count in changed.values() if count)
        what = (
            "messages" if action == "remove" else f"messages ({sum(changed.values())} recipients)"
        )
        typer.echo(f"{action}: {hit} {what}")
    if missing:
        raise typer.Exit(1)


QueueIdsArgument = Annotated[
    list[str] | None,
    typer.Argument(help="Queue ids; '-' reads them from stdin; ALL for every message."),
]
HopOption = Annotated[
    str | None, typer.Option("--hop", help="Every message with a recipient for this next hop.")
]


@queue_app.command("retry")
def queue_retry(
    queue_ids: QueueIdsArgument = None,
    hop: HopOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Make messages' pending (or held) recipients due now."""
    _change(config, queue_ids or [], hop, "retry", as_json)


@queue_app.command("suspend")
def queue_suspend(
    queue_ids: QueueIdsArgument = None,
    hop: HopOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Hold messages' pending recipients: not tried until resumed."""
    _change(config, queue_ids or [], hop, "suspend", as_json)


@queue_app.command("resume")
def queue_resume(
    queue_ids: QueueIdsArgument = None,
    hop: HopOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Release held messages (suspended, or held as poison)."""
    _change(config, queue_ids or [], hop, "resume", as_json)


@queue_app.command("remove")
def queue_remove(
    queue_ids: QueueIdsArgument = None,
    hop: HopOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
    dsn: Annotated[
        bool, typer.Option("--dsn", help="Tell each sender, with a failure DSN (5.0.0).")
    ] = False,
) -> None:
    """Delete messages from the queue (with --dsn: each sender gets a failure DSN for the
    recipients still waiting); an upstream that holds a shadow of one is owed its discard
    notice."""
    _change(config, queue_ids or [], hop, "remove", as_json, dsn=dsn)


@queue_app.command("redirect")
def queue_redirect(
    to: Annotated[
        str, typer.Option("--to", help="host:port of the node (or MTA) to hand them to.")
    ],
    queue_ids: QueueIdsArgument = None,
    hop: HopOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Hand messages' waiting recipients to another node (before maintenance): each goes
    to HOST:PORT from now on, whatever routing says, and is tried at once; held ones stay
    held, and one in delivery at this moment is left where it is (run again)."""
    try:
        target = str(HostPort.parse(to))
    except ValueError as error:
        raise _fail(f"queue redirect: --to: {error}", 2) from None
    _change(config, queue_ids or [], hop, "redirect", as_json, to=target)


@queue_app.command("flush")
def queue_flush(
    hop: Annotated[
        str | None, typer.Option("--hop", help="Only the recipients for this next hop.")
    ] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Try every deferred recipient (or those for one next hop) now, next hops held down
    included (postqueue -f / -s); held recipients stay held."""
    from hubd.queue_changes import NodeRunning, flush_stopped_node
    from hubd.queue_report import json_lines

    settings = _load(config)
    changed = _on_node(settings, lambda node: node.flush(hop))
    try:
        if changed is None:
            changed = asyncio.run(
                flush_stopped_node(settings.node.data_dir, now=time.time(), hop=hop)
            )
    except (StorageError, NodeRunning) as error:
        raise _fail(f"queue flush: {error}", 1) from None
    if as_json:
        typer.echo(json_lines([{"action": "flush", "next_hop": hop, "changed": changed}]))
    else:
        typer.echo(f"flush: {changed} recipient(s) due now")


config_app = typer.Typer(help="What a node will run with (postconf).", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("check")
def config_check(config: ConfigOption = None) -> None:
    """Validate the configuration: exit 0, or 2 with one line per problem."""
    path = _config_path(config)
    _load(path)
    typer.echo(f"hubd: {path}: ok")


@config_app.command("show")
def config_show(
    config: ConfigOption = None,
    defaults: Annotated[
        bool, typer.Option("--defaults", help="Every setting's default (postconf -d).")
    ] = False,
    changed: Annotated[
        bool, typer.Option("--changed", help="Only what differs from the defaults (postconf -n).")
    ] = False,
) -> None:
    """Print the effective settings as TOML (every key, defaults filled in)."""
    from hubd.config import Config, changed_settings, dump_config

    if defaults and changed:
        raise _fail("--defaults and --changed exclude each other", 2)
    settings = Config() if defaults else _load(config)
    typer.echo(changed_settings(settings) if changed else dump_config(settings), nl=False)


EventOption = Annotated[
    list[str], typer.Option("--event", "-e", help="RECEIVE, SUBMIT, SEND, DELIVER, ... (repeat).")
]


@app.command()
def track(
    *,
    config: ConfigOption = None,
    cluster: Annotated[
        Path | None, typer.Option("--cluster", help="Every node of a local cluster's DIR.")
    ] = None,
    events: EventOption = [],  # noqa: B006 (typer needs a literal default)
    senders: Annotated[
        list[str], typer.Option("--sender", help="Envelope sender, or @domain (repeat).")
    ] = [],  # noqa: B006
    recipients: Annotated[
        list[str], typer.Option("--recipient", help="A recipient, or @domain (repeat).")
    ] = [],  # noqa: B006
    message_ids: Annotated[
        list[str], typer.Option("--message-id", help="Message-ID, with or without <>.")
    ] = [],  # noqa: B006
    queue_ids: Annotated[list[str], typer.Option("--queue-id", help="A queue id.")] = [],  # noqa: B006
    nodes: Annotated[list[str], typer.Option("--node", help="Only this node (repeat).")] = [],  # noqa: B006
    start: Annotated[
        str | None, typer.Option(help="From this time on: RFC 3339, UTC without an offset.")
    ] = None,
    end: Annotated[str | None, typer.Option(help="Before this time.")] = None,
    count: Annotated[bool, typer.Option("--count", help="Only how many events match.")] = False,
    group_by: Annotated[
        list[str],
        typer.Option(
            "--count-by", help="Count by event, sender, recipient, hour or node (repeat)."
        ),
    ] = [],  # noqa: B006
    as_json: JsonOption = False,
) -> None:
    """Query the message tracking log of a node, or of every node of a local cluster."""
    from hubd.tracking import TrackingEvent
    from hubd.tracking_files import read_events
    from hubd.tracking_query import (
        TrackFilter,
        count_by,
        counts_json,
        format_counts,
        format_record,
        parse_time,
        record_json,
        search,
    )

    try:
        known = sorted(str(e) for e in TrackingEvent)
        unknown = sorted({e.upper() for e in events} - set(known))
        if unknown:
            raise ValueError(f"--event: unknown {', '.join(unknown)} (known: {', '.join(known)})")
        keys = [_group_key(k) for k in group_by]
        selected = TrackFilter.build(
            events=events,
            senders=senders,
            recipients=recipients,
            message_ids=message_ids,
            queue_ids=queue_ids,
            nodes=nodes,
            start=parse_time(start) if start else None,
            end=parse_time(end) if end else None,
        )
    except ValueError as error:
        raise _fail(str(error), 2) from None
    directories = _tracking_directories(config, cluster, nodes)
    first, last = selected.first_day(), selected.last_day()
    records = search([read_events(d, first, last) for d in directories], selected)
    if count or keys:
        counts = count_by(records, keys)
        typer.echo("\n".join(counts_json(keys, counts)) if as_json else format_counts(keys, counts))
        return
    for record in records:
        typer.echo(record_json(record) if as_json else format_record(record))


def _group_key(name: str) -> GroupKey:
    from hubd.tracking_query import GroupKey

    try:
        return GroupKey(name.lower())
    except ValueError:
        choices = ", ".join(k.value for k in GroupKey)
        raise ValueError(f"--count-by: expected one of {choices}, got {name!r}") from None


def _tracking_directories(
    config: Path | None, cluster: Path | None, nodes: list[str]
) -> list[Path]:
    """The tracking directories a query reads: one node's, or every (named) node's of a cluster."""
    if cluster is None:
        return [_load(config).node.data_dir / "tracking"]
    from hubd.cluster.layout import Role

    layout = _cluster_layout(cluster)
    for name in nodes:
        try:
            layout.node(name)
        except KeyError as error:
            raise _fail(str(error.args[0]), 2) from None
    return [
        Path(plan.data_dir) / "tracking"
        for plan in layout.nodes
        if plan.role is not Role.DNS and (not nodes or plan.name in nodes)
    ]


user_app = typer.Typer(
    help="Submission users (the users file, [submission] users_file).", no_args_is_help=True
)
app.add_typer(user_app, name="user")


def _users_file(config: Path | None) -> Path:
    return _load(config).users_path


def _read_users_or_exit(path: Path) -> dict[str, User]:
    from hubd.users import UsersError, read_users

    try:
        return dict(read_users(path))
    except UsersError as error:
        raise _fail(str(error), 1) from None


def _new_password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        password = line.removesuffix("\n").removesuffix("\r")
    elif sys.stdin.isatty():
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    else:
        raise _fail("no terminal to ask for the password on: give --password-stdin", 2)
    if not password:
        raise _fail("the password is empty", 2)
    return password


@user_app.command("add")
def user_add(
    name: Annotated[str, typer.Argument(help="The AUTH user name.")],
    address: Annotated[
        list[str], typer.Option("--address", help="An envelope sender it may use (repeat).")
    ],
    password_stdin: Annotated[
        bool,
        typer.Option("--password-stdin", help="Read the password as one line from stdin."),
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Add a user (or replace one of that name); needs no running node."""
    from hubd.users import User, hash_password, normal_address, valid_name, write_users

    if not valid_name(name):
        raise _fail(f"not a user name: {name!r} (ASCII letters, digits and . _ @ + -)", 2)
    addresses = []
    for given in address:
        normal = normal_address(given)
        if normal is None:
            raise _fail(f"not an address: {given!r}", 2)
        addresses.append(normal)
    path = _users_file(config)
    users = _read_users_or_exit(path)
    password = _new_password(password_stdin)
    replaced = name in users
    users[name] = User(name, hash_password(password), tuple(dict.fromkeys(addresses)))
    write_users(path, users)
    typer.echo(f"hubd: user {name} {'replaced' if replaced else 'added'} in {path}", err=True)


@user_app.command("remove")
def user_remove(
    name: Annotated[str, typer.Argument(help="The user to remove.")],
    config: ConfigOption = None,
) -> None:
    """Remove a user; a running node refuses its next AUTH."""
    from hubd.users import write_users

    path = _users_file(config)
    users = _read_users_or_exit(path)
    if users.pop(name, None) is None:
        raise _fail(f"no user {name!r} in {path}", 1)
    write_users(path, users)
    typer.echo(f"hubd: user {name} removed from {path}", err=True)


@user_app.command("list")
def user_list(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="A JSON list.")] = False,
) -> None:
    """The users and the addresses each may send as (never their hashes)."""
    users = _read_users_or_exit(_users_file(config))
    rows = [
        {"name": user.name, "addresses": list(user.addresses)}
        for user in sorted(users.values(), key=lambda u: u.name)
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        typer.echo(f"{row['name']}\t{', '.join(row['addresses'])}")


def main() -> None:
    """Entry point of the `hubd` script."""
    app()
