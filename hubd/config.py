"""The typed configuration of a node, loaded from TOML; every error names its key.

Owns: the shape, defaults and validation of hubd.toml (DESIGN.md, Configuration).
Public: Config and its sections, load_config(), find_config(), write_config(), dump_config(),
HostPort, parse_duration(), parse_size().
Failures: ConfigError with one line per problem ("smtp.listen[0]: expected host:port ...").
Limits: durations are whole numbers with one unit (ms, s, m, h, d); sizes are bytes or a
whole number with B, KiB, MiB or GiB; every path (a ConfigPath field) is relative to the
config file's directory.
See also: README.md (Configuration), hubd/cli.py (exit code 2 on ConfigError).
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import tomli_w
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ByteSize,
    ConfigDict,
    Field,
    PlainSerializer,
    PositiveInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from hubd.errors import ConfigError

_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d)\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: object) -> timedelta:
    """Parse "30s", "5m", "2h", "2d" (or a number of seconds) into a timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("expected a duration such as '30s', '5m', '2h' or '2d'")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return timedelta(seconds=value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return timedelta(seconds=int(match[1]) * _UNITS[match[2]])
    raise ValueError(f"expected a duration such as '30s', '5m', '2h' or '2d', got {value!r}")


def format_duration(value: timedelta) -> str:
    """A duration in the largest unit that holds it exactly: "30d", "90s", "100ms"."""
    millis = round(value.total_seconds() * 1000)
    for unit in ("d", "h", "m", "s"):
        step = int(_UNITS[unit] * 1000)
        if millis and millis % step == 0:
            return f"{millis // step}{unit}"
    return f"{millis}ms" if millis else "0s"


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
]

_SIZE = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB)?\s*$")
_SIZE_UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}


def parse_size(value: object) -> int:
    """Parse a size in bytes: 4096, "4096", "512KiB", "10MiB", "1GiB"."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        match = _SIZE.match(value)
        if match:
            return int(match[1]) * _SIZE_UNITS[match[2] or "B"]
    raise ValueError(f"expected a size such as '512KiB', '10MiB' or '1GiB', got {value!r}")


def format_size(value: int) -> str:
    """A size in the largest binary unit that holds it exactly: "10MiB", "1000B"."""
    for unit in ("GiB", "MiB", "KiB"):
        if value and value % _SIZE_UNITS[unit] == 0:
            return f"{value // _SIZE_UNITS[unit]}{unit}"
    return f"{value}B"


Size = Annotated[int, BeforeValidator(parse_size), PlainSerializer(format_size, return_type=str)]


class HostPort(BaseModel):
    """An address to listen on or connect to: "127.0.0.1:2525" or "[::1]:2525"."""

    model_config = ConfigDict(frozen=True)
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, value: object) -> HostPort:
        """Parse host:port, with IPv6 hosts in brackets."""
        if isinstance(value, HostPort):
            return value
        if not isinstance(value, str):
            raise ValueError(f"expected 'host:port', got {value!r}")
        match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^:\[\]\s]+):(\d{1,5})", value)
        if not match:
            raise ValueError(f"expected 'host:port' (IPv6 as '[::1]:25'), got {value!r}")
        host = match[1] or match[3]
        port = int(match[2] or match[4])
        if not 0 <= port <= 65535:
            raise ValueError(f"port out of range in {value!r}")
        return cls(host=host, port=port)


Address = Annotated[
    HostPort, BeforeValidator(HostPort.parse), PlainSerializer(str, return_type=str)
]


def _network(value: object) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    if not isinstance(value, str):
        raise ValueError(f"expected a network such as '127.0.0.1/32', got {value!r}")
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"expected a network such as '127.0.0.1/32', got {value!r}") from None


Network = Annotated[
    ipaddress.IPv4Network | ipaddress.IPv6Network,
    BeforeValidator(_network),
    PlainSerializer(str, return_type=str),
]

# \Z, not $: "$" also matches before a final newline, which let "corp.test\n" through.
_DOMAIN = re.compile(
    r"^(?=.{1,253}\Z)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*\Z"
)


def _domain(value: object) -> str:
    if not isinstance(value, str) or not _DOMAIN.match(value.lower().rstrip(".")):
        raise ValueError(f"expected a domain name such as 'corp.test', got {value!r}")
    return value.lower().rstrip(".")


Domain = Annotated[str, BeforeValidator(_domain)]


def _domain_pattern(value: object) -> str:
    if isinstance(value, str) and value.startswith("."):
        return "." + _domain(value[1:])
    return _domain(value)


DomainPattern = Annotated[str, BeforeValidator(_domain_pattern)]


def _relative_to_config(value: Path, info: ValidationInfo) -> Path:
    # The one place relative paths are anchored: the directory of the file they were read
    # from (passed as validation context by load_config), never the working directory.
    base = (info.context or {}).get("base")
    if base is None or value.is_absolute():
        return value
    return Path(os.path.normpath(Path(base) / value))  # "etc/../var" reads as "var"


ConfigPath = Annotated[Path, AfterValidator(_relative_to_config)]
"""A file or directory named in a config: relative to the config file's directory."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeConfig(_Section):
    model_config = ConfigDict(revalidate_instances="always")  # so a default [node] is anchored too
    name: str = Field(
        "hub",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$",
        description="Unique in the cluster; appears in XSHADOW and Received:.",
    )
    hostname: str = Field("localhost", description="EHLO and banner name.")
    data_dir: ConfigPath = Field(
        Path("var/hub"),
        validate_default=True,
        description="queue.db, tracking/, mailboxes/ (relative to the config file's directory).",
    )
    processes: int = Field(
        0,
        ge=0,
        le=256,
        description="Processes of the node: 1 runs everything in one; more are split into"
        " acceptor and delivery processes under a supervisor; 0 means one per usable core.",
    )


class SmtpConfig(_Section):
    listen: list[Address] = Field(default_factory=lambda: [HostPort.parse("127.0.0.1:2525")])
    trusted_networks: list[Network] = Field(
        default_factory=lambda: [_network("127.0.0.1/32"), _network("::1/128")],
        description="Clients in these networks may relay anywhere.",
    )
    max_message_size: PositiveInt = Field(36700160, description="Bytes, advertised as SIZE.")
    delayed_ack: bool = False
    max_ack_delay: Duration = timedelta(seconds=30)
    max_received_headers: PositiveInt = 50
    max_recipients: PositiveInt = Field(1000, description="RCPTs per message; more get 452.")
    max_line_length: int = Field(
        8192, ge=1001, le=1_048_576, description="Longest command or text line, CRLF included."
    )
    idle_timeout: Duration = Field(
        timedelta(minutes=5),
        description="Longest wait for the client's next line (or reply read); then 421 4.4.2.",
    )
    data_timeout: Duration = Field(
        timedelta(minutes=10), description="Longest time for the whole of DATA; then 421 4.4.2."
    )
    max_sessions: PositiveInt = Field(
        1000, description="Concurrent sessions on the node; more get 421 4.7.0."
    )
    max_connections_per_client: PositiveInt = Field(
        50,
        description="Concurrent sessions from one address (IPv6: one /64); more get 421 "
        "4.7.0. trusted_networks are exempt.",
    )
    max_commands_per_session: PositiveInt = Field(
        10000, description="Command lines one session may send; the next gets 421 4.7.0."
    )
    max_errors: PositiveInt = Field(
        20, description="Commands refused for syntax or order; the next gets 421 4.7.0."
    )
    max_header_size: ByteSize = Field(
        ByteSize(1 << 20),
        gt=0,
        description="Octets of a message's header section ('1MiB'); more gets 552 5.3.4.",
    )
    spool_threshold: Size = Field(
        1 << 20,
        ge=0,
        description="A message bigger than this ('1MiB') is written to a spool file as it"
        " arrives instead of being held in memory; 0 spools every message.",
    )
    max_messages_per_minute_per_client: PositiveInt = Field(
        600,
        description="MAIL commands from one address: a burst of this many, then this many "
        "a minute; more gets 421 4.7.0. trusted_networks are exempt.",
    )
    listen_backlog: PositiveInt = Field(
        1024, description="Connections the kernel queues on each listener before accept."
    )


class MailboxesConfig(_Section):
    dir: ConfigPath | None = Field(
        None, description="Default: data_dir/mailboxes (relative to the config file's directory)."
    )
    catch_all: bool = True
    recipients: list[str] = Field(default_factory=list)

    @field_validator("dir", mode="before")
    @classmethod
    def _empty_is_default(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("recipients")
    @classmethod
    def _lower(cls, value: list[str]) -> list[str]:
        for address in value:
            if "@" not in address:
                raise ValueError(f"expected full addresses such as 'u1@corp.test', got {address!r}")
        return [address.lower() for address in value]


class QueueConfig(_Section):
    retry: list[Duration] = Field(
        default_factory=lambda: [parse_duration(v) for v in ("1m", "5m", "15m", "30m", "1h")],
        min_length=1,
    )
    expiry: Duration = timedelta(days=2)
    delay_notice: Duration = timedelta(hours=4)
    poison_threshold: PositiveInt = Field(
        2, description="Crashes during a message's delivery before it is held (POISON)."
    )
    double_bounce_to: str | None = Field(
        None,
        description="Where a DSN (any mail from <>) that cannot be delivered goes; default "
        'postmaster@<first local domain>, or "" (drop it, with a DOUBLE_BOUNCE line) on a '
        "node without local domains.",
    )

    @field_validator("double_bounce_to")
    @classmethod
    def _address_or_empty(cls, value: str | None) -> str | None:
        if value and not re.fullmatch(r"[^@\s]+@[^@\s]+", value):
            raise ValueError(
                f"expected an address such as 'postmaster@corp.test' or '', got {value!r}"
            )
        return value


class DeliveryConfig(_Section):
    concurrency_per_hop: PositiveInt = 10
    mx_port: int = Field(25, ge=1, le=65535)
    tls: Literal["off", "opportunistic", "verify"] = "opportunistic"
    tls_ca: ConfigPath | None = Field(
        None, description="CA file for tls = 'verify' (relative to the config file's directory)."
    )
    connect_timeout: Duration = timedelta(seconds=30)
    command_timeout: Duration = timedelta(minutes=5)

    @field_validator("tls_ca", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AdminConfig(_Section):
    listen: Address | None = Field(
        None,
        description='host:port of the admin HTTP API; "" (the default): off. The API is'
        " always on the unix socket data_dir/admin.sock.",
    )
    allow_remote: bool = Field(False, description="Let admin.listen be a non-loopback address.")
    token_file: ConfigPath | None = Field(
        None,
        description="The bearer token (mode 0600, made at first start); default"
        " data_dir/admin.token (relative to the config file's directory).",
    )

    @field_validator("listen", "token_file", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _loopback_only(self) -> AdminConfig:
        if self.listen is not None and not self.allow_remote and not _loopback(self.listen.host):
            raise ValueError(
                f"admin.listen {self.listen} is not a loopback address; set"
                " admin.allow_remote = true to serve the API beyond this host"
            )
        return self


class DnsConfig(_Section):
    nameservers: list[Address] = Field(
        default_factory=list, description="host:port of resolvers; empty: the system resolver."
    )
    ipv6: Literal["off", "fallback", "strict"] = Field(
        "fallback",
        description="off: A only; fallback: AAAA then A, a failed AAAA falls back to A; "
        "strict: a failed AAAA defers with 451 4.4.0 DNS query failed (Exchange 2007's fault).",
    )
    timeout: Duration = Field(timedelta(seconds=5), description="Lifetime of one lookup.")


class ShadowConfig(_Section):
    enabled: bool = Field(True, description="Advertise and use XSHADOW.")
    peers: list[Network] | None = Field(
        None,
        description="Networks whose nodes may XSHADOW with this one; default: "
        "smtp.trusted_networks.",
    )
    heartbeat_interval: Duration = Field(
        timedelta(minutes=2), description="While shadows are held."
    )
    heartbeat_failures: PositiveInt = Field(
        3, description="Missed heartbeats before a peer is dead."
    )
    auto_discard: Duration = Field(timedelta(days=3), description="Shadows and unasked notices.")
    dedup_window: Duration = Field(timedelta(days=4), description="Origin keys at final delivery.")
    before_ack: Literal["off", "prefer", "require"] = Field(
        "off",
        description="Copy a plain client's message to a redundancy peer before the 250; "
        "require: else 451 4.4.0. Supersedes smtp.delayed_ack.",
    )
    redundancy_peers: list[Address] = Field(
        default_factory=list, description="Peers for before_ack's copy, tried in order."
    )
    before_ack_timeout: Duration = Field(
        timedelta(seconds=5), description="For the copy, before prefer gives up or require 451s."
    )

    @model_validator(mode="after")
    def _positive(self) -> ShadowConfig:
        for key in ("heartbeat_interval", "auto_discard", "dedup_window", "before_ack_timeout"):
            if getattr(self, key).total_seconds() <= 0:
                raise ValueError(f"shadow.{key} must be longer than 0s")
        if self.before_ack == "require" and not self.redundancy_peers:
            raise ValueError('shadow.before_ack = "require" needs shadow.redundancy_peers')
        if self.before_ack != "off" and not self.enabled:
            raise ValueError("shadow.before_ack needs shadow.enabled")
        return self


class TrackingConfig(_Section):
    max_file_size: Size = Field(
        10 << 20, description="A day's log moves on to a new file past this size; 0: never."
    )
    max_age: Duration = Field(
        timedelta(days=30), description="Log files of days older than this are deleted; 0: never."
    )


class PickupConfig(_Section):
    enabled: bool = Field(True, description="Take .eml files from data_dir/pickup and /replay.")
    interval: Duration = Field(
        timedelta(seconds=1),
        description="Between scans; a file modified less than this long ago waits.",
    )
    rate: int = Field(0, ge=0, description="Files taken per minute at most; 0: no limit.")

    @field_validator("interval")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value.total_seconds() <= 0:
            raise ValueError("must be longer than 0s")
        return value


def _count(value: object) -> object:
    # "0" turns a check off, as for the sizes; other counts may be strings of digits too.
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return value


Count = Annotated[int, BeforeValidator(_count), Field(ge=0)]


class BackpressureConfig(_Section):
    disk_free_medium: Size = Field(
        2 << 30,
        description="Free space of the queue's filesystem below which the node is"
        " Medium (only trusted networks, authenticated users and shadow peers); 0: off.",
    )
    disk_free_high: Size = Field(
        1 << 30,
        description="Free space below which the node is High (452 4.3.1 for all new mail); 0: off.",
    )
    memory_medium: Size = Field(
        6 << 30, description="Resident size of all the node's processes for Medium; 0: off."
    )
    memory_high: Size = Field(8 << 30, description="Resident size for High; 0: off.")
    inflight_medium: Size = Field(
        1 << 30, description="Bytes received but not yet committed, for Medium; 0: off."
    )
    inflight_high: Size = Field(2 << 30, description="Bytes in flight for High; 0: off.")
    queued_medium: Count = Field(
        500_000, description="Queued recipients (pending or held) for Medium; 0: off."
    )
    queued_high: Count = Field(1_000_000, description="Queued recipients for High; 0: off.")
    hysteresis: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="A level drops only once the value is this fraction past its threshold.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> BackpressureConfig:
        pairs = (("disk_free", True), ("memory", False), ("inflight", False), ("queued", False))
        for name, falling in pairs:
            medium, high = getattr(self, f"{name}_medium"), getattr(self, f"{name}_high")
            if medium and high and (medium <= high if falling else medium >= high):
                word = "more" if falling else "less"
                raise ValueError(f"{name}_medium must be {word} than {name}_high (or 0: off)")
        return self


class TlsConfig(_Section):
    cert: ConfigPath = Field(description="PEM certificate chain (relative to the config file).")
    key: ConfigPath = Field(description="PEM private key (relative to the config file).")


class SubmissionConfig(_Section):
    """Client submission: AUTH after TLS; every key left unset takes [smtp]'s value."""

    listen: list[Address] = Field(default_factory=list, description="STARTTLS (587 style).")
    tls_listen: list[Address] = Field(default_factory=list, description="Implicit TLS (465 style).")
    users_file: ConfigPath | None = Field(
        None,
        description="TOML: per user an argon2 hash and its addresses; default "
        "data_dir/users.toml (relative to the config file's directory).",
    )
    allow_plaintext_auth: bool = Field(
        False,
        description="AUTH before TLS: for loopback tests only; every submission "
        "address must then be loopback.",
    )
    auth_failure_delay: Duration = Field(
        timedelta(seconds=1), description="Wait before answering 535 5.7.8."
    )
    max_auth_failures_per_client: PositiveInt = Field(
        10,
        description="Failed AUTHs from one address within auth_failure_window; the next"
        " AUTH gets 421 4.7.0. trusted_networks are not exempt.",
    )
    auth_failure_window: Duration = Field(
        timedelta(minutes=10), description="How long a failed AUTH counts against its address."
    )
    max_messages_per_minute_per_user: PositiveInt = Field(
        120,
        description="MAIL commands of one user: a burst of this many, then this many a"
        " minute; more gets 421 4.7.0.",
    )
    delayed_ack: bool | None = None
    max_ack_delay: Duration | None = None
    max_message_size: PositiveInt | None = None
    max_recipients: PositiveInt | None = None
    max_line_length: int | None = Field(None, ge=1001, le=1_048_576)
    idle_timeout: Duration | None = None
    data_timeout: Duration | None = None
    max_connections_per_client: PositiveInt | None = None
    max_commands_per_session: PositiveInt | None = None
    max_errors: PositiveInt | None = None
    max_header_size: ByteSize | None = Field(None, gt=0)
    max_messages_per_minute_per_client: PositiveInt | None = None

    @field_validator("users_file", mode="before")
    @classmethod
    def _empty_is_default(cls, value: object) -> object:
        return None if value == "" else value

    @property
    def addresses(self) -> list[HostPort]:
        return [*self.listen, *self.tls_listen]


OVERRIDABLE_SMTP_KEYS = (
    "delayed_ack",
    "max_ack_delay",
    "max_message_size",
    "max_recipients",
    "max_line_length",
    "idle_timeout",
    "data_timeout",
    "max_connections_per_client",
    "max_commands_per_session",
    "max_errors",
    "max_header_size",
    "max_messages_per_minute_per_client",
)
"""The [smtp] keys a [submission] section may set for its own listeners."""


def _is_loopback(address: HostPort) -> bool:
    try:
        return ipaddress.ip_address(address.host).is_loopback
    except ValueError:
        return address.host == "localhost"


class RouteConfig(_Section):
    domains: list[DomainPattern] = Field(min_length=1)
    next_hops: list[Address] = Field(min_length=1)


class Config(_Section):
    local_domains: list[Domain] = Field(default_factory=list)
    node: NodeConfig = Field(default_factory=NodeConfig, validate_default=True)
    smtp: SmtpConfig = Field(default_factory=SmtpConfig)
    submission: SubmissionConfig = Field(default_factory=SubmissionConfig)
    tls: TlsConfig | None = None
    mailboxes: MailboxesConfig = Field(default_factory=MailboxesConfig)
    queue: QueueConfig = Field(default_factory=QueueConfig)
    delivery: DeliveryConfig = Field(default_factory=DeliveryConfig)
    routes: list[RouteConfig] = Field(default_factory=list)
    admin: AdminConfig = Field(default_factory=AdminConfig)
    dns: DnsConfig = Field(default_factory=DnsConfig)
    shadow: ShadowConfig = Field(default_factory=ShadowConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    pickup: PickupConfig = Field(default_factory=PickupConfig)
    backpressure: BackpressureConfig = Field(default_factory=BackpressureConfig)

    @model_validator(mode="after")
    def _check_local_vs_routes(self) -> Config:
        routed = {d for route in self.routes for d in route.domains}
        clash = sorted(routed & set(self.local_domains))
        if clash:
            raise ValueError(f"domains both local and routed: {', '.join(clash)}")
        return self

    @model_validator(mode="after")
    def _check_submission_tls(self) -> Config:
        submission = self.submission
        if submission.allow_plaintext_auth:
            outside = [str(a) for a in submission.addresses if not _is_loopback(a)]
            if outside:
                raise ValueError(
                    "submission.allow_plaintext_auth is for loopback only, but it would "
                    "apply to " + ", ".join(outside)
                )
        if self.tls is not None:
            return self
        if submission.tls_listen:
            raise ValueError("submission.tls_listen needs a [tls] section (cert and key)")
        if submission.listen and not submission.allow_plaintext_auth:
            raise ValueError(
                "submission.listen needs a [tls] section (cert and key), or"
                " allow_plaintext_auth = true on loopback addresses only"
            )
        return self

    @property
    def submission_smtp(self) -> SmtpConfig:
        """The [smtp] settings as the submission listeners use them: [submission]'s own
        values of the overridable keys in place of [smtp]'s."""
        own = {
            key: getattr(self.submission, key)
            for key in OVERRIDABLE_SMTP_KEYS
            if getattr(self.submission, key) is not None
        }
        return self.smtp.model_copy(update=own)

    @property
    def users_path(self) -> Path:
        """The submission users file: submission.users_file or data_dir/users.toml."""
        return self.submission.users_file or self.node.data_dir / "users.toml"

    @property
    def shadow_peers(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        """Networks allowed to XSHADOW (default: the trusted networks)."""
        if self.shadow.peers is None:
            return list(self.smtp.trusted_networks)
        return list(self.shadow.peers)

    @property
    def double_bounce_address(self) -> str:
        """Where undeliverable DSNs go ("" for nowhere): queue.double_bounce_to or its default."""
        if self.queue.double_bounce_to is not None:
            return self.queue.double_bounce_to
        return f"postmaster@{self.local_domains[0]}" if self.local_domains else ""

    @property
    def mailbox_dir(self) -> Path:
        """Where local domains' Maildirs live."""
        return self.mailboxes.dir or self.node.data_dir / "mailboxes"

    @property
    def admin_token_file(self) -> Path:
        """The admin API's bearer token: admin.token_file or data_dir/admin.token."""
        return self.admin.token_file or self.node.data_dir / "admin.token"


def _location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not part.startswith(("function-", "lax-")):
            out += f".{part}" if out else part
    return out or "(top level)"


def _problems(error: ValidationError) -> list[str]:
    lines = []
    for item in error.errors():
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"{_location(item['loc'])}: {message}")
    return lines


def parse_config(
    data: dict[str, Any], source: str = "<config>", *, base: Path | None = None
) -> Config:
    """Validate a parsed TOML document; raise ConfigError naming every bad key.

    Relative paths (every ConfigPath field) are taken relative to `base` when it is given,
    and left as they are when it is not.
    """
    try:
        return Config.model_validate(data, context={"base": base})
    except ValidationError as error:
        raise ConfigError(source, _problems(error)) from None


def load_config(path: Path) -> Config:
    """Read and validate a TOML configuration file; its relative paths are relative to it."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(str(path), ["file not found"]) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(str(path), [f"cannot read: {error}"]) from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(str(path), [f"not valid TOML: {error}"]) from None
    return parse_config(data, str(path), base=path.absolute().parent)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return str(value) if isinstance(value, Path) else value


def write_config(path: Path, settings: Mapping[str, Any]) -> Path:
    """Write a hubd.toml from a dictionary (tables for dicts, [[arrays]] for lists of dicts)."""
    path.write_text(tomli_w.dumps(_plain(settings)), encoding="utf-8")
    return path


def dump_config(config: Config) -> str:
    """Every setting of a configuration as TOML (keys with no value, such as an unset
    mailboxes.dir, are left out: their default applies)."""
    return tomli_w.dumps(config.model_dump(mode="json", exclude_none=True))


def changed_settings(config: Config) -> str:
    """Only the settings that differ from their defaults, as TOML (postconf -n)."""
    return tomli_w.dumps(
        _difference(config.model_dump(mode="json"), Config().model_dump(mode="json"))
    )


def _difference(values: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(defaults.get(key), dict):
            inner = _difference(value, defaults[key])
            if inner:
                out[key] = inner
        elif value != defaults.get(key) and value is not None:
            out[key] = value
    return out


CONFIG_ENV = "HUBD_CONFIG"
CONFIG_PLACES = (Path("hubd.toml"), Path("/etc/hubd/hubd.toml"))


def find_config(
    given: Path | None, environ: Mapping[str, str] = os.environ, cwd: Path | None = None
) -> Path:
    """The config file a command uses: `-c`, else $HUBD_CONFIG, else ./hubd.toml, else
    /etc/hubd/hubd.toml; ConfigError when none is given and none of those exists."""
    if given is not None:
        return given
    if environ.get(CONFIG_ENV):
        return Path(environ[CONFIG_ENV])
    here = cwd or Path.cwd()
    for place in CONFIG_PLACES:
        candidate = here / place
        if candidate.is_file():
            return candidate
    raise ConfigError(
        "hubd.toml",
        [
            f"no configuration: give -c FILE, set ${CONFIG_ENV}, or create ./hubd.toml or "
            "/etc/hubd/hubd.toml"
        ],
    )
