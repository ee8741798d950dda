"""Models, the datasets jobs built, and uploads: what a user's jobs make and take.

Every method takes the owner's ``user_id`` and filters by it, so another user's row is simply not found
(NOT_FOUND, never PERMISSION_DENIED: ids do not leak). A model's archive is shared by content
(``archive_sha256``): publishing and deleting take the artifact's advisory lock, so a file still in use
is never removed. Uploads are charged to their user before their bytes are written.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from psycopg.types.json import Jsonb
from zehanx_runtime import errors

from zehanx_gateway import metrics
from zehanx_gateway.domain import DatasetRecord, Model, NewModel, Page, Upload
from zehanx_gateway.store.base import (
    LOCK_ARTIFACT,
    LOCK_USER_UPLOADS,
    PoolStore,
    job_not_found,
    model_not_found,
    translated,
)


def _model(row: dict[str, Any]) -> Model:
    return Model(
        id=row["id"],
        user_id=row["user_id"],
        job_id=row["job_id"],
        title=row["title"],
        prompt=row["prompt"],
        task_family=row["task_family"],
        metric_name=row["metric_name"],
        details=row["details"],
        model_card=row["model_card"],
        archive_sha256=row["archive_sha256"],
        archive_size=row["archive_size"],
        media_type=row["media_type"],
        create_time=row["create_time"],
        trainer_artifact_id=row.get("trainer_artifact_id"),
    )


def _dataset(row: dict[str, Any]) -> DatasetRecord:
    return DatasetRecord(
        job_id=row["job_id"], job_prompt=row["prompt"], create_time=row["event_time"], payload=row["payload"]
    )


def _upload(row: dict[str, Any]) -> Upload:
    return Upload(
        id=row["id"],
        user_id=row["user_id"],
        filename=row["filename"],
        size_bytes=row["size_bytes"],
        sha256=row["sha256"],
        create_time=row["create_time"],
    )


class PostgresModelStore(PoolStore):
    """Models, datasets (read from the jobs' events) and uploads."""

    # -- models -----------------------------------------------------------------------------------

    @translated
    async def create_model(self, user_id: uuid.UUID, new: NewModel) -> Model:
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute(
                "select pg_advisory_xact_lock(%s, hashtext(%s))", (LOCK_ARTIFACT, new.archive_sha256)
            )
            if new.job_id is not None:
                cur = await conn.execute(
                    "select 1 from zehanx.jobs where id = %s and user_id = %s", (new.job_id, user_id)
                )
                if await cur.fetchone() is None:
                    raise job_not_found(new.job_id)
            cur = await conn.execute(
                """
                insert into zehanx.models (user_id, job_id, title, prompt, task_family, metric_name, details,
                                           model_card, archive_sha256, archive_size, media_type,
                                           trainer_artifact_id)
                values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) returning *
                """,
                (
                    user_id,
                    new.job_id,
                    new.title,
                    new.prompt,
                    new.task_family,
                    new.metric_name,
                    Jsonb(dict(new.details)),
                    new.model_card,
                    new.archive_sha256,
                    new.archive_size,
                    new.media_type,
                    new.trainer_artifact_id,
                ),
            )
            row = await cur.fetchone()
            assert row is not None
            return _model(row)

    @translated
    async def get_model(self, model_id: uuid.UUID, *, user_id: uuid.UUID) -> Model:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "select * from zehanx.models where id = %s and user_id = %s", (model_id, user_id)
            )
            row = await cur.fetchone()
        if row is None:
            raise model_not_found(model_id)
        return _model(row)

    @translated
    async def list_models(
        self,
        user_id: uuid.UUID,
        *,
        page_size: int,
        page_token: str,
        task_family: str | None = None,
        job_id: uuid.UUID | None = None,
    ) -> Page[Model]:
        """The user's models, newest first, optionally of one task family or one job."""
        return await self._keyset_page(
            """
            select * from zehanx.models
            where user_id = %(user)s
              and (%(family)s::text is null or task_family = %(family)s)
              and (%(job)s::uuid is null or job_id = %(job)s)
            """,
            {"user": user_id, "family": task_family, "job": job_id},
            order=("create_time", "id"),
            kind="models",
            filters=(str(user_id), task_family, str(job_id)),
            page_size=page_size,
            page_token=page_token,
            item=_model,
            position=lambda model: (model.create_time, model.id),
        )

    @translated
    async def delete_model(
        self,
        model_id: uuid.UUID,
        *,
        user_id: uuid.UUID,
        on_unreferenced: Callable[[str], Awaitable[None]],
    ) -> Model:
        """Delete the model; when no other model shares its artifact, ``on_unreferenced(sha256)`` runs
        inside the transaction (under the artifact's lock), so a concurrent publish of the same bytes
        cannot lose its file."""
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "select archive_sha256 from zehanx.models where id = %s and user_id = %s", (model_id, user_id)
            )
            row = await cur.fetchone()
            if row is None:
                raise model_not_found(model_id)
            digest = row["archive_sha256"]
            await conn.execute("select pg_advisory_xact_lock(%s, hashtext(%s))", (LOCK_ARTIFACT, digest))
            cur = await conn.execute(
                "delete from zehanx.models where id = %s and user_id = %s returning *", (model_id, user_id)
            )
            deleted = await cur.fetchone()
            if deleted is None:
                raise model_not_found(model_id)
            cur = await conn.execute(
                "select exists (select 1 from zehanx.models where archive_sha256 = %s) as shared", (digest,)
            )
            shared = await cur.fetchone()
            assert shared is not None
            if not shared["shared"]:
                await on_unreferenced(digest)
            return _model(deleted)

    # -- datasets (read from the jobs' dataset_built events) ------------------------------------------

    #: The latest dataset_built event of each of a user's jobs, without the resume data (the whole
    #: dataset again, which only the orchestrator reads).
    _DATASETS = """
        select e.job_id, e.event_time, e.payload - 'zx_resume' as payload, j.prompt
        from zehanx.job_events e join zehanx.jobs j on j.id = e.job_id and j.user_id = e.user_id
        where e.user_id = %(user)s and e.kind = 'dataset_built'
          and not exists (select 1 from zehanx.job_events later
                          where later.job_id = e.job_id and later.kind = 'dataset_built'
                            and later.sequence > e.sequence)
    """

    @translated
    async def list_datasets(
        self, user_id: uuid.UUID, *, page_size: int, page_token: str
    ) -> Page[DatasetRecord]:
        """The datasets the user's jobs built, newest first."""
        return await self._keyset_page(
            self._DATASETS,
            {"user": user_id},
            order=("e.event_time", "e.job_id"),
            kind="datasets",
            filters=(str(user_id),),
            page_size=page_size,
            page_token=page_token,
            item=_dataset,
            position=lambda dataset: (dataset.create_time, dataset.job_id),
        )

    @translated
    async def get_dataset(self, job_id: uuid.UUID, *, user_id: uuid.UUID) -> DatasetRecord:
        """The dataset of the user's job; NOT_FOUND for another user's job or one that built none yet."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                self._DATASETS + " and e.job_id = %(job)s", {"user": user_id, "job": job_id}
            )
            row = await cur.fetchone()
            if row is None:
                cur = await conn.execute(
                    "select 1 from zehanx.jobs where id = %s and user_id = %s", (job_id, user_id)
                )
                if await cur.fetchone() is None:
                    raise job_not_found(job_id)
                raise errors.NotFound(
                    f"job {job_id} has built no dataset yet",
                    reason="DATASET_NOT_FOUND",
                    metadata={"job_id": str(job_id)},
                )
        return _dataset(row)

    # -- uploads ----------------------------------------------------------------------------------------

    @translated
    async def reserve_upload(
        self,
        upload: Upload,
        *,
        quota_bytes: int | None,
        max_in_progress: int | None,
        stale_after: timedelta,
    ) -> list[Upload]:
        """Charge ``upload`` to its user before its file is written: in one transaction under the
        user's lock, check their quota (every row, pending ones included) and their uploads in
        progress, then insert the row pending. RESOURCE_EXHAUSTED beyond either limit. Returns the
        user's pending uploads older than ``stale_after`` (left by a crashed gateway), deleted here,
        whose files the caller removes."""
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute(
                "select pg_advisory_xact_lock(%s, hashtext(%s))", (LOCK_USER_UPLOADS, str(upload.user_id))
            )
            cur = await conn.execute(
                "delete from zehanx.uploads where user_id = %s and pending_since < now() - %s returning *",
                (upload.user_id, stale_after),
            )
            stale = [_upload(r) for r in await cur.fetchall()]
            cur = await conn.execute(
                "select coalesce(sum(size_bytes), 0)::bigint as used, "
                "count(*) filter (where pending_since is not null) as in_progress "
                "from zehanx.uploads where user_id = %s",
                (upload.user_id,),
            )
            row = await cur.fetchone()
            assert row is not None
            used, in_progress = int(row["used"]), int(row["in_progress"])
            if max_in_progress is not None and in_progress >= max_in_progress:
                metrics.RATE_LIMITED.labels("upload").inc()
                raise errors.ResourceExhausted(
                    f"you already have {in_progress} uploads in progress (the limit is {max_in_progress}, "
                    "ZX_GATEWAY_MAX_CONCURRENT_UPLOADS_PER_USER); wait for one to finish",
                    reason="TOO_MANY_UPLOADS",
                    metadata={"limit": str(max_in_progress), "in_progress": str(in_progress)},
                )
            if quota_bytes is not None and used + upload.size_bytes > quota_bytes:
                raise errors.ResourceExhausted(
                    f"your uploads would take {used + upload.size_bytes} bytes; the limit is {quota_bytes} "
                    "(ZX_GATEWAY_UPLOAD_QUOTA_BYTES)",
                    reason="UPLOAD_QUOTA_EXCEEDED",
                    metadata={"limit_bytes": str(quota_bytes), "used_bytes": str(used)},
                )
            await conn.execute(
                "insert into zehanx.uploads (id, user_id, filename, size_bytes, sha256, create_time, "
                "pending_since) values (%s, %s, %s, %s, %s, %s, now())",
                (
                    upload.id,
                    upload.user_id,
                    upload.filename,
                    upload.size_bytes,
                    upload.sha256,
                    upload.create_time,
                ),
            )
            return stale

    @translated
    async def complete_upload(self, upload_id: uuid.UUID, *, user_id: uuid.UUID) -> Upload:
        """Mark a reserved upload stored. FAILED_PRECONDITION when its reservation is gone."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "update zehanx.uploads set pending_since = null "
                "where id = %s and user_id = %s and pending_since is not null returning *",
                (upload_id, user_id),
            )
            row = await cur.fetchone()
        if row is None:
            raise errors.FailedPrecondition(
                f"the reservation of upload {upload_id} expired before its file was stored; upload again",
                reason="UPLOAD_RESERVATION_LOST",
            )
        return _upload(row)

    @translated
    async def release_upload(self, upload_id: uuid.UUID, *, user_id: uuid.UUID) -> None:
        """Delete an upload's row (its file could not be stored): the bytes are free again."""
        async with self._pool.connection() as conn:
            await conn.execute(
                "delete from zehanx.uploads where id = %s and user_id = %s", (upload_id, user_id)
            )

    @translated
    async def upload_bytes(self, user_id: uuid.UUID) -> int:
        """Bytes of all the user's uploads (those in progress included)."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "select coalesce(sum(size_bytes), 0)::bigint as n from zehanx.uploads where user_id = %s",
                (user_id,),
            )
            row = await cur.fetchone()
        assert row is not None
        return int(row["n"])

    @translated
    async def get_upload(self, upload_id: uuid.UUID, *, user_id: uuid.UUID) -> Upload | None:
        """The user's stored upload, or None (another user's, or one still in progress, is None too)."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "select * from zehanx.uploads where id = %s and user_id = %s and pending_since is null",
                (upload_id, user_id),
            )
            row = await cur.fetchone()
        return _upload(row) if row is not None else None
