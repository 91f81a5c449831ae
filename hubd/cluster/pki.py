"""The local cluster's certificates and its ready submission user, made once per directory.

Owns: a CA for the cluster (DIR/pki/ca.pem, its key beside it, mode 0600), a certificate
per node for its loopback address and its name (IP SANs: routes and MX answers name
addresses), and the ready user `client` whose random password is in DIR/client-password
(mode 0600), in the users file every hub reads (DIR/users.toml).
Public: ClusterPki, CLIENT_USER, CLIENT_ADDRESSES, ca_file(), users_file(),
password_file(), node_tls(), ensure_pki().
Failures: OSError when the files cannot be written.
Limits: made with trustme (a test CA: its certificates suit loopback clusters, not the
internet); a directory keeps its CA and password across `cluster up`, so clients keep
trusting it.
See also: hubd/cluster/layout.py (the configs that name these files).
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import trustme

from hubd.users import User, hash_password, read_users, write_users

CLIENT_USER = "client"
CLIENT_ADDRESSES = ("client@corp.test", "client@example.net")


@dataclass(frozen=True, slots=True)
class ClusterPki:
    """Where a cluster's CA and ready user are."""

    ca_file: Path
    user: str
    password_file: Path

    @property
    def password(self) -> str:
        return self.password_file.read_text(encoding="utf-8").strip()


def ca_file(directory: Path) -> Path:
    return directory / "pki" / "ca.pem"


def users_file(directory: Path) -> Path:
    return directory / "users.toml"


def password_file(directory: Path) -> Path:
    return directory / f"{CLIENT_USER}-password"


def node_tls(home: Path) -> tuple[Path, Path]:
    """A node's certificate and key files."""
    return home / "tls" / "cert.pem", home / "tls" / "key.pem"


def _private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _ca(directory: Path) -> trustme.CA:
    cert, key = ca_file(directory), directory / "pki" / "ca-key.pem"
    if cert.exists() and key.exists():
        return trustme.CA.from_pem(cert.read_bytes(), key.read_bytes())
    ca = trustme.CA(organization_name="hubd local cluster")
    _private(key, ca.private_key_pem.bytes())
    cert.write_bytes(ca.cert_pem.bytes())
    return ca


def ensure_pki(directory: Path, nodes: dict[Path, tuple[str, ...]]) -> ClusterPki:
    """The CA, a certificate for each node home (for its identities: addresses and names)
    that has none, and the ready user; what exists already is kept."""
    ca = _ca(directory)
    for home, identities in nodes.items():
        cert, key = node_tls(home)
        if cert.exists() and key.exists():
            continue
        issued = ca.issue_cert(*identities)
        _private(key, issued.private_key_pem.bytes())
        cert.write_bytes(b"".join(pem.bytes() for pem in issued.cert_chain_pems))
    secret = password_file(directory)
    if not secret.exists():
        _private(secret, (secrets.token_urlsafe(18) + "\n").encode())
    users = users_file(directory)
    known = read_users(users)
    if CLIENT_USER not in known:
        password = secret.read_text(encoding="utf-8").strip()
        known[CLIENT_USER] = User(CLIENT_USER, hash_password(password), CLIENT_ADDRESSES)
        write_users(users, known)
    return ClusterPki(ca_file(directory), CLIENT_USER, secret)
