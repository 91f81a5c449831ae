"""Certificates for tests: a trustme CA, server certificates it issues, client contexts."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass
class Pki:
    """A test CA under `directory`; issue() writes a server's PEM files."""

    directory: Path
    ca: trustme.CA

    @classmethod
    def create(cls, directory: Path) -> Pki:
        directory.mkdir(parents=True, exist_ok=True)
        pki = cls(directory, trustme.CA())
        pki.ca.cert_pem.write_to_path(str(pki.ca_file))
        return pki

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.pem"

    def issue(self, *identities: str, name: str = "server") -> tuple[Path, Path]:
        """A certificate for these names or IP addresses: (cert.pem, key.pem)."""
        issued = self.ca.issue_cert(*identities)
        cert, key = self.directory / f"{name}-cert.pem", self.directory / f"{name}-key.pem"
        issued.cert_chain_pems[0].write_to_path(str(cert))
        for extra in issued.cert_chain_pems[1:]:
            extra.write_to_path(str(cert), append=True)
        issued.private_key_pem.write_to_path(str(key))
        return cert, key

    def tls_settings(self, *identities: str) -> dict[str, str]:
        """A node's [tls] section for a certificate of these names."""
        cert, key = self.issue(*identities)
        return {"cert": str(cert), "key": str(key)}

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts only this CA (and checks the host name)."""
        return ssl.create_default_context(cafile=str(self.ca_file))
