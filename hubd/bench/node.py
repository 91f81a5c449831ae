"""The hubd node under test: its configuration, written by the bench, and its queue's state.

Owns: the hubd.toml of a node that delivers the load into Maildir (`hubd bench`) or relays
it to a sink over loopback (`--compare-postfix`), with the user's own settings merged in,
and whether its queue has nothing left to deliver.
Public: maildir_settings(), relay_settings(), merge_settings(), check_node_settings(),
write_node_config(),
queue_drained(), mailbox_folder().
Failures: ConfigError (from hubd.config) when the merged settings are not a valid config.
Limits: every setting not named here is hubd's default: durable (synchronous=FULL, fsync
before each 250), tracking log on, TLS offered to the next hop when it offers STARTTLS.
See also: hubd/bench/child.py (runs it), DESIGN.md (Configuration).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hubd.bench.settings import DOMAIN, RECIPIENT
from hubd.config import Config, HostPort, load_config, parse_config, write_config
from hubd.delivery.maildir import mailbox_dirname
from storage.summary import summarise_queue

NODE_HOSTNAME = "hubd.bench.test"


def maildir_settings(data_dir: Path, listen: HostPort) -> dict[str, Any]:
    """A node that takes the bench domain as local and delivers into its Maildir."""
    return {
        "local_domains": [DOMAIN],
        "node": {"name": "bench", "hostname": NODE_HOSTNAME, "data_dir": data_dir},
        "smtp": {"listen": [str(listen)], "trusted_networks": ["127.0.0.0/8"]},
    }


def relay_settings(data_dir: Path, listen: HostPort, next_hop: HostPort) -> dict[str, Any]:
    """A node that relays the bench domain to `next_hop` by a static route (no DNS)."""
    return {
        "node": {"name": "bench", "hostname": NODE_HOSTNAME, "data_dir": data_dir},
        "smtp": {"listen": [str(listen)], "trusted_networks": ["127.0.0.0/8"]},
        "routes": [{"domains": [DOMAIN], "next_hops": [str(next_hop)]}],
    }


def merge_settings(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge config settings: tables merge key by key, anything else replaces."""
    merged = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_settings(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def check_node_settings(overrides: Mapping[str, Any]) -> Config:
    """The relaying node's config with `overrides` merged in; ConfigError when it is not valid."""
    somewhere = HostPort(host="127.0.0.1", port=25)  # any address: the keys are checked
    return parse_config(merge_settings(relay_settings(Path("."), somewhere, somewhere), overrides))


def write_node_config(path: Path, settings: Mapping[str, Any]) -> Config:
    """Write the node's hubd.toml and load it back, so that a bad setting fails here."""
    write_config(path, settings)
    return load_config(path)


def queue_drained(config: Config) -> bool:
    """True when the node's queue holds no recipient waiting for delivery."""
    return summarise_queue(config.node.data_dir / "queue.db").queued == 0


def mailbox_folder(config: Config) -> Path:
    """The new/ folder of the bench recipient's Maildir on a Maildir node."""
    local = RECIPIENT.partition("@")[0]
    return config.mailbox_dir / DOMAIN / mailbox_dirname(local) / "new"
