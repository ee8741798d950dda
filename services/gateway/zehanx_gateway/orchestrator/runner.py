"""Assembling the workers of a running gateway: clients of the internal services, pipeline, loops."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from zehanx_gateway.clients.pipeline import GrpcCodegen, GrpcCrawler, GrpcTrainer
from zehanx_gateway.orchestrator.pipeline import Pipeline
from zehanx_gateway.orchestrator.ports import DatasetBuilder, ProgramWriter, Trainer
from zehanx_gateway.orchestrator.settings import OrchestratorSettings
from zehanx_gateway.orchestrator.worker import Orchestrator

if TYPE_CHECKING:
    from zehanx_gateway.app import Gateway


@dataclass
class Workers:
    """The orchestrator and the channels it owns."""

    orchestrator: Orchestrator
    clients: list[GrpcCrawler | GrpcCodegen | GrpcTrainer]

    async def close(self) -> None:
        await self.orchestrator.close()
        for client in self.clients:
            await client.close()


def start_workers(
    gateway: Gateway,
    settings: OrchestratorSettings | None = None,
    *,
    crawler: DatasetBuilder | None = None,
    codegen: ProgramWriter | None = None,
    trainer: Trainer | None = None,
) -> Workers:
    """Start ``settings.workers`` job loops on ``gateway`` (the services default to gRPC clients at the
    gateway's configured addresses, with its service token)."""
    settings = settings or OrchestratorSettings()
    gs = gateway.settings
    token = gs.service_token.get_secret_value() if gs.service_token else None
    size = gs.max_message_bytes
    clients: list[GrpcCrawler | GrpcCodegen | GrpcTrainer] = []
    if crawler is None:
        crawler = GrpcCrawler(gs.crawler_address, token, max_message_bytes=size)
        clients.append(crawler)
    if codegen is None:
        codegen = GrpcCodegen(gs.codegen_address, token, max_message_bytes=size)
        clients.append(codegen)
    if trainer is None:
        trainer = GrpcTrainer(gs.trainer_address, gs.trainer_token_value, max_message_bytes=size)
        clients.append(trainer)
    root = getattr(gateway.artifacts, "root", None)
    pipeline = Pipeline(
        jobs=gateway.jobs,
        models=gateway.models,
        artifacts=gateway.artifacts,
        registry=gateway.registry,
        crawler=crawler,
        codegen=codegen,
        trainer=trainer,
        settings=settings,
        spool_dir=Path(root) / "staging" if root is not None else None,
        uploads=gateway.uploads,
        provider_keys=gateway.provider_keys,
    )
    orchestrator = Orchestrator(
        registry=gateway.registry, jobs=gateway.jobs, hub=gateway.hub, pipeline=pipeline, settings=settings
    )
    orchestrator.start()
    return Workers(orchestrator, clients)
