"""Datasets: what the caller's jobs built, read from their ``dataset_built`` events (no second copy).

Another user's job, or a job that has built no dataset yet, is NOT_FOUND.
"""

from __future__ import annotations

import uuid
from typing import Protocol

from zehanx_gateway import paging
from zehanx_gateway.domain import DatasetRecord, Page, Principal


class DatasetStore(Protocol):
    async def list_datasets(
        self, user_id: uuid.UUID, *, page_size: int, page_token: str
    ) -> Page[DatasetRecord]: ...

    async def get_dataset(self, job_id: uuid.UUID, *, user_id: uuid.UUID) -> DatasetRecord: ...


class DatasetService:
    def __init__(self, store: DatasetStore) -> None:
        self._store = store

    async def list(self, principal: Principal, *, page_size: int, page_token: str) -> Page[DatasetRecord]:
        """The caller's datasets, newest first."""
        return await self._store.list_datasets(
            principal.user_id, page_size=paging.page_size(page_size), page_token=page_token
        )

    async def get(self, principal: Principal, job_id: uuid.UUID) -> DatasetRecord:
        return await self._store.get_dataset(job_id, user_id=principal.user_id)
