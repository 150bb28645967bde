"""Rebuild the collection without downtime: new collection, fill it from the live one, swap the alias.

Searches keep reading the live collection through the alias until one atomic alias update points
it at the new one. Writes made meanwhile go to both (the store's dual writes), and a catch-up pass re-copies
anything the live collection received from elsewhere (another replica) after the copy began.
One job at a time; progress is readable while it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
from qdrant_client import models

from service.catalogue.writer import calibrate, embed_documents, refresh_hubness
from service.domain.calibration import Calibration
from service.domain.documents import AnimeDocument
from service.platform.errors import ServiceError
from service.platform.logs import get_logger
from service.runtime import ROLLOUT_METADATA_KEY, Runtime, TextModel
from service.store.params import IndexParams
from service.store.types import StoredPoint, StoredRecord, VectorSchema, vector_fits

log = get_logger("service.catalogue.reindex")

State = Literal["running", "succeeded", "failed", "cancelled"]


class ReindexConflict(ServiceError, status_code=409, code="reindex_in_progress"):
    pass


@dataclass
class ReindexJob:
    job_id: str
    reembed: bool
    params: IndexParams
    keep_old: bool
    # The request's `index` fields; job.params is the live collection's settings with these applied.
    overrides: dict[str, Any] | None = field(default=None, repr=False)
    state: State = "running"
    phase: str = "starting"
    source: str | None = None
    target: str | None = None
    total: int = 0
    copied: int = 0
    reembedded: int = 0
    caught_up: int = 0
    dropped_vectors: dict[str, int] = field(default_factory=dict)
    # updated_at_ts of each point as copied, so the catch-up re-copies only what changed since.
    copied_versions: dict[str, float | None] = field(default_factory=dict, repr=False)
    started_at: str = field(
        default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    )
    finished_at: str | None = None
    seconds: float = 0.0
    error: str | None = None
    # The text model versions the new collection holds, and each one's calibration there.
    models: list[TextModel] = field(default_factory=list, repr=False)
    schema: VectorSchema | None = field(default=None, repr=False)
    calibrations: dict[int, Calibration | None] = field(default_factory=dict, repr=False)
    _started: float = field(default_factory=time.monotonic, repr=False)
    _started_wall: float = field(default_factory=time.time, repr=False)

    def view(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "state": self.state,
            "phase": self.phase,
            "reembed": self.reembed,
            "source": self.source,
            "target": self.target,
            "total": self.total,
            "copied": self.copied,
            "reembedded": self.reembedded,
            "caught_up": self.caught_up,
            "dropped_vectors": self.dropped_vectors,
            "progress": round(self.copied / self.total, 4)
            if self.total
            else (1.0 if self.state == "succeeded" else 0.0),
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "seconds": round(self.seconds or (time.monotonic() - self._started), 3),
            "error": self.error,
            "params": msgspec.to_builtins(self.params),
            "keep_old": self.keep_old,
        }


def _document(payload: dict[str, Any]) -> AnimeDocument:
    fields = {k: v for k, v in payload.items() if k in AnimeDocument.__struct_fields__}
    return msgspec.convert(fields, AnimeDocument)


class Reindexer:
    def __init__(self, runtime: Runtime, batch_size: int = 256) -> None:
        self.runtime = runtime
        self.batch_size = batch_size
        self.jobs: dict[str, ReindexJob] = {}
        self._task: asyncio.Task[None] | None = None
        self._current: ReindexJob | None = None

    def start(
        self, *, reembed: bool = False, index: dict[str, Any] | None = None, keep_old: bool = False
    ) -> ReindexJob:
        if self._current is not None and self._current.state == "running":
            raise ReindexConflict(
                f"reindex {self._current.job_id} is still running", job_id=self._current.job_id
            )
        # Validated now so a bad `index` is a 4xx; the job settles its params from the live collection.
        params = self.runtime.store.params.merged(index)
        job = ReindexJob(
            job_id=uuid.uuid4().hex[:12], reembed=reembed, params=params, keep_old=keep_old, overrides=index
        )
        self.jobs[job.job_id] = job
        self._current = job
        self._task = asyncio.create_task(self._run(job), name=f"reindex-{job.job_id}")
        return job

    async def wait(self) -> None:
        if self._task is not None:
            await asyncio.shield(self._task)

    async def close(self) -> None:
        """Stop a running job; the live collection is untouched (only the half-built one is dropped)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self, job: ReindexJob) -> None:
        store = self.runtime.store
        try:
            job.source = await store.live_collection()
            if job.source is not None:
                # Keep what the live collection was built with (not the environment's settings, which
                # may have changed since), except what this request changes.
                job.params = (await store.collection_params(job.source)).merged(job.overrides)
            job.target = store.new_collection_name()
            job.phase = "creating"
            # Re-embedding fills every served text version; a copy keeps the versions the live
            # collection holds (a version it lacks would be created empty and then look filled).
            lacking = (
                await store.missing_optional(job.source)
                if job.source is not None and not job.reembed
                else frozenset()
            )
            job.schema = schema = store.schema.without(lacking)
            job.models = [
                m
                for m in self.runtime.text_models.values()
                if job.reembed or set(m.names.dense) <= set(schema.dense)
            ]
            await store.create_collection(job.target, schema, job.params)
            if job.source is not None:
                job.phase = "calibrating"
                await self._calibrate(job, job.source, job.target)
            store.start_dual_writes(job.target)
            if job.source is not None:
                job.total = await store.count(job.source)
                job.phase = "copying"
                await self._copy(job, job.source, job.target)
                job.phase = "catching up"
                await self._catch_up(job, job.source, job.target)
                job.phase = "correcting hubs"
                for model in job.models:
                    calibration = job.calibrations.get(model.version)
                    if calibration is not None:
                        await refresh_hubness(
                            self.runtime, collection=job.target, calibration=calibration, model=model
                        )
            job.phase = "swapping alias"
            await store.swap_to(job.target, job.params)
            if job.source is not None and job.source != store.alias and not job.keep_old:
                job.phase = "dropping the old collection"
                await store.drop_collection(job.source)
            job.state, job.phase = "succeeded", "done"
            log.info("reindex_done", **{k: v for k, v in job.view().items() if k != "params"})
        except asyncio.CancelledError:
            job.state, job.error = "cancelled", "cancelled (service shutting down)"
            await self._abandon(job)
            raise
        except Exception as exc:
            job.state, job.error = "failed", f"{type(exc).__name__}: {exc}"
            log.error("reindex_failed", job_id=job.job_id, error=job.error)
            await self._abandon(job)
        finally:
            store.stop_dual_writes()
            job.seconds = time.monotonic() - job._started
            job.finished_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")

    async def _calibrate(self, job: ReindexJob, source: str, target: str) -> None:
        """The new collection's calibrations, one per text model version: measured afresh on the live
        documents when re-embedding (a new text model has other language means), copied from the live
        collection otherwise. The rollout (promoted default, history) moves to the new collection."""
        store = self.runtime.store
        documents: list[AnimeDocument] = []
        if job.reembed:
            offset: Any = None
            while True:
                records, offset = await store.scroll(source, limit=1024, offset=offset, with_vectors=False)
                documents += [_document(r.payload) for r in records]
                if offset is None:
                    break
        for model in job.models:
            key = model.names.calibration_key
            if job.reembed:
                calibration = await calibrate(self.runtime, documents, model=model)
            else:
                calibration = await store.calibration(source, key=key)
            job.calibrations[model.version] = calibration
            if calibration is not None:
                await store.save_calibration(calibration, target, key=key)
        rollout = await store.metadata(ROLLOUT_METADATA_KEY, source)
        if rollout is not None:
            await store.save_metadata(ROLLOUT_METADATA_KEY, rollout, target)

    async def _abandon(self, job: ReindexJob) -> None:
        self.runtime.store.stop_dual_writes()
        if job.target is not None and job.target != await self._safe_live():
            try:
                await self.runtime.store.drop_collection(job.target)
            except Exception as exc:  # best effort: report, keep the original error
                log.warning("reindex_cleanup_failed", target=job.target, error=str(exc))

    async def _safe_live(self) -> str | None:
        try:
            return await self.runtime.store.live_collection()
        except Exception:
            return None

    async def _copy(
        self, job: ReindexJob, source: str, target: str, scroll_filter: models.Filter | None = None
    ) -> int:
        store = self.runtime.store
        offset: Any = None
        copied = 0
        while True:
            records, offset = await store.scroll(
                source, limit=self.batch_size, offset=offset, scroll_filter=scroll_filter
            )
            if scroll_filter is not None:  # catch-up: only what changed after its copy
                records = [
                    r
                    for r in records
                    if job.copied_versions.get(r.anime_id, -1.0) != r.payload.get("updated_at_ts")
                ]
            for record in records:
                job.copied_versions[record.anime_id] = record.payload.get("updated_at_ts")
            points = await self._points(job, records)
            # Ids written directly to the new collection since the job began are newer: the store skips them.
            await store.copy_into(target, points)
            copied += len(records)
            if scroll_filter is None:
                job.copied = copied
            if offset is None:
                return copied

    async def _catch_up(self, job: ReindexJob, source: str, target: str) -> None:
        """Re-copy what the live collection got after the copy started (e.g. through another replica)."""
        # A generous margin: a write stamps updated_at when its embedding finishes, just before storing.
        since = job._started_wall - 60.0
        recent = models.Filter(
            must=[models.FieldCondition(key="updated_at_ts", range=models.Range(gte=since))]
        )
        job.caught_up = await self._copy(job, source, target, recent)

    async def _points(self, job: ReindexJob, records: list[StoredRecord]) -> list[StoredPoint]:
        schema = job.schema or self.runtime.store.schema
        if not job.reembed:
            points = []
            for record in records:
                vectors = {}
                for name, value in record.vectors.items():
                    if vector_fits(schema, name, value):
                        vectors[name] = value
                    else:
                        job.dropped_vectors[name] = job.dropped_vectors.get(name, 0) + 1
                points.append(StoredPoint(record.anime_id, vectors, record.payload))
            return points
        documents = [_document(r.payload) for r in records]
        fresh = await embed_documents(
            self.runtime, documents, calibrations=job.calibrations, text_models=job.models
        )
        job.reembedded += len(fresh)
        points = []
        for record, point in zip(records, fresh, strict=True):
            # Text is re-embedded from the stored document; pictures are not stored, so picture
            # vectors are kept where they fit the collection (same image model) and dropped otherwise.
            vectors = dict(point.vectors)
            for name in ("picture", "thumbnail"):
                value = record.vectors.get(name)
                if value is not None and vector_fits(schema, name, value):
                    vectors[name] = value
            for name in record.vectors:
                if name not in vectors:  # e.g. the old model's sparse vector, or pictures of another size
                    job.dropped_vectors[name] = job.dropped_vectors.get(name, 0) + 1
            points.append(StoredPoint(record.anime_id, vectors, {**record.payload, **point.payload}))
        return points
