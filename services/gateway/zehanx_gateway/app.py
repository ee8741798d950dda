"""Assembling the gateway: database, migrations, registry, event hub, auth, services, servicer.

``Gateway.open(settings)`` is what ``zx-gateway`` runs before serving, and what tests and the benchmark
use to get the very same object graph on port 0.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc
from psycopg_pool import AsyncConnectionPool
from zehanx.gateway.v1 import gateway_service_pb2_grpc as rpc
from zehanx_runtime.logging import get_logger
from zehanx_runtime.server import ServiceBinding

from zehanx_gateway import db
from zehanx_gateway.api_keys import ApiKeyService
from zehanx_gateway.artifacts import ArtifactStore, LocalArtifactStore
from zehanx_gateway.auth import SESSION_AUDIENCE, SESSION_ISSUER, Authenticator, JwtConfig, JwtVerifier
from zehanx_gateway.clients.trainer import GrpcTrainerPredictor
from zehanx_gateway.datasets import DatasetService
from zehanx_gateway.fanout import EventHub
from zehanx_gateway.jobs import JobService
from zehanx_gateway.models import ModelService
from zehanx_gateway.provider_keys import ProviderKeyService
from zehanx_gateway.servicer import SERVICE_NAME, GatewayServicer
from zehanx_gateway.settings import GatewaySettings
from zehanx_gateway.store import PostgresRegistry
from zehanx_gateway.store.accounts import session_key
from zehanx_gateway.uploads import UploadService
from zehanx_gateway.user_settings import UserSettingsService

log = get_logger("zehanx.gateway.app")


def _read_pem(path: Path, variable: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise RuntimeError(f"cannot read {variable}={path}: {exc.strerror or exc}") from None


def server_credentials(settings: GatewaySettings) -> grpc.ServerCredentials | None:
    """TLS credentials of the public gRPC port (ZX_GATEWAY_TLS_CERT_FILE / _KEY_FILE); None: plaintext."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    chain = _read_pem(settings.tls_cert_file, "ZX_GATEWAY_TLS_CERT_FILE")
    key = _read_pem(settings.tls_key_file, "ZX_GATEWAY_TLS_KEY_FILE")
    try:  # the same check the edge's TLS makes: PEM that parses, a key that matches the certificate
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
            settings.tls_cert_file, settings.tls_key_file
        )
    except (ssl.SSLError, ValueError) as exc:
        raise RuntimeError(
            f"ZX_GATEWAY_TLS_CERT_FILE / ZX_GATEWAY_TLS_KEY_FILE are not a matching PEM certificate and key: {exc}"
        ) from None
    return grpc.ssl_server_credentials([(key, chain)])


@dataclass
class Gateway:
    settings: GatewaySettings
    pool: AsyncConnectionPool
    registry: PostgresRegistry
    hub: EventHub
    jobs: JobService
    models: ModelService
    artifacts: ArtifactStore
    authenticator: Authenticator
    servicer: GatewayServicer
    predictor: GrpcTrainerPredictor
    uploads: UploadService
    provider_keys: ProviderKeyService
    #: The key the gateway generated to sign its own accounts' sessions; None in Supabase mode.
    session_key: str | None = None

    @classmethod
    async def open(cls, settings: GatewaySettings, *, artifacts: ArtifactStore | None = None) -> Gateway:
        """Connect, migrate, and start the event hub. Fails loudly without a database."""
        if settings.database_url is None:
            raise RuntimeError(
                "the gateway needs PostgreSQL: set ZX_GATEWAY_DATABASE_URL (zx up does this for you, "
                "starting the embedded one)"
            )
        url = settings.database_url.get_secret_value()
        jwt_config = JwtConfig(
            secret=settings.jwt_secret.get_secret_value() if settings.jwt_secret else None,
            jwks_url=settings.jwt_jwks_url,
            jwks_json=settings.jwt_jwks_json,
            audience=settings.jwt_audience or None,
            issuer=settings.jwt_issuer or None,
            leeway_seconds=settings.jwt_leeway_seconds,
        )
        verifier = JwtVerifier(jwt_config) if jwt_config.enabled else None
        pooler = settings.database_transaction_pooler
        if pooler is None:
            pooler = db.is_transaction_pooler(url)
        if pooler:
            log.warning(
                "the database URL is a transaction-mode pooler: prepared statements and LISTEN are off; "
                "other replicas' events come from the poll (ZX_GATEWAY_EVENT_POLL_SECONDS, 0: never)",
                poll_seconds=settings.event_poll_seconds,
            )
        migration_url = (
            settings.migration_database_url.get_secret_value() if settings.migration_database_url else url
        )
        try:
            await db.migrate(migration_url)
        except Exception as exc:
            if isinstance(exc, RuntimeError):
                raise
            raise RuntimeError(f"cannot prepare the database ({db.redact(migration_url)}): {exc}") from exc
        pool = await db.open_pool(
            url,
            max_size=settings.database_pool_size,
            prepare=settings.database_prepared_statements and not pooler,
        )
        registry = PostgresRegistry(pool)
        # The own accounts' sessions: signed with a key generated here (never a configured secret),
        # with their own issuer and audience; off when Supabase signs users in.
        own_key = None if settings.supabase_mode else await session_key(pool)
        sessions = (
            JwtVerifier(
                JwtConfig(
                    secret=own_key,
                    audience=SESSION_AUDIENCE,
                    issuer=SESSION_ISSUER,
                    leeway_seconds=settings.jwt_leeway_seconds,
                    required_claims=("session_id",),
                )
            )
            if own_key
            else None
        )
        hub = EventHub(
            registry,
            subscriber_buffer=settings.watch_buffer,
            batch_max=settings.event_batch_max,
            poll_seconds=settings.event_poll_seconds,
        )
        hub.start(url if settings.event_listen and not pooler else None)
        store = artifacts or LocalArtifactStore(settings.artifact_root)
        uploads = UploadService(
            registry,
            settings.upload_root,
            quota_bytes=settings.upload_quota_bytes,
            max_in_progress=settings.max_concurrent_uploads_per_user,
        )
        jobs = JobService(
            registry,
            hub,
            max_active_jobs=settings.max_active_jobs_per_user,
            max_jobs_per_minute=settings.max_jobs_per_user_per_minute,
            max_jobs_per_day=settings.max_jobs_per_user_per_day,
            max_memory_bytes=settings.max_job_memory_bytes,
            source_check=uploads.check_sources,
        )
        provider_keys = ProviderKeyService(registry, settings.secrets_key_value())
        predictor = GrpcTrainerPredictor(
            settings.trainer_address,
            settings.trainer_token_value,
            max_message_bytes=settings.max_message_bytes,
        )
        models = ModelService(
            registry,
            store,
            predictor,
            predict_timeout_s=settings.predict_timeout_seconds,
            max_concurrent_predicts=settings.max_concurrent_predicts_per_user,
            stream_in_flight=settings.predict_stream_in_flight,
        )
        return cls(
            settings=settings,
            pool=pool,
            registry=registry,
            hub=hub,
            jobs=jobs,
            models=models,
            artifacts=store,
            authenticator=Authenticator(registry, registry, verifier, sessions=sessions),
            servicer=GatewayServicer(
                jobs,
                models,
                datasets=DatasetService(registry),
                uploads=uploads,
                api_keys=ApiKeyService(registry, recent_sign_in_seconds=settings.recent_sign_in_seconds),
                provider_keys=provider_keys,
                user_settings=UserSettingsService(registry),
                predict_max_bytes=settings.predict_max_bytes,
            ),
            predictor=predictor,
            uploads=uploads,
            provider_keys=provider_keys,
            session_key=own_key,
        )

    def binding(self) -> ServiceBinding:
        return ServiceBinding(rpc.add_GatewayServiceServicer_to_server, self.servicer, SERVICE_NAME)

    async def close(self) -> None:
        """Write the events still queued, then close the database pool."""
        await self.hub.close()
        await self.predictor.close()
        await self.pool.close()
