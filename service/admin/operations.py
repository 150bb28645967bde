"""Admin use cases: put and delete anime, stats, collection info, reindex jobs, snapshots."""

from __future__ import annotations

import time
from typing import Any

import msgspec

from service.admin.health import check_health
from service.catalogue.reindex import Reindexer
from service.catalogue.writer import parse_items, put_documents
from service.platform.errors import InvalidInput, NotFound
from service.runtime import Runtime
from service.schemas import (
    DeleteResponse,
    ItemProblem,
    ReindexJobView,
    ReindexRequest,
    UpsertItemResult,
    UpsertRequest,
    UpsertResponse,
)


class BatchTooLarge(InvalidInput):
    status_code = 413
    code = "batch_too_large"


class NothingStored(InvalidInput):
    """Every item failed: an error (the one envelope), with the per-item report as its details."""

    code = "nothing_stored"


def _problems(items: list) -> list[ItemProblem]:
    return [ItemProblem(code=p.code, message=p.message, field=p.field) for p in items]


class AdminService:
    def __init__(self, runtime: Runtime, reindexer: Reindexer) -> None:
        self.runtime = runtime
        self.reindexer = reindexer

    async def upsert(self, request: UpsertRequest) -> tuple[UpsertResponse, int]:
        """200 when all stored, 207 when some failed; none stored is a 422 `nothing_stored` error."""
        started = time.perf_counter()
        limit = self.runtime.settings.admin_max_batch
        if len(request.documents) > limit:
            raise BatchTooLarge(
                f"{len(request.documents)} documents in one batch; at most {limit} (ADMIN_MAX_BATCH)",
                max_batch=limit,
                got=len(request.documents),
            )
        documents, outcomes = parse_items(request.documents)
        report = await put_documents(self.runtime, documents, outcomes, strict_images=True)
        items = [
            UpsertItemResult(
                index=item.index,
                anime_id=item.anime_id,
                status="stored" if item.stored else "failed",
                vectors=item.vectors,
                errors=_problems(item.errors),
                warnings=_problems(item.warnings),
            )
            for item in report.items
        ]
        versions = {role: m.model_version for role, m in self.runtime.manifests.items()}
        body = UpsertResponse(
            stored=report.stored,
            failed=report.failed,
            items=items,
            model_versions=versions,
            took_ms=round((time.perf_counter() - started) * 1000, 3),
        )
        if report.failed and not report.stored:
            first = next((i for i in items if i.errors), None)
            reason = f": item {first.index}: {first.errors[0].message}" if first else ""
            raise NothingStored(
                f"none of the {report.failed} documents could be stored{reason}", **msgspec.to_builtins(body)
            )
        return body, 200 if report.failed == 0 else 207

    async def delete(self, anime_id: str) -> DeleteResponse:
        if not await self.runtime.store.delete(anime_id):
            raise NotFound(f"no anime with id '{anime_id}'", anime_id=anime_id)
        return DeleteResponse(anime_id=anime_id, deleted=True)

    async def stats(self) -> dict[str, Any]:
        stats = await self.runtime.store.stats()
        deployed = {role: m.model_version for role, m in self.runtime.manifests.items()}
        default = self.runtime.default_model
        deployed["text_embedder"] = default.manifest.model_version
        deployed |= {
            f"text_embedder:{v}": m.manifest.model_version
            for v, m in self.runtime.text_models.items()
            if v != default.version
        }
        # Points stamped by any served text version are current (a promotion changes the default, not
        # the vectors); only those of a model no longer served need a re-embedding reindex.
        current = {m.manifest.model_version for m in self.runtime.text_models.values()} | {"client"}
        stale = sum(n for version, n in stats["model_versions"].items() if version not in current)
        return stats | {
            "deployed_models": deployed,
            "stale_points": stale,
            "engine": self.runtime.engine.name,
        }

    async def collection_info(self) -> dict[str, Any]:
        info = await self.runtime.store.collection_info()
        collection = info.get("collection")
        problems = (
            await self.runtime.store.schema_problems(collection, self.runtime.store.schema)
            if collection
            else []
        )
        return info | {"fits_deployed_models": not problems, "problems": problems}

    async def health(self) -> dict[str, Any]:
        report = await check_health(self.runtime)
        current = self.reindexer._current
        return msgspec.to_builtins(report) | {
            "engine": self.runtime.engine.name,
            "store": self.runtime.store.engine,
            "reindex": current.view() if current is not None else None,
        }

    def start_reindex(self, request: ReindexRequest) -> ReindexJobView:
        overrides = msgspec.to_builtins(request.index) if request.index is not None else None
        job = self.reindexer.start(reembed=request.reembed, index=overrides, keep_old=request.keep_old)
        return msgspec.convert(job.view(), ReindexJobView)

    def job(self, job_id: str) -> ReindexJobView:
        job = self.reindexer.jobs.get(job_id)
        if job is None:
            raise NotFound(f"no reindex job '{job_id}'", job_id=job_id)
        return msgspec.convert(job.view(), ReindexJobView)

    def jobs(self) -> list[ReindexJobView]:
        return [msgspec.convert(job.view(), ReindexJobView) for job in self.reindexer.jobs.values()]
