"""Dataset files from their owner, the crawler (``CrawlerService.ReadDatasetFile``).

The crawler names each split file ``zx-crawler:/datasets/<sha256>/<split>.jsonl``; the trainer never
opens the crawler's folder (it may be on another machine). It asks the crawler, which streams the
file; :mod:`zehanx_runtime.transfer` checks the size and the sha256 the job's ``DatasetRef`` names
before a byte is staged. The crawler's RPC errors become the trainer's domain errors by
:func:`zehanx_runtime.client.to_domain_error`, worded here for a dataset file.
"""

from __future__ import annotations

import grpc
from zehanx.crawler.v1 import crawler_service_pb2 as pb
from zehanx.crawler.v1 import crawler_service_pb2_grpc as rpc
from zehanx_runtime import transfer
from zehanx_runtime.client import Wording, call_metadata, internal_channel, to_domain_error
from zehanx_runtime.errors import DomainError, FailedPrecondition

#: Time allowed to receive one split file (the largest the trainer stages is ~48 MiB by default).
READ_TIMEOUT_S = 300.0


class GrpcCrawlerFiles:
    """Reads ``zx-crawler:`` dataset files from the crawler at ``address`` with the service token."""

    scheme = "zx-crawler"

    def __init__(self, address: str, token: str | None) -> None:
        self.address = address
        self._token = token
        self._channel = internal_channel(address)
        self._stub = rpc.CrawlerServiceStub(self._channel)

    async def read(self, uri: str, sha256: str, what: str, max_bytes: int) -> bytes:
        call = self._stub.ReadDatasetFile(
            pb.ReadDatasetFileRequest(uri=uri), timeout=READ_TIMEOUT_S, metadata=call_metadata(self._token)
        )
        try:
            _, data = await transfer.receive_bytes(
                call, what=what, max_bytes=max_bytes, expected_sha256=sha256 or None
            )
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc, what) from None
        except DomainError as exc:
            call.cancel()
            if exc.reason == "TRANSFER_TOO_LARGE":
                raise FailedPrecondition(
                    f"{what}: the file is more than this trainer stages ({max_bytes} bytes)",
                    reason="DATASET_TOO_LARGE",
                ) from None
            if exc.reason == "TRANSFER_UNEXPECTED_SHA256":
                raise FailedPrecondition(
                    f"{what}: the crawler's file does not match the dataset's sha256 ({exc.message})",
                    reason="DATASET_SHA256_MISMATCH",
                ) from None
            raise
        return data

    async def close(self) -> None:
        await self._channel.close()

    def _error(self, exc: grpc.aio.AioRpcError, what: str) -> DomainError:
        code = grpc.StatusCode
        wording = {
            code.UNAVAILABLE: Wording(
                f"{what}: the crawler at {{address}} cannot be reached to read the dataset ({{detail}})",
                "CRAWLER_UNAVAILABLE",
            ),
            code.NOT_FOUND: Wording(
                f"{what}: the crawler at {{address}} no longer has this dataset file ({{detail}}); build the "
                "dataset again",
                "DATASET_MISSING",
                FailedPrecondition,
            ),
            code.DEADLINE_EXCEEDED: Wording(
                f"{what}: reading the dataset from the crawler took too long", "DEADLINE_EXCEEDED"
            ),
            code.INVALID_ARGUMENT: Wording(
                f"{what}: the crawler does not know this URI ({{detail}})",
                "BAD_DATASET_URI",
                FailedPrecondition,
            ),
            code.INTERNAL: Wording(
                f"{what}: the crawler failed to send the dataset file ({{detail}})", "CRAWLER_FAILED"
            ),
        }
        return to_domain_error(
            exc,
            service="crawler",
            address=self.address,
            token_variable="ZX_TRAINER_CRAWLER_TOKEN (unset: ZX_TRAINER_SERVICE_TOKEN)",
            wording=wording,
        )
