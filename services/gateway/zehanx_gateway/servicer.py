"""``zehanx.gateway.v1.GatewayService``: thin — convert in, call the domain, convert out.

Requests arrive already authenticated (the caller is :func:`~zehanx_gateway.auth.current_principal`)
and validated against their protovalidate rules by the runtime's interceptor, which also maps the
domain's typed errors to status codes.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

from google.protobuf import duration_pb2, struct_pb2
from zehanx.common.v1 import task_family_pb2
from zehanx.gateway.v1 import account_pb2, dataset_record_pb2, job_pb2, model_pb2
from zehanx.gateway.v1 import gateway_service_pb2 as pb
from zehanx.gateway.v1 import gateway_service_pb2_grpc as rpc

from zehanx_gateway import convert
from zehanx_gateway.api_keys import ApiKeyService
from zehanx_gateway.auth import current_principal
from zehanx_gateway.datasets import DatasetService
from zehanx_gateway.domain import InstancesJsonl, Job, JobEvent
from zehanx_gateway.jobs import JobService
from zehanx_gateway.models import ModelService
from zehanx_gateway.provider_keys import ProviderKeyService
from zehanx_gateway.uploads import UploadService
from zehanx_gateway.user_settings import UserSettingsService

SERVICE_NAME = "zehanx.gateway.v1.GatewayService"

#: Converted WatchJob messages kept for reuse: one event goes to every watcher of its job, and
#: converting it (JSON payload to proto) costs far more than sending it.
_WATCH_CACHE_SIZE = 8192
#: ListJobs pages longer than this are converted in a worker thread: each job's stored options go
#: through ParseDict (up to about 5 ms for the largest hyperparameters allowed), and a page holds
#: up to 1000 jobs.
_JOBS_CONVERTED_INLINE = 50


class GatewayServicer(rpc.GatewayServiceServicer):
    def __init__(
        self,
        jobs: JobService,
        models: ModelService,
        *,
        datasets: DatasetService,
        uploads: UploadService,
        api_keys: ApiKeyService,
        provider_keys: ProviderKeyService,
        user_settings: UserSettingsService,
        predict_max_bytes: int = 1024 * 1024,
    ) -> None:
        self._jobs = jobs
        self._models = models
        self._datasets = datasets
        self._uploads = uploads
        self._api_keys = api_keys
        self._provider_keys = provider_keys
        self._user_settings = user_settings
        self._predict_max_bytes = predict_max_bytes
        self._watch_cache: OrderedDict[tuple[uuid.UUID, int], pb.WatchJobResponse] = OrderedDict()

    def _watch_message(self, event: JobEvent) -> pb.WatchJobResponse:
        key = (event.job_id, event.sequence)
        message = self._watch_cache.get(key)
        if message is None:
            message = pb.WatchJobResponse(event=convert.event_to_proto(event))
            self._watch_cache[key] = message
            if len(self._watch_cache) > _WATCH_CACHE_SIZE:
                self._watch_cache.popitem(last=False)
        return message

    # -- jobs -------------------------------------------------------------------------------------

    async def CreateJob(self, request: pb.CreateJobRequest, context: Any) -> job_pb2.Job:
        new = convert.new_job(request.job, request.request_id)
        return convert.job_to_proto(await self._jobs.create(current_principal(), new))

    async def GetJob(self, request: pb.GetJobRequest, context: Any) -> job_pb2.Job:
        job_id = convert.parse_id(request.job_id, "job_id")
        return convert.job_to_proto(await self._jobs.get(current_principal(), job_id))

    async def ListJobs(self, request: pb.ListJobsRequest, context: Any) -> pb.ListJobsResponse:
        page = await self._jobs.list(
            current_principal(),
            states=[convert.state_of(s) for s in request.states],
            page_size=request.page_size,
            page_token=request.page_token,
        )
        if len(page.items) > _JOBS_CONVERTED_INLINE:
            jobs = await asyncio.to_thread(lambda: [convert.job_to_proto(j) for j in page.items])
        else:
            jobs = [convert.job_to_proto(j) for j in page.items]
        return pb.ListJobsResponse(jobs=jobs, next_page_token=page.next_page_token)

    async def CancelJob(self, request: pb.CancelJobRequest, context: Any) -> job_pb2.Job:
        job_id = convert.parse_id(request.job_id, "job_id")
        return convert.job_to_proto(await self._jobs.cancel(current_principal(), job_id, request.reason))

    async def WatchJob(self, request: pb.WatchJobRequest, context: Any) -> AsyncIterator[pb.WatchJobResponse]:
        job_id = convert.parse_id(request.job_id, "job_id")
        async for item in self._jobs.watch(current_principal(), job_id, request.after_sequence):
            if isinstance(item, Job):
                yield pb.WatchJobResponse(event=convert.snapshot_to_proto(item))
            else:
                yield self._watch_message(item)

    async def ListJobEvents(self, request: pb.ListJobEventsRequest, context: Any) -> pb.ListJobEventsResponse:
        job_id = convert.parse_id(request.job_id, "job_id")
        page = await self._jobs.list_events(
            current_principal(),
            job_id,
            after_sequence=request.after_sequence,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return pb.ListJobEventsResponse(
            events=[convert.event_to_proto(e) for e in page.items], next_page_token=page.next_page_token
        )

    # -- models -----------------------------------------------------------------------------------

    async def ListModels(self, request: pb.ListModelsRequest, context: Any) -> pb.ListModelsResponse:
        page = await self._models.list(
            current_principal(),
            page_size=request.page_size,
            page_token=request.page_token,
            task_family=(
                task_family_pb2.TaskFamily.Name(request.task_family) if request.task_family else None
            ),
            job_id=convert.parse_id(request.job_id, "job_id") if request.job_id else None,
        )
        return pb.ListModelsResponse(
            models=[convert.model_to_proto(m) for m in page.items], next_page_token=page.next_page_token
        )

    async def GetModel(self, request: pb.GetModelRequest, context: Any) -> model_pb2.Model:
        model_id = convert.parse_id(request.model_id, "model_id")
        return convert.model_to_proto(await self._models.get(current_principal(), model_id))

    async def DownloadModel(
        self, request: pb.DownloadModelRequest, context: Any
    ) -> AsyncIterator[pb.DownloadModelResponse]:
        model_id = convert.parse_id(request.model_id, "model_id")
        download = await self._models.download(
            current_principal(), model_id, offset=request.offset, chunk_size=request.chunk_size_bytes
        )
        yield pb.DownloadModelResponse(
            header=pb.DownloadHeader(
                model=convert.model_to_proto(download.model),
                filename=download.filename,
                media_type=download.model.media_type,
                total_size_bytes=download.total_size,
                sha256=download.model.archive_sha256,
                offset=download.offset,
            )
        )
        offset = download.offset
        async for data in download.chunks:
            yield pb.DownloadModelResponse(chunk=pb.DownloadChunk(offset=offset, data=data))
            offset += len(data)

    async def DeleteModel(self, request: pb.DeleteModelRequest, context: Any) -> pb.DeleteModelResponse:
        model_id = convert.parse_id(request.model_id, "model_id")
        await self._models.delete(current_principal(), model_id)
        return pb.DeleteModelResponse()

    async def Predict(self, request: pb.PredictRequest, context: Any) -> pb.PredictResponse:
        model_id = convert.parse_id(request.model_id, "model_id")
        instances: Sequence[Any] | InstancesJsonl
        if request.instances_jsonl and request.instances:
            raise convert.invalid(
                "instances_jsonl", "set together with instances: give one form", "predict_request.one_form"
            )
        if request.instances_jsonl:
            instances = convert.instances_jsonl(request.instances_jsonl, self._predict_max_bytes)
        elif not request.instances:
            # A field-level answer (a message-level rule would name no field): what a client fixes.
            raise convert.invalid(
                "instances", "give 1 to 1000 instances (or instances_jsonl)", "repeated.min_items"
            )
        else:
            instances = await self._checked_instances(request.instances)
        remaining = context.time_remaining() if context is not None else None
        result = await self._models.predict(current_principal(), model_id, instances, timeout_s=remaining)
        return pb.PredictResponse(
            predictions=convert.predictions_to_proto(result.predictions),
            predict_duration=_duration(result.duration_s),
            warm=result.warm,
            restarted=result.restarted,
            predictions_jsonl=result.predictions_jsonl,
        )

    async def PredictStream(
        self, requests: AsyncIterator[pb.PredictStreamRequest], context: Any
    ) -> AsyncIterator[pb.PredictStreamResponse]:
        first = await anext(aiter(requests), None)
        if first is None or not first.model_id:
            raise convert.invalid("model_id", "the first message of the stream must name the model")
        model_id = convert.parse_id(first.model_id, "model_id")

        async def chunks() -> AsyncIterator[list[struct_pb2.Value]]:
            if first.instances:
                yield await self._checked_instances(first.instances)
            async for request in requests:
                if request.model_id and request.model_id != first.model_id:
                    raise convert.invalid("model_id", "one stream predicts with one model: leave it empty")
                if not request.instances:
                    raise convert.invalid("instances", "each message after the first carries 1 to 1000")
                yield await self._checked_instances(request.instances)

        remaining = context.time_remaining() if context is not None else None
        answers = self._models.predict_stream(current_principal(), model_id, chunks(), timeout_s=remaining)
        try:
            async for answer in answers:
                result = answer.result
                yield pb.PredictStreamResponse(
                    offset=answer.offset,
                    predictions=convert.predictions_to_proto(result.predictions),
                    predict_duration=_duration(result.duration_s),
                    warm=result.warm,
                    restarted=result.restarted,
                )
        finally:
            await answers.aclose()  # its slots and running calls end with the call, not at GC time

    async def _checked_instances(self, given: Iterable[struct_pb2.Value]) -> list[struct_pb2.Value]:
        """The instances as they came (no conversion: they go to the trainer as they are), bounded first
        (protovalidate skips them: see convert.py), the depth walk of large ones off the loop."""
        instances = list(given)
        size = convert.check_instances_size(instances, self._predict_max_bytes)
        if size > convert.INSTANCES_CHECKED_INLINE_BYTES:
            await asyncio.to_thread(convert.check_instances_depth, instances)
        else:
            convert.check_instances_depth(instances)
        return instances

    # -- datasets and uploads ---------------------------------------------------------------------

    async def ListDatasets(self, request: pb.ListDatasetsRequest, context: Any) -> pb.ListDatasetsResponse:
        page = await self._datasets.list(
            current_principal(), page_size=request.page_size, page_token=request.page_token
        )
        return pb.ListDatasetsResponse(
            datasets=[convert.dataset_record_to_proto(d) for d in page.items],
            next_page_token=page.next_page_token,
        )

    async def GetDataset(
        self, request: pb.GetDatasetRequest, context: Any
    ) -> dataset_record_pb2.DatasetRecord:
        job_id = convert.parse_id(request.job_id, "job_id")
        return convert.dataset_record_to_proto(await self._datasets.get(current_principal(), job_id))

    async def UploadFile(
        self, request: pb.UploadFileRequest, context: Any
    ) -> dataset_record_pb2.UploadedFile:
        upload = await self._uploads.upload(current_principal(), request.filename, request.content)
        return convert.upload_to_proto(upload)

    # -- API keys ---------------------------------------------------------------------------------

    async def CreateApiKey(self, request: pb.CreateApiKeyRequest, context: Any) -> pb.CreateApiKeyResponse:
        key, secret = await self._api_keys.create(current_principal(), request.label)
        return pb.CreateApiKeyResponse(api_key=convert.api_key_to_proto(key), secret=secret)

    async def ListApiKeys(self, request: pb.ListApiKeysRequest, context: Any) -> pb.ListApiKeysResponse:
        keys = await self._api_keys.list(current_principal())
        return pb.ListApiKeysResponse(api_keys=[convert.api_key_to_proto(k) for k in keys])

    async def RevokeApiKey(self, request: pb.RevokeApiKeyRequest, context: Any) -> account_pb2.ApiKey:
        return convert.api_key_to_proto(await self._api_keys.revoke(current_principal(), request.key_id))

    # -- provider keys ----------------------------------------------------------------------------

    async def SetProviderKey(
        self, request: pb.SetProviderKeyRequest, context: Any
    ) -> account_pb2.ProviderKey:
        provider = convert.provider_of(request.provider)
        stored = await self._provider_keys.set(current_principal(), provider, request.secret)
        return convert.provider_key_to_proto(stored)

    async def ListProviderKeys(
        self, request: pb.ListProviderKeysRequest, context: Any
    ) -> pb.ListProviderKeysResponse:
        keys = await self._provider_keys.list(current_principal())
        return pb.ListProviderKeysResponse(provider_keys=[convert.provider_key_to_proto(k) for k in keys])

    async def DeleteProviderKey(
        self, request: pb.DeleteProviderKeyRequest, context: Any
    ) -> pb.DeleteProviderKeyResponse:
        await self._provider_keys.delete(current_principal(), convert.provider_of(request.provider))
        return pb.DeleteProviderKeyResponse()

    # -- user settings ----------------------------------------------------------------------------

    async def GetUserSettings(
        self, request: pb.GetUserSettingsRequest, context: Any
    ) -> account_pb2.UserSettings:
        return convert.user_settings_to_proto(await self._user_settings.get(current_principal()))

    async def UpdateUserSettings(
        self, request: pb.UpdateUserSettingsRequest, context: Any
    ) -> account_pb2.UserSettings:
        stored = await self._user_settings.replace(
            current_principal(), convert.user_settings_json(request.settings)
        )
        return convert.user_settings_to_proto(stored)


def _duration(seconds: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(int(seconds * 1e9))
    return duration
