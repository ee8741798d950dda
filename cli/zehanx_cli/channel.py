"""How the CLI reaches the gateway's gRPC port: plaintext, or TLS.

TLS is used when ``ZX_GATEWAY_ADDRESS`` starts with ``https://``, when ``ZX_TLS_CA_FILE`` is set, or when
no address is given and the local suite's gateway serves TLS itself (``ZX_GATEWAY_TLS_CERT_FILE``). The
certificates trusted are those of ``ZX_TLS_CA_FILE``; without it, the local gateway's own certificate
(right for a self-signed one), else the system's roots. ``http://`` forces plaintext.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc
from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from zehanx_cli.errors import LaunchError
from zehanx_cli.settings import LauncherSettings


@dataclass(frozen=True)
class Target:
    """Where the gateway is (``host:port``) and, for TLS, the credentials to dial it with."""

    address: str
    credentials: grpc.ChannelCredentials | None = None

    @property
    def tls(self) -> bool:
        return self.credentials is not None

    def channel(self, options: list[tuple[str, object]] | None = None) -> grpc.Channel:
        if self.credentials is None:
            return grpc.insecure_channel(self.address, options=options)
        return grpc.secure_channel(self.address, self.credentials, options=options)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.expanduser().read_bytes()
    except OSError as exc:
        raise LaunchError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


class _LocalGatewayTls(BaseSettings):
    """The one gateway setting the CLI reads (GatewaySettings' own ZX_GATEWAY_TLS_CERT_FILE), alone, so
    that calling a gateway never depends on the validity of every other gateway variable around."""

    model_config = SettingsConfigDict(env_prefix="ZX_GATEWAY_", extra="ignore")

    tls_cert_file: Path | None = None


def local_gateway_cert() -> Path | None:
    """The certificate the local suite's gateway serves TLS with (``ZX_GATEWAY_TLS_CERT_FILE``), if any."""
    try:
        cert = _LocalGatewayTls().tls_cert_file
    except ValidationError as exc:
        raise LaunchError(f"invalid ZX_GATEWAY_TLS_CERT_FILE: {exc}") from None
    return cert.expanduser() if cert is not None else None


def credentials(settings: LauncherSettings, *, fallback_ca: Path | None = None) -> grpc.ChannelCredentials:
    """TLS credentials trusting ``ZX_TLS_CA_FILE``, else ``fallback_ca``, else the system's roots."""
    ca = settings.tls_ca_file or fallback_ca
    if ca is None:
        return grpc.ssl_channel_credentials()
    what = "ZX_TLS_CA_FILE" if settings.tls_ca_file else "the gateway's certificate"
    return grpc.ssl_channel_credentials(root_certificates=_read(ca, what))


def local_gateway_credentials(settings: LauncherSettings) -> grpc.ChannelCredentials | None:
    """How ``zx up`` / ``zx status`` dial their own gateway: TLS when it serves TLS."""
    cert = local_gateway_cert()
    if cert is None:
        return None
    return credentials(settings, fallback_ca=cert)


def gateway_target(settings: LauncherSettings) -> Target:
    """The gateway the commands call: ``ZX_GATEWAY_ADDRESS``, else the local suite's."""
    raw = (settings.gateway_address or "").strip()
    if not raw:
        return Target(settings.address("gateway"), local_gateway_credentials(settings))
    scheme, sep, rest = raw.partition("://")
    if not sep:
        tls = settings.tls_ca_file is not None
        address = raw
    elif scheme.lower() in ("https", "http"):
        tls = scheme.lower() == "https"
        address = rest.rstrip("/")
    else:
        raise LaunchError(f"ZX_GATEWAY_ADDRESS={raw}: use host:port, https://host:port or http://host:port")
    if not address or "/" in address:
        raise LaunchError(f"ZX_GATEWAY_ADDRESS={raw}: use host:port, https://host:port or http://host:port")
    return Target(address, credentials(settings) if tls else None)
