"""TLS for the listener (with mTLS and reload) and for the upstream channel.

The listener uses gRPC's dynamic server credentials: each new handshake asks
:meth:`ServerTls.fetch` whether the certificates changed, and :meth:`ServerTls.reload`
(SIGHUP, or the files changing) reads and checks the files first, so a half-written or
mismatched pair is refused with a logged reason and the old pair keeps serving.
"""

from __future__ import annotations

import logging
import ssl
import threading
from pathlib import Path

import grpc

from infershield.config import BackendTlsConfig, ServerTlsConfig
from infershield.errors import ConfigError
from infershield.reload import file_fingerprint

log = logging.getLogger(__name__)


def _read(path: str, where: str) -> bytes:
    try:
        data = Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {path}: {exc.strerror}") from None
    if b"-----BEGIN" not in data:
        raise ConfigError(f"{where}: {path} is not PEM")
    return data


def read_pair(cert_path: str, key_path: str, where: str) -> tuple[bytes, bytes]:
    """The PEM bytes of a certificate chain and its key, checked to belong together."""
    cert = _read(cert_path, f"{where}.cert")
    key = _read(key_path, f"{where}.key")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(Path(cert_path).expanduser(), Path(key_path).expanduser())
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"{where}: the certificate and key do not load as a pair ({exc})"
        ) from None
    if _read(cert_path, f"{where}.cert") != cert or _read(key_path, f"{where}.key") != key:
        raise ConfigError(f"{where}: the files changed while being read; try again")
    return cert, key


class ServerTls:
    """The listener's certificates, reloadable; ``credentials()`` goes to ``add_secure_port``."""

    def __init__(self, config: ServerTlsConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._pending: grpc.ServerCertificateConfiguration | None = None
        self._current, self._fingerprints = self._load()

    def _files(self) -> list[str]:
        return [p for p in (self.config.cert, self.config.key, self.config.client_ca) if p]

    def _load(self) -> tuple[grpc.ServerCertificateConfiguration, list[object]]:
        c = self.config
        fps: list[object] = [file_fingerprint(Path(p).expanduser()) for p in self._files()]
        cert, key = read_pair(c.cert, c.key, "server.tls")
        ca = _read(c.client_ca, "server.tls.client_ca") if c.client_ca else None
        return grpc.ssl_server_certificate_configuration([(key, cert)], ca), fps

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self._current, self.fetch, require_client_authentication=bool(self.config.client_ca)
        )

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """Called by gRPC on each handshake: a new configuration once, after a reload."""
        with self._lock:
            pending, self._pending = self._pending, None
        return pending

    def reload(self) -> bool:
        """Re-read the files; new connections use them, open ones keep theirs."""
        try:
            cfg, fps = self._load()
        except ConfigError as exc:
            # Remember what was tried, so polling retries only once the files change again.
            self._fingerprints = [file_fingerprint(Path(p).expanduser()) for p in self._files()]
            log.error("TLS reload rejected, keeping the previous certificates: %s", exc.message)
            return False
        with self._lock:
            self._current = self._pending = cfg
            self._fingerprints = fps
        log.info("TLS certificates reloaded")
        return True

    def changed(self) -> bool:
        fps = [file_fingerprint(Path(p).expanduser()) for p in self._files()]
        return None not in fps and fps != self._fingerprints


def channel_credentials(config: BackendTlsConfig) -> grpc.ChannelCredentials:
    """Credentials for the upstream channel (CA, and a client pair for upstream mTLS)."""
    ca = _read(config.ca, "backend.tls.ca") if config.ca else None
    cert = key = None
    if config.cert:
        cert, key = read_pair(config.cert, config.key, "backend.tls")
    return grpc.ssl_channel_credentials(ca, key, cert)


def peer_subject(auth_context: dict[str, list[bytes]]) -> str:
    """The verified client certificate's subject (``CN=…,O=…``), or "" without one."""
    for name in ("x509_subject", "x509_common_name"):
        values = auth_context.get(name) or []
        if values:
            raw = values[0]
            text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
            return text if name == "x509_subject" else f"CN={text}"
    return ""
