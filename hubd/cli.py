"""The `hubd` command: parse arguments, load configuration, call the packages.

Owns: commands, their options, exit codes (0 ok, 1 failure, 2 bad configuration or usage),
and printing user-facing errors as one line each (a traceback only with --debug).
Public: app, main().
See also: README.md (Commands).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from hubd.config import Config, HostPort, load_config
from hubd.errors import ConfigError, StorageError

app = typer.Typer(
    help="hubd: an SMTP hub transport that loses no mail.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="The node's hubd.toml.")]


def _fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"hubd: {message}", err=True)
    return typer.Exit(code)


def _load(path: Path) -> Config:
    try:
        return load_config(path)
    except ConfigError as error:
        for problem in error.problems:
            typer.echo(f"hubd: {error.source}: {problem}", err=True)
        raise typer.Exit(2) from None


def _logging(debug: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # aiosmtpd logs every command at INFO; that is a debugging aid, not an operator's log.
    logging.getLogger("mail.log").setLevel(logging.DEBUG if debug else logging.WARNING)


@app.command()
def serve(
    config: ConfigOption,
    debug: Annotated[bool, typer.Option(help="Verbose logs and tracebacks.")] = False,
) -> None:
    """Run one node in the foreground; SIGTERM drains and exits 0."""
    from hubd.node import Node

    settings = _load(config)
    _logging(debug)

    def ready(node: Node) -> None:
        addresses = ", ".join(str(a) for a in node.relay_addresses)
        typer.echo(f"hubd: node {settings.node.name} accepting mail on {addresses}", err=True)
        domain = settings.local_domains[0] if settings.local_domains else "example.org"
        typer.echo(
            f"hubd: try: hubd send --server {node.relay_addresses[0]} --from you@example.org"
            f" --to user@{domain}   (mailboxes: {settings.mailbox_dir})",
            err=True,
        )

    try:
        asyncio.run(Node(settings).run_until_signalled(ready))
    except StorageError as error:
        if debug:
            raise
        raise _fail(f"queue database: {error}", 2) from None
    except OSError as error:
        if debug:
            raise
        raise _fail(f"cannot listen: {error}", 1) from None


@app.command()
def send(
    server: Annotated[str, typer.Option(help="host:port of the node.")],
    sender: Annotated[str, typer.Option("--from", help="Envelope sender.")],
    recipients: Annotated[list[str], typer.Option("--to", help="Envelope recipient(s).")],
    count: Annotated[int, typer.Option(min=1, help="How many messages.")] = 1,
    subject: Annotated[str, typer.Option(help="Subject line.")] = "hubd test message",
) -> None:
    """Submit test messages and print each reply."""
    from hubd.sending import send_test_messages

    try:
        address = HostPort.parse(server)
    except ValueError as error:
        raise _fail(str(error), 2) from None
    failures = asyncio.run(
        send_test_messages(address, sender, recipients, count=count, subject=subject)
    )
    raise typer.Exit(1 if failures else 0)


def main() -> None:
    """Entry point of the `hubd` script."""
    app()
