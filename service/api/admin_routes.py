"""Admin routes under /api/v1/admin: catalogue writes, stats, collection, reindex, snapshots."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Response, delete, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, JSONBody

from service.admin import versions
from service.admin.operations import AdminService
from service.admin.versions import PromotionView, TextVersionsView
from service.api.controllers import ApiController
from service.api.errors import error_responses
from service.api.search_routes import AnimeIdPath
from service.schemas import DeleteResponse, ReindexJobView, ReindexRequest, UpsertRequest, UpsertResponse


def provide_admin(state: State) -> AdminService:
    return state.admin


class PromoteRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    version: Annotated[int, msgspec.Meta(ge=1, description="The text model version to make the default.")]
    evidence: Annotated[
        dict[str, Any],
        msgspec.Meta(
            description="The JSON report of `python -m benchmarks.relevance --finetuned RUN --json F`: "
            "the candidate against the default on held-out anime."
        ),
    ]


class AdminController(ApiController, part="admin", role="admin"):
    """An admin key; without keys configured, a client on this machine (ADMIN_ALLOW_REMOTE_WITHOUT_KEYS)."""

    @post(
        "/vectors/upsert",
        operation_id="upsertAnime",
        summary="Insert or replace anime (idempotent by anime_id); the service embeds what is missing",
        description=(
            "200: all stored. 207: some stored, the rest failed (see items). 422 `nothing_stored`: none "
            "stored, with the same per-item report in `error.details`."
        ),
        responses={
            207: ResponseSpec(data_container=UpsertResponse, description="some stored, some failed"),
            **error_responses(400, 413, 422, 503),
        },
        status_code=200,
    )
    async def upsert(
        self, data: JSONBody[UpsertRequest], admin: NamedDependency[AdminService]
    ) -> Response[UpsertResponse]:
        body, status = await admin.upsert(data)
        return Response(body, status_code=status)

    @delete(
        "/vectors/{anime_id:str}",
        operation_id="deleteAnime",
        summary="Delete one anime (all its vectors)",
        responses=error_responses(404, 422, 503),
        status_code=200,
    )
    async def delete_anime(
        self, anime_id: AnimeIdPath, admin: NamedDependency[AdminService]
    ) -> DeleteResponse:
        return await admin.delete(anime_id)

    @get(
        "/stats",
        operation_id="collectionStats",
        summary="Points, vectors per name, payload indexes, model versions present",
    )
    async def stats(self, admin: NamedDependency[AdminService]) -> dict[str, Any]:
        return await admin.stats()

    @get(
        "/collection/info",
        operation_id="collectionInfo",
        summary="The collection behind the alias: vectors, index and quantization settings",
    )
    async def collection_info(self, admin: NamedDependency[AdminService]) -> dict[str, Any]:
        return await admin.collection_info()

    @get(
        "/health",
        operation_id="adminHealth",
        summary="Each dependency with its latency, and the reindex state",
    )
    async def health(self, admin: NamedDependency[AdminService]) -> Response[dict[str, Any]]:
        report = await admin.health()
        return Response(report, status_code=503 if report["status"] == "down" else 200)

    @post(
        "/reindex",
        operation_id="startReindex",
        summary="Rebuild the collection (new index settings or re-embedding) and swap it in without downtime",
        responses=error_responses(400, 409, 422, 503),
        status_code=202,
    )
    async def reindex(
        self, data: JSONBody[ReindexRequest], admin: NamedDependency[AdminService]
    ) -> ReindexJobView:
        return admin.start_reindex(data)

    @get("/reindex", operation_id="listReindexJobs", summary="Reindex jobs of this process")
    async def reindex_jobs(self, admin: NamedDependency[AdminService]) -> list[ReindexJobView]:
        return admin.jobs()

    @get(
        "/reindex/{job_id:str}",
        operation_id="getReindexJob",
        summary="Progress of one reindex job",
        responses=error_responses(404),
    )
    async def reindex_job(
        self, job_id: FromPath[str], admin: NamedDependency[AdminService]
    ) -> ReindexJobView:
        return admin.job(job_id)

    @get(
        "/models/text",
        operation_id="textModelVersions",
        summary="Text model versions: served, in the collection, default, A/B shares",
    )
    async def text_versions(self, admin: NamedDependency[AdminService]) -> TextVersionsView:
        return await versions.describe(admin.runtime)

    @post(
        "/models/text/promote",
        operation_id="promoteTextModel",
        summary="Make a text model version the default, when the harness's evidence shows it is better",
        responses=error_responses(400, 404, 409, 422, 503),
        status_code=200,
    )
    async def promote(
        self, data: JSONBody[PromoteRequest], admin: NamedDependency[AdminService]
    ) -> PromotionView:
        return await versions.promote(admin.runtime, data.version, data.evidence)

    @post(
        "/models/text/rollback",
        operation_id="rollbackTextModel",
        summary="Return to the previous default text model version",
        responses=error_responses(409, 503),
        status_code=200,
    )
    async def rollback(self, admin: NamedDependency[AdminService]) -> TextVersionsView:
        return await versions.rollback(admin.runtime)

    @post(
        "/snapshots",
        operation_id="createSnapshot",
        summary="Create a snapshot of the collection (501 with QDRANT_EMBEDDED_ENGINE=local)",
        description=(
            "A consistent copy of the live collection: on a Qdrant server, the server's snapshot; on the "
            "embedded store, a file in QDRANT_PATH/snapshots/<collection>/ (writes wait while the shard "
            "is flushed and copied, searches go on)."
        ),
        responses=error_responses(501, 503),
        status_code=201,
    )
    async def create_snapshot(self, admin: NamedDependency[AdminService]) -> dict[str, Any]:
        return await admin.runtime.store.create_snapshot()

    @get(
        "/snapshots",
        operation_id="listSnapshots",
        summary="List the collection's snapshots, oldest first (501 with QDRANT_EMBEDDED_ENGINE=local)",
        responses=error_responses(501, 503),
    )
    async def list_snapshots(self, admin: NamedDependency[AdminService]) -> list[dict[str, Any]]:
        return await admin.runtime.store.list_snapshots()

    @post(
        "/snapshots/{name:str}/restore",
        operation_id="restoreSnapshot",
        summary="Restore the collection from one of its snapshots (501 with QDRANT_EMBEDDED_ENGINE=local)",
        description=(
            "Replaces every point, the collection's metadata and payload indexes by the snapshot's; "
            "searches keep answering throughout. 404 `snapshot_not_found`: no such snapshot. "
            "409 `snapshot_unusable` (embedded store): the file is damaged or holds other vectors; "
            "the live collection is unchanged."
        ),
        responses=error_responses(404, 409, 501, 503),
        status_code=200,
    )
    async def restore_snapshot(
        self, name: FromPath[str], admin: NamedDependency[AdminService]
    ) -> dict[str, Any]:
        return await admin.runtime.store.restore_snapshot(name)

    @delete(
        "/snapshots/{name:str}",
        operation_id="deleteSnapshot",
        summary="Delete one of the collection's snapshots (501 with QDRANT_EMBEDDED_ENGINE=local)",
        responses=error_responses(404, 501, 503),
        status_code=200,
    )
    async def delete_snapshot(
        self, name: FromPath[str], admin: NamedDependency[AdminService]
    ) -> dict[str, Any]:
        return await admin.runtime.store.delete_snapshot(name)
