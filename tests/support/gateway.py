"""The gateway as ``zx-gateway`` starts it: its object graph and its public gRPC server (the runtime's
bootstrap, no service token, the authenticator's check) on the settings' port; API keys, a published
model, and the quiet logs its tests run with. Used by the gateway, edge and TLS tests, each with its own
settings and extras."""

from __future__ import annotations

from typing import Any

import pytest
from zehanx.common.v1 import metrics_pb2, task_family_pb2
from zehanx.gateway.v1 import model_pb2
from zehanx_gateway import convert
from zehanx_gateway.app import Gateway
from zehanx_gateway.auth import new_api_key
from zehanx_gateway.settings import GatewaySettings
from zehanx_runtime.logging import configure_logging
from zehanx_runtime.server import RunningServer, start_server


async def open_gateway(settings: GatewaySettings, **server_options: Any) -> tuple[Gateway, RunningServer]:
    """``server_options`` go to ``start_server`` (for example ``credentials`` for TLS)."""
    gateway = await Gateway.open(settings)
    server = await start_server(
        settings,
        [gateway.binding()],
        service_name="gateway",
        internal=False,
        extra_check=gateway.authenticator.check,
        **server_options,
    )
    return gateway, server


async def api_key(gateway: Gateway, user: str, name: str = "test") -> str:
    """A new API key ``name`` of ``user`` (created on first use): the whole key, to send as a bearer."""
    user_id = await gateway.registry.user_by_name(user, create=True)
    key = new_api_key()
    await gateway.registry.add_api_key(user_id, key.key_id, key.secret_sha256, name)
    return key.token


async def publish_model(
    gateway: Gateway,
    user: str,
    data: bytes,
    *,
    title: str = "Sentiment",
    trainer_artifact_id: str | None = None,
) -> model_pb2.Model:
    """Store an archive and record a sentiment model for ``user``, as the orchestrator does at PUBLISHING."""
    info = await gateway.artifacts.put([data])
    record = model_pb2.Model(
        title=title,
        prompt="Create a sentiment analysis model",
        task_family=task_family_pb2.TASK_FAMILY_TEXT_CLASSIFICATION,
        class_labels=["negative", "positive"],
        metric_name="accuracy",
        held_out_metrics=metrics_pb2.Metrics(values={"accuracy": 0.91}),
        baseline_name="majority_class",
        baseline_metrics=metrics_pb2.Metrics(values={"accuracy": 0.5}),
        model_card="# Sentiment\n",
        archive_sha256=info.sha256,
        archive_size_bytes=info.size,
    )
    user_id = await gateway.registry.user_by_name(user)
    model = await gateway.models.publish(
        user_id, convert.new_model(record, trainer_artifact_id=trainer_artifact_id)
    )
    return convert.model_to_proto(model)


@pytest.fixture(autouse=True, scope="session")
def _quiet_logs() -> None:
    """Warnings and errors only: one line per RPC of 200 watchers would drown the output. Autouse where a
    folder's conftest or a test module imports it."""
    configure_logging("warning", json=True)
