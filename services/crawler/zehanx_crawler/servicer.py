"""CrawlerService over gRPC: convert the request in, run the builder, convert events and the dataset out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import grpc
from zehanx.common.v1 import file_transfer_pb2
from zehanx.crawler.v1 import crawler_service_pb2 as pb
from zehanx.crawler.v1 import crawler_service_pb2_grpc as rpc
from zehanx_runtime import provider_keys, transfer
from zehanx_runtime.errors import FieldViolation, InvalidArgument

from zehanx_crawler import convert
from zehanx_crawler.builder import DatasetBuilder
from zehanx_crawler.catalogue import Catalogue
from zehanx_crawler.domain import Progress
from zehanx_crawler.store import DatasetStore
from zehanx_crawler.uploads import UploadInbox

SERVICE_NAME = "zehanx.crawler.v1.CrawlerService"
DEFAULT_PAGE_SIZE = 100


class CrawlerServicer(rpc.CrawlerServiceServicer):
    """Thin: the builder does the work."""

    def __init__(
        self,
        builder: DatasetBuilder,
        catalogue: Catalogue,
        store: DatasetStore,
        uploads: UploadInbox,
        *,
        max_upload_bytes: int,
    ) -> None:
        self._builder = builder
        self._catalogue = catalogue
        self._store = store
        self._uploads = uploads
        self._max_upload_bytes = max_upload_bytes

    async def BuildDataset(
        self, request: pb.BuildDatasetRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.BuildDatasetResponse]:
        key = (
            provider_keys.caller_key(context.invocation_metadata(), provider_keys.FIRECRAWL_KEY)
            if context
            else None
        )
        build = convert.to_build_request(request, firecrawl_api_key=key)
        sequence = 0
        async for event in self._builder.build(build):
            sequence += 1
            now = datetime.now(UTC)
            if isinstance(event, Progress):
                yield convert.progress_response(sequence, now, event)
            else:
                yield convert.dataset_response(sequence, now, event)

    async def ReadDatasetFile(
        self, request: pb.ReadDatasetFileRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ReadDatasetFileResponse]:
        path, info = await asyncio.to_thread(self._store.locate, request.uri)
        async for message in transfer.stream_file(
            path, info, pb.ReadDatasetFileResponse, file_transfer_pb2.FileHeader
        ):
            yield message

    async def PutSourceFile(
        self, request_iterator: AsyncIterator[pb.PutSourceFileRequest], context: grpc.aio.ServicerContext
    ) -> pb.PutSourceFileResponse:
        first: list[pb.PutSourceFileRequest] = []

        async def messages() -> AsyncIterator[pb.PutSourceFileRequest]:
            async for message in request_iterator:
                if not first:
                    first.append(message)
                    UploadInbox.check(message.upload_id, message.header.name)
                yield message

        try:
            received = await transfer.receive_file(
                messages(),
                what="the uploaded file",
                max_bytes=self._max_upload_bytes,
                spool_dir=self._uploads.staging,
            )
        except transfer.TransferBroken as exc:  # the caller's stream, not this service, is at fault
            raise InvalidArgument(exc.message, reason=exc.reason) from None
        try:
            await asyncio.to_thread(self._uploads.keep, first[0].upload_id, received)
        finally:
            received.close()
        return pb.PutSourceFileResponse(
            upload_id=first[0].upload_id, size_bytes=received.info.size_bytes, sha256=received.info.sha256
        )

    async def ListCatalog(
        self, request: pb.ListCatalogRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListCatalogResponse:
        entries = sorted(self._catalogue.entries, key=lambda e: e.name)
        if request.task_family:
            entries = [e for e in entries if convert.TASK_FAMILIES[e.task] == request.task_family]
        start = 0
        if request.page_token:
            if not request.page_token.isdigit() or int(request.page_token) > len(entries):
                raise InvalidArgument(
                    "invalid page_token",
                    violations=[
                        FieldViolation("page_token", "not a token this service returned", "BAD_PAGE_TOKEN")
                    ],
                )
            start = int(request.page_token)
        size = request.page_size or DEFAULT_PAGE_SIZE
        page = entries[start : start + size]
        following = start + size
        return pb.ListCatalogResponse(
            entries=[convert.catalogue_message(e) for e in page],
            next_page_token=str(following) if following < len(entries) else "",
        )
