"""The node's server-side TLS: an SSLContext from `[tls] cert` and `key`, renewed when they change.

Owns: loading the PEM certificate chain and key into a server context (TLS 1.2 at least),
and noticing a renewed certificate (the files' size, mtime or inode changed) at the next
handshake, without a restart.
Public: ServerTls, tls_version().
Failures: ConfigError naming `tls.cert` when the files cannot be loaded at start; a renewal
that fails to load is logged and the context in use is kept.
See also: hubd/smtp/server.py (STARTTLS and implicit TLS), hubd/config.py (TlsConfig).
"""

from __future__ import annotations

import logging
import os
import ssl
from pathlib import Path

from hubd.config import TlsConfig
from hubd.errors import ConfigError

log = logging.getLogger(__name__)

_Stamp = tuple[tuple[int, int, int], ...]


class ServerTls:
    """A server SSLContext for the node's listeners, reloaded when its files change."""

    def __init__(self, config: TlsConfig) -> None:
        self._cert = config.cert
        self._key = config.key
        self._stamp = self._stat()
        try:
            self._context = _load(self._cert, self._key)
        except (OSError, ssl.SSLError) as error:
            raise ConfigError(
                "tls.cert", [f"cannot load {self._cert} and {self._key}: {error}"]
            ) from None

    def context(self) -> ssl.SSLContext:
        """The context to use for the next handshake."""
        stamp = self._stat()
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self._context = _load(self._cert, self._key)
                log.info("TLS certificate %s reloaded", self._cert)
            except (OSError, ssl.SSLError) as error:
                log.error("TLS certificate %s not reloaded: %s", self._cert, error)
        return self._context

    def _stat(self) -> _Stamp:
        stamps = []
        for path in (self._cert, self._key):
            try:
                info = os.stat(path)
            except OSError:
                stamps.append((0, 0, 0))
                continue
            stamps.append((info.st_ino, info.st_size, info.st_mtime_ns))
        return tuple(stamps)


def _load(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


def tls_version(ssl_object: object) -> str | None:
    """The protocol a connection negotiated ("TLSv1.3"), from its ssl_object extra info."""
    if isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        return ssl_object.version()
    return None
