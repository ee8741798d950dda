"""Wiring: settings -> executor client, artifact store, trainer, predictor, servicer."""

from __future__ import annotations

from dataclasses import dataclass

from zehanx_trainer.artifacts import ArtifactStore, LocalBlobBackend
from zehanx_trainer.clients.crawler import GrpcCrawlerFiles
from zehanx_trainer.clients.executor import GrpcExecutor
from zehanx_trainer.datasets import DatasetFileRouter, DatasetFiles, LocalDatasetFiles
from zehanx_trainer.executor_port import Executor
from zehanx_trainer.prediction import Predictor, PredictorConfig
from zehanx_trainer.servicer import TrainerServicer
from zehanx_trainer.serving import PredictorPool, ServingConfig
from zehanx_trainer.settings import TrainerSettings
from zehanx_trainer.training import Trainer, TrainerConfig


@dataclass
class TrainerApp:
    trainer: Trainer
    predictor: Predictor
    servicer: TrainerServicer
    store: ArtifactStore
    store_description: str
    executor: Executor
    crawler: GrpcCrawlerFiles | None = None

    async def close(self) -> None:
        await self.predictor.close()
        close = getattr(self.executor, "close", None)
        if close is not None:
            await close()
        if self.crawler is not None:
            await self.crawler.close()


def trainer_config(settings: TrainerSettings) -> TrainerConfig:
    return TrainerConfig(
        dataset_roots=tuple(settings.resolved_dataset_roots),
        max_dataset_bytes=settings.max_dataset_bytes,
        smoke_timeout_s=settings.smoke_timeout_s,
        smoke_predict_rows=settings.smoke_predict_rows,
        default_training_s=settings.default_training_s,
        max_training_s=settings.max_training_s,
        training_grace_s=settings.training_grace_s,
        eval_timeout_s=settings.eval_timeout_s,
        memory_bytes=settings.memory_bytes,
        max_memory_bytes=settings.max_memory_bytes,
        max_processes=settings.max_processes,
        disk_bytes=settings.disk_bytes,
        output_bytes=settings.output_bytes,
        max_model_bytes=settings.max_model_bytes,
        gpus=settings.resolved_gpus,
        seed=settings.seed,
        max_concurrent_runs=settings.max_concurrent_runs,
        log_lines_per_s=settings.log_lines_per_s,
        max_weights_header_bytes=settings.max_weights_header_bytes,
    )


def build_store(settings: TrainerSettings) -> tuple[ArtifactStore, str]:
    if settings.use_supabase:
        from zehanx_trainer.clients.supabase import SupabaseBlobBackend

        assert settings.supabase_url and settings.supabase_service_key
        backend = SupabaseBlobBackend.connect(
            settings.supabase_url,
            settings.supabase_service_key.get_secret_value(),
            settings.supabase_bucket,
            create_bucket=settings.supabase_create_bucket,
        )
        return ArtifactStore(backend), f"supabase bucket {settings.supabase_bucket}"
    root = settings.resolved_artifact_dir
    return ArtifactStore(LocalBlobBackend(root)), f"local folder {root}"


def build(settings: TrainerSettings, *, executor: Executor | None = None) -> TrainerApp:
    executor = executor or GrpcExecutor(settings.executor_address, settings.executor_token_value)
    store, description = build_store(settings)
    config = trainer_config(settings)
    crawler = GrpcCrawlerFiles(settings.crawler_address, settings.crawler_token_value)
    files: DatasetFiles = DatasetFileRouter(
        LocalDatasetFiles(list(config.dataset_roots)), {GrpcCrawlerFiles.scheme: crawler}
    )
    trainer = Trainer(executor, store, config, dataset_files=files)
    pool = (
        PredictorPool(
            executor,
            ServingConfig(
                max_predictors=settings.predictors_max,
                max_memory_bytes=settings.predictors_memory_bytes,
                predictor_memory_bytes=settings.predictor_memory_bytes,
                idle_s=settings.predictor_idle_s,
                life_s=settings.predictor_life_s,
                start_timeout_s=settings.predict_timeout_s,
                call_timeout_s=settings.predict_timeout_s,
                max_processes=settings.max_processes,
                disk_bytes=settings.disk_bytes,
            ),
        )
        if hasattr(executor, "open_session")
        else None
    )
    predictor = Predictor(
        executor,
        store,
        PredictorConfig(
            cache_models=settings.predict_cache_models,
            cache_bytes=settings.predict_cache_bytes,
            timeout_s=settings.predict_timeout_s,
            memory_bytes=settings.memory_bytes,
            max_processes=settings.max_processes,
            disk_bytes=settings.disk_bytes,
        ),
        pool=pool,
    )
    servicer = TrainerServicer(trainer, predictor, store, spool_dir=settings.home / "spool")
    return TrainerApp(trainer, predictor, servicer, store, description, executor, crawler)
