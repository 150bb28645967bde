"""Cost against catalogue size on the embedded store: qdrant-edge against qdrant-client's local mode.

    python -m benchmarks.scale setup --source var/relevance/e5-int8 --workspace var/scale
    python -m benchmarks.scale run --workspace var/scale --sizes 1000 10000 50000 200000 \\
        --json benchmarks/results/scale-cpu.json --plot benchmarks/results/scale-cpu.png
    python -m benchmarks.scale report benchmarks/results/scale-cpu.json     # the Markdown tables again

`setup` reads the real catalogue once from a relevance workspace (var/relevance/e5-int8: 8,658 anime
embedded by multilingual-e5-small int8, calibrated and hub-corrected; its folder is copied first, never
opened in place) into `catalogue.pkl`, and embeds the query texts of the relevance harness's text sets
(benchmarks/relevance/judgements.py: paraphrased, misspelled, English and Japanese titles, CJK names,
genre descriptions, plot descriptions) once with that model through the service's text encoder, each
with a filter (genres any-of + a year range), into `queries.json`.

`run` builds, for every size and engine, a catalogue of N anime (benchmarks/scale_catalogue.py: the
real ones, then noisy variants of them) and measures it, each (engine, N) in two fresh subprocesses so
that resident memory is that cell's alone:

- build: the service's store code (`AnimeStore.open`, `ensure_ready`, the calibrations copied into the
  collection's metadata, `upsert` in the ingest's batches of precomputed points, `optimize`): upsert
  time and throughput (the points' synthesis is not timed), index time (qdrant-edge's optimize: HNSW
  and payload indexes; local mode has none), disk (allocated blocks: qdrant-edge's files are sparse),
  peak RSS of the build process (which also holds the source arrays: `rss_source_mib`).
- serve: the real app (`service.app.create_app`, caches off, this process's QDRANT_* settings)
  in-process behind Litestar's AsyncTestClient (httpx over ASGI, lifespan run), then
  (a) text search through the service's own `TextSearch` use case with the precomputed query
  embeddings (the encoder is not timed): STORE time per search, i.e. every Qdrant call the search makes
  (the candidate batch, the documents of the top 10, the occasional size count), measured by the
  store's own guard, and the use case's time, without and with the query's filter;
  (b) POST /api/v1/similarity/batch with 10 ids (kind anime: title, facts, synopsis, lexical), end to
  end through the app at 1 client;
  (c) qdrant-edge only: where the store time goes, each list of a hybrid text search asked alone as
  the store asks it, with the number of HNSW graphs it walks (`measure_lists`);
  (d) qdrant-edge only: recall@10 of each dense list (facts, title, synopsis: the vectors a text
  search sends) as the store sends it (its depth of 101 or more, the synopsis's penalty formula, a
  MaxSim list's slots: service/store/slots.py), top 10 of it, at the configured ef
  (QDRANT_SEARCH_EF, else Qdrant's default, the ef_construct; Qdrant searches with at least the
  list's depth) against the same list scanned exactly (`SearchParams(exact=True)`, MaxSim over every
  name), without and with the filter, and at each ef of `EF_SWEEP` with one list's time; recall
  counts points tied at the exact k-th score
  as interchangeable (`recall_with_ties`: identical `facts` sentences are common), the share of the
  exact ids found is kept beside it (`mean_by_id`).
  The service itself scans exactly up to QDRANT_EXACT_SEARCH_UP_TO anime (`search` in the table says
  what it did at each size); the recall is the graph's either way. Below Qdrant's full_scan_threshold
  a segment is scanned even without `exact` (`indexed_vectors` tells whether a graph was built).

Local mode (an exact scan in Python that loads the whole collection into memory) runs only while a
size stays under `--local-limit-s`: after each local size the next one's time is extrapolated
linearly and local mode stops there, with the reason recorded. Progress goes to stderr; the Markdown
tables to stdout, JSON with `--json`, the PNG of cost against size with `--plot`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from benchmarks.memory import rss_mib
from benchmarks.reporting import write_results
from benchmarks.scale_catalogue import (
    DEFAULT_COSINE,
    SourceCatalogue,
    catalogue_ids,
    noise_sigma,
    points,
    read_source,
    recall_at_k,
    recall_with_ties,
)
from service.cache.policy import QueryEmbedding, QueryEncoder
from service.domain.documents import AnimeDocument
from service.domain.sparse import SparseVector
from service.platform.progress import counter, steps
from service.settings import Settings, load_settings
from service.store.filters import SearchFilters

CATALOGUE_FILE = "catalogue.pkl"
QUERIES_FILE = "queries.json"
ENGINES = ("edge", "local")
ENGINE_NAMES = {"edge": "qdrant-edge", "local": "local mode"}
# The relevance harness's text sets; title-zh needs bangumi's Chinese names, which no payload keeps.
QUERY_SETS = (
    "title-paraphrase",
    "multilingual-title",
    "genre-description",
    "plot-en",
    "title-ja",
    "title-en",
    "title-misspelled",
)
# The filters the queries take turns with: a genre pair among the most common ones, any of them, and
# a decade-ish window (about a sixth of the real catalogue passes; `selectivity` in the results).
FILTER_GENRES = 6
YEAR_WINDOWS = ((2010, 2019), (2000, 2009), (1990, 2004))
# The demo's token window (benchmarks/relevance/workspace.py's side-by-side workspaces).
MAX_TOKENS = 256
BATCH_IDS = 10
K = 10
# Targets at the largest size, on the machine the run is on.
STORE_P95_FILTERED_MS = 10.0
SIMILARITY_P95_MS = 150.0
RECALL_TARGET = 0.98
# ef values whose recall and per-list cost are measured beside the configured one.
EF_SWEEP = (64, 128, 256, 512)


# -- settings, memory, disk ------------------------------------------------------------------------


def cell_settings(repository: Path, folder: Path, engine: str) -> Settings:
    """This process's settings (QDRANT_SEARCH_EF, QDRANT_EXACT_SEARCH_UP_TO, HNSW... as deployed) on the
    cell's folder and engine, caches off (every answer computed), logs quiet."""
    return load_settings(
        None,
        model_repository=repository,
        qdrant_path=folder,
        qdrant_url=None,
        qdrant_embedded_engine=engine,
        cache_enabled=False,
        text_max_tokens=MAX_TOKENS,
        log_level="WARNING",
    )


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def disk_mib(folder: Path) -> tuple[float, float]:
    """(allocated, apparent) MiB under `folder`: qdrant-edge preallocates sparse files, so only the
    allocated blocks are what the disk really holds."""
    allocated = apparent = 0
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            stat = path.stat()
            allocated += stat.st_blocks * 512
            apparent += stat.st_size
    return allocated / 2**20, apparent / 2**20


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "n": 0}
    data = np.asarray(values)
    return {"p50": float(np.percentile(data, 50)), "p95": float(np.percentile(data, 95)), "n": len(values)}


# -- setup: the real catalogue and the queries, once ----------------------------------------------


def query_filters(payloads: Sequence[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """`count` filters in turn: two of the FILTER_GENRES most common genres (any of), a year window."""
    genres = Counter(g for p in payloads for g in p.get("genres") or [])
    common = [g for g, _ in genres.most_common(FILTER_GENRES)]
    if not common:
        return [{"year_min": lo, "year_max": hi} for lo, hi in (YEAR_WINDOWS * count)[:count]]
    out = []
    for i in range(count):
        lo, hi = YEAR_WINDOWS[i % len(YEAR_WINDOWS)]
        pair = sorted({common[i % len(common)], common[(i + len(common) // 2) % len(common)]})
        out.append({"genres": pair, "year_min": lo, "year_max": hi})
    return out


def _documents(source: SourceCatalogue) -> list[AnimeDocument]:
    fields = frozenset(AnimeDocument.__struct_fields__)
    return [
        msgspec.convert({k: v for k, v in p.items() if k in fields}, AnimeDocument) for p in source.payloads
    ]


async def setup(source: Path, workspace: Path, *, per_set: int, seed: int) -> dict[str, Any]:
    from benchmarks.relevance.judgements import Catalogue, build_sets
    from service.runtime import build_runtime
    from service.search.query_encoders import TextQueryEncoder
    from service.search.text_search import checked_query
    from service.store.folders import copy_folder

    copy = workspace / "source-qdrant"
    copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(copy, ignore_errors=True)
    # A copy: qdrant-edge locks its folder, and its optimizer may rewrite what it opens.
    copy_folder(source / "qdrant", copy)
    repository = (source / "model_repository").resolve()
    runtime = await build_runtime(cell_settings(repository, copy, "edge"))
    try:
        keys = [m.names.calibration_key for m in runtime.text_models.values()]
        catalogue = await read_source(runtime.store, keys)
        catalogue.save(workspace / CATALOGUE_FILE)
        sets = build_sets(Catalogue.of(_documents(catalogue)), QUERY_SETS, per_set=per_set, seed=seed)
        texts = [(s.name, checked_query(q.text)) for s in sets for q in s.queries if q.text]
        model = runtime.default_model
        encoder = TextQueryEncoder(model.encoder)
        queries = []
        with counter("embedding the queries", len(texts), unit="query") as advance:
            for (set_name, text), filters in zip(
                texts, query_filters(catalogue.payloads, len(texts)), strict=True
            ):
                embedding = await encoder.embed(text)
                sparse = embedding.sparse
                queries.append(
                    {
                        "set": set_name,
                        "text": text,
                        "filters": filters,
                        "dense": embedding.dense.astype(float).tolist(),
                        "sparse": None
                        if sparse is None
                        else {"indices": sparse.indices, "values": sparse.values},
                        "tokens": embedding.tokens,
                        "truncated": embedding.truncated,
                    }
                )
                advance(1)
        described = {
            "source": str(source),
            "model_repository": str(repository),
            "text_model": model.manifest.model_version,
            "anime": len(catalogue),
            "ids": catalogue.ids,
            "seed": seed,
            "queries": queries,
        }
    finally:
        await runtime.close()
        shutil.rmtree(copy, ignore_errors=True)  # catalogue.pkl holds all the later steps read
    (workspace / QUERIES_FILE).write_text(json.dumps(described, ensure_ascii=False))
    return {"anime": len(catalogue), "queries": len(queries), "sets": Counter(q["set"] for q in queries)}


def load_queries(workspace: Path) -> dict[str, Any]:
    path = workspace / QUERIES_FILE
    if not path.is_file() or not (workspace / CATALOGUE_FILE).is_file():
        raise SystemExit(f"{workspace} is not set up: run `python -m benchmarks.scale setup` first")
    return json.loads(path.read_text())


# -- one cell: build ---------------------------------------------------------------------------------


async def build_cell(
    workspace: Path, engine: str, size: int, folder: Path, *, batch_size: int, seed: int, cosine: float
) -> dict[str, Any]:
    """Fill `folder` with the catalogue of `size` through the store code; what it cost."""
    from service.store.qdrant_store import AnimeStore

    described = load_queries(workspace)
    rss_start = rss_mib() or 0.0
    source = SourceCatalogue.load(workspace / CATALOGUE_FILE)
    rss_source = (rss_mib() or 0.0) - rss_start
    settings = cell_settings(Path(described["model_repository"]), folder, engine)
    shutil.rmtree(folder, ignore_errors=True)
    began = time.perf_counter()
    store = AnimeStore.open(
        source.schema,
        alias=settings.qdrant_collection,
        path=folder,
        params=settings.index_params(),
        embedded_engine=engine,
    )
    upsert_s = 0.0
    try:
        await store.ensure_ready()
        for key, value in source.metadata.items():
            await store.save_metadata(key, value)
        with counter(f"build {ENGINE_NAMES[engine]} {size}", size, unit="anime") as advance:
            for batch in points(source, size, seed=seed, cosine=cosine, batch=batch_size):
                started = time.perf_counter()
                await store.upsert(batch)
                upsert_s += time.perf_counter() - started
                advance(len(batch))
        print(f"[build {ENGINE_NAMES[engine]} {size}] optimizing", file=sys.stderr, flush=True)
        started = time.perf_counter()
        await store.optimize()
        optimize_s = time.perf_counter() - started
        stored = await store.count()
        info = await store.collection_info()
    finally:
        await store.close()
    allocated, apparent = disk_mib(folder)
    return {
        "stored": stored,
        "upsert_s": upsert_s,
        "optimize_s": optimize_s,
        "build_s": upsert_s + optimize_s,
        "build_wall_s": time.perf_counter() - began,
        "upsert_points_per_s": size / upsert_s if upsert_s else None,
        "disk_mib": allocated,
        "disk_apparent_mib": apparent,
        "rss_source_mib": rss_source,
        "rss_build_peak_mib": peak_rss_mib(),
        "indexed_vectors": info.get("indexed_vectors"),
        "segments": info.get("segments"),
    }


# -- one cell: serve ---------------------------------------------------------------------------------


class StoreTimer:
    """Adds up the seconds of every Qdrant call the store makes (its guard's observer), passing each
    observation on to the observer already there (the service's metrics)."""

    def __init__(self, guard: Any) -> None:
        self.seconds = 0.0
        self.calls = 0
        self._next: Callable[[str, float, bool], None] | None = guard.observer
        guard.observer = self.observe

    def observe(self, operation: str, seconds: float, ok: bool) -> None:
        self.seconds += seconds
        self.calls += 1
        if self._next is not None:
            self._next(operation, seconds, ok)

    def reset(self) -> None:
        self.seconds = 0.0
        self.calls = 0


class PrecomputedEncoder:
    """The text query encoder, answering from the embeddings `setup` made (the model is not run)."""

    def __init__(self, encoder: QueryEncoder, embeddings: dict[str, QueryEmbedding]) -> None:
        self.model_version = encoder.model_version
        self._embeddings = embeddings

    async def embed(self, query: str) -> QueryEmbedding:
        return self._embeddings[query]


def embeddings_of(queries: Sequence[dict[str, Any]]) -> dict[str, QueryEmbedding]:
    out = {}
    for q in queries:
        sparse = q["sparse"]
        out[q["text"]] = QueryEmbedding(
            np.asarray(q["dense"], np.float32),
            None if sparse is None else SparseVector(sparse["indices"], sparse["values"]),
            q["tokens"],
            q["truncated"],
        )
    return out


def _filters(q: dict[str, Any]) -> SearchFilters:
    return msgspec.convert(q["filters"], SearchFilters)


async def measure_text(
    runtime: Any, timer: StoreTimer, queries: Sequence[dict[str, Any]], repeats: int, label: str
) -> dict[str, Any]:
    """Store time and use-case time of every query's text search, without and with its filter."""
    from service.schemas import SearchRequest
    from service.search.query_encoders import QueryEncoders
    from service.search.text_lists import TextLists
    from service.search.text_search import TextQuestion, TextSearch

    table = embeddings_of(queries)
    search = TextSearch(
        runtime, QueryEncoders(runtime, wrap=lambda e: PrecomputedEncoder(e, table)), TextLists(runtime)
    )
    model = runtime.default_model
    out: dict[str, Any] = {}
    for filtered in (False, True):
        store_ms: list[float] = []
        usecase_ms: list[float] = []
        calls: list[int] = []
        name = "filtered" if filtered else "unfiltered"
        with counter(f"{label} text search, {name}", len(queries) * (repeats + 1), unit="search") as advance:
            for number in range(repeats + 1):  # the first pass warms the caches up, unmeasured
                for q in queries:
                    request = SearchRequest(
                        query=q["text"], limit=K, filters=_filters(q) if filtered else None
                    )
                    timer.reset()
                    started = time.perf_counter()
                    await search.answer(TextQuestion(request=request, query=q["text"], model=model))
                    elapsed = time.perf_counter() - started
                    if number:
                        store_ms.append(timer.seconds * 1000)
                        usecase_ms.append(elapsed * 1000)
                        calls.append(timer.calls)
                    advance(1)
        out[name] = {
            "store_ms": percentiles(store_ms),
            "usecase_ms": percentiles(usecase_ms),
            "store_calls_mean": float(np.mean(calls)) if calls else None,
        }
    return out


async def query_lists(
    runtime: Any, queries: Sequence[dict[str, Any]], mode: str, label: str
) -> AsyncIterator[tuple[str, list[Any]]]:
    """Each query's candidate lists as a text search in `mode` builds them, without ("unfiltered") and
    then with ("filtered") the query's filter, progress counted per query."""
    from service.search.text_lists import TextLists
    from service.store.filters import build_filter

    lists_of = TextLists(runtime)
    model = runtime.default_model
    table = embeddings_of(queries)
    with counter(label, len(queries) * 2, unit="query") as advance:
        for filtered in (False, True):
            name = "filtered" if filtered else "unfiltered"
            for q in queries:
                query_filter = build_filter(_filters(q) if filtered else None)
                yield name, await lists_of.build(q["text"], table[q["text"]], query_filter, mode, model)
                advance(1)


async def measure_lists(
    runtime: Any, queries: Sequence[dict[str, Any]], size: int, label: str
) -> dict[str, Any]:
    """Where a text search's store time goes: each candidate list of a hybrid search asked alone, as
    the store asks it (its depth, params, penalty formula, slots), ids and scores only, with the number
    of HNSW graphs it walks. Their sum is a little more than the batch, which is one call."""
    from service.store.query_requests import RequestBuilder

    store = runtime.store
    client = store.backend.client
    await store.lifecycle.ensure_ready()
    params = store.lifecycle.params.search_params(size)
    slotted = store.lifecycle.slotted
    builder = RequestBuilder(store.schema)
    times: dict[str, dict[str, list[float]]] = {}

    def walked(using: str) -> int:
        """HNSW graphs a list walks: none for a sparse (inverted index) or exact one, a slotted
        multivector's slots, else its own."""
        if using not in store.schema.dense or (params is not None and params.exact):
            return 0
        return store.schema.slots[using] if using in slotted else 1

    async for name, lists in query_lists(runtime, queries, "hybrid", f"{label} lists"):
        for vector_query in lists:
            request = builder.request(vector_query, False, params, slotted)
            started = time.perf_counter()
            await client.query_batch_points(store.alias, requests=[request])
            elapsed = (time.perf_counter() - started) * 1000
            times.setdefault(vector_query.using, {}).setdefault(name, []).append(elapsed)
    return {
        using: {"graphs": walked(using)} | {name: percentiles(values) for name, values in by_filter.items()}
        for using, by_filter in times.items()
    }


async def measure_similarity(
    client: Any, timer: StoreTimer, ids: Sequence[str], requests: int, seed: int, label: str
) -> dict[str, Any]:
    """POST /api/v1/similarity/batch with BATCH_IDS ids, end to end through the app, one client; and
    the part of it spent in the store."""
    rng = random.Random(seed)
    warmup = 3
    latencies: list[float] = []
    store_ms: list[float] = []
    errors = 0
    with counter(f"{label} similarity batch", requests + warmup, unit="request") as advance:
        for number in range(requests + warmup):
            body = {"anime_ids": rng.sample(list(ids), min(BATCH_IDS, len(ids))), "kind": "anime", "limit": K}
            timer.reset()
            started = time.perf_counter()
            response = await client.post("/api/v1/similarity/batch", json=body)
            elapsed = time.perf_counter() - started
            in_store = timer.seconds
            ok = response.status_code == 200 and all(
                item["status_code"] == 200 for item in response.json()["results"]
            )
            if number >= warmup:
                latencies.append(elapsed * 1000)
                store_ms.append(in_store * 1000)
                errors += not ok
            advance(1)
    return {"e2e_ms": percentiles(latencies), "store_ms": percentiles(store_ms), "errors": errors}


async def measure_recall(runtime: Any, queries: Sequence[dict[str, Any]], label: str) -> dict[str, Any]:
    """recall@K of each dense list a text search sends, as it sends it (its depth, its penalty formula,
    a MaxSim list's slots), at the configured ef against the same list scanned exactly."""
    from qdrant_client import models

    from service.store.query_requests import RequestBuilder

    store = runtime.store
    client = store.backend.client
    ef = runtime.settings.qdrant_search_ef
    graph = models.SearchParams(hnsw_ef=ef) if ef else None
    exact = models.SearchParams(exact=True)
    builder = RequestBuilder(store.schema)
    slotted = store.lifecycle.slotted
    # (recall by id, recall with ties) per dense list and filter.
    found: dict[str, dict[str, list[tuple[float, float]]]] = {}
    # The same lists at other ef values: which ef reaches the recall target, and what a list costs there.
    swept: dict[int, dict[str, dict[str, list[tuple[float, float]]]]] = {e: {} for e in EF_SWEEP}
    swept_ms: dict[int, list[float]] = {e: [] for e in EF_SWEEP}

    async def top(vector_query: Any, params: Any) -> list[tuple[str, float]]:
        request = builder.request(vector_query, False, params, slotted)
        (response,) = await client.query_batch_points(store.alias, requests=[request])
        return [(str(p.id), float(p.score)) for p in response.points[:K]]

    def both(answer: list[tuple[str, float]], truth: list[tuple[str, float]]) -> tuple[float, float] | None:
        by_id = recall_at_k([i for i, _ in answer], [i for i, _ in truth], K)
        by_score = recall_with_ties(answer, truth, K)
        return None if by_id is None or by_score is None else (by_id, by_score)

    async for name, lists in query_lists(runtime, queries, "dense", f"{label} recall"):
        for vector_query in lists:
            if vector_query.using not in store.schema.dense:
                continue
            truth = await top(vector_query, exact)
            recall = both(await top(vector_query, graph), truth)
            if recall is not None:
                found.setdefault(vector_query.using, {}).setdefault(name, []).append(recall)
            for ef_value in EF_SWEEP:
                started = time.perf_counter()
                answer = await top(vector_query, models.SearchParams(hnsw_ef=ef_value))
                swept_ms[ef_value].append((time.perf_counter() - started) * 1000)
                recall = both(answer, truth)
                if recall is not None:
                    swept[ef_value].setdefault(vector_query.using, {}).setdefault(name, []).append(recall)

    def means(
        by_vector: dict[str, dict[str, list[tuple[float, float]]]],
    ) -> dict[str, dict[str, dict[str, float]]]:
        """`mean`: recall with ties (the verdict's); `mean_by_id`: the share of the exact ids found."""
        return {
            vector: {
                name: {
                    "mean": float(np.mean([v[1] for v in values])),
                    "min": float(np.min([v[1] for v in values])),
                    "mean_by_id": float(np.mean([v[0] for v in values])),
                    "n": len(values),
                }
                for name, values in by_filter.items()
            }
            for vector, by_filter in by_vector.items()
        }

    return {
        "ef": ef or runtime.settings.qdrant_hnsw_ef_construct,
        "ef_source": "QDRANT_SEARCH_EF" if ef else "Qdrant's default (ef_construct)",
        "vectors": means(found),
        "sweep": [
            {"ef": e, "vectors": means(swept[e]), "list_ms": percentiles(swept_ms[e])} for e in EF_SWEEP
        ],
    }


async def serve_cell(
    workspace: Path,
    engine: str,
    size: int,
    folder: Path,
    *,
    repeats: int,
    similarity_requests: int,
    seed: int,
    max_queries: int | None = None,
) -> dict[str, Any]:
    """The built catalogue served by the real app: text search, similarity batch, recall; memory."""
    from litestar.testing import AsyncTestClient

    from service.app import create_app

    described = load_queries(workspace)
    queries = described["queries"][:max_queries] if max_queries else described["queries"]
    ids = catalogue_ids(described["ids"], size)
    settings = cell_settings(Path(described["model_repository"]), folder, engine)
    label = f"[{ENGINE_NAMES[engine]} {size}]"
    rss_start = rss_mib() or 0.0
    started = time.perf_counter()
    async with AsyncTestClient(create_app(settings, freeze_gc=True)) as client:  # as deployed
        open_s = time.perf_counter() - started
        runtime = client.app.state.runtime
        rss_open = rss_mib() or 0.0
        exact_up_to = runtime.settings.qdrant_exact_search_up_to
        if engine == "local":
            search = "exact (local mode scans)"
        elif 0 < exact_up_to >= size:
            search = f"exact (<= QDRANT_EXACT_SEARCH_UP_TO {exact_up_to})"
        else:
            ef = runtime.settings.qdrant_search_ef or runtime.settings.qdrant_hnsw_ef_construct
            search = f"HNSW ef={ef}"
        selectivity = await filter_selectivity(runtime, queries, size)
        timer = StoreTimer(runtime.store.guard)
        text = await measure_text(runtime, timer, queries, repeats, label)
        similarity = await measure_similarity(client, timer, ids, similarity_requests, seed, label)
        lists = await measure_lists(runtime, queries, size, label) if engine == "edge" else None
        recall = await measure_recall(runtime, queries, label) if engine == "edge" else None
        rss_end = rss_mib() or 0.0
    return {
        "search": search,
        "open_s": open_s,
        "queries": len(queries),
        "filter_selectivity": selectivity,
        "text": text,
        "similarity": similarity,
        "lists": lists,
        "recall": recall,
        "rss_baseline_mib": rss_start,
        "rss_open_mib": rss_open,
        "rss_serving_mib": rss_end,
        "rss_serving_peak_mib": peak_rss_mib(),
    }


async def filter_selectivity(runtime: Any, queries: Sequence[dict[str, Any]], size: int) -> float:
    """The mean share of the catalogue the queries' filters let through."""
    from service.store.filters import build_filter

    distinct = {json.dumps(q["filters"], sort_keys=True): q for q in queries}
    shares = [
        await runtime.store.count(count_filter=build_filter(_filters(q))) / size for q in distinct.values()
    ]
    return float(np.mean(shares)) if shares else 0.0


# -- the run -----------------------------------------------------------------------------------------


def _cell_command(phase: str, args: argparse.Namespace, engine: str, size: int, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "benchmarks.scale", "cell", phase,
        "--workspace", str(args.workspace), "--engine", engine, "--size", str(size), "--out", str(out),
        "--batch-size", str(args.batch_size), "--seed", str(args.seed), "--cosine", str(args.cosine),
        "--repeats", str(args.repeats), "--similarity-requests", str(args.similarity_requests),
        *(["--max-queries", str(args.max_queries)] if args.max_queries else []),
    ]  # fmt: skip


def run_phase(phase: str, args: argparse.Namespace, engine: str, size: int) -> dict[str, Any]:
    """One phase of one cell: a fresh subprocess (its RSS its own), or this process with --in-process."""
    folder = cell_folder(args.workspace, engine, size)
    if args.in_process:
        return asyncio.run(cell_phase(phase, args, engine, size, folder))
    out = folder.parent / f"{engine}-{size}.{phase}.json"
    out.unlink(missing_ok=True)
    subprocess.run(_cell_command(phase, args, engine, size, out), check=True)
    return json.loads(out.read_text())


def cell_folder(workspace: Path, engine: str, size: int) -> Path:
    return workspace / "cells" / f"{engine}-{size}"


async def cell_phase(
    phase: str, args: argparse.Namespace, engine: str, size: int, folder: Path
) -> dict[str, Any]:
    if phase == "build":
        return await build_cell(
            args.workspace,
            engine,
            size,
            folder,
            batch_size=args.batch_size,
            seed=args.seed,
            cosine=args.cosine,
        )
    return await serve_cell(
        args.workspace,
        engine,
        size,
        folder,
        repeats=args.repeats,
        similarity_requests=args.similarity_requests,
        seed=args.seed,
        max_queries=args.max_queries,
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    described = load_queries(args.workspace)
    sizes = sorted(set(args.sizes))
    engines = [e for e in ENGINES if e in args.engines]
    rows: list[dict[str, Any]] = []
    local_stop: dict[str, Any] | None = None
    began = time.perf_counter()
    with steps("scale", len(sizes) * len(engines)) as step:
        for position, size in enumerate(sizes):
            following = sizes[position + 1] if position + 1 < len(sizes) else None
            for engine in engines:
                step(f"{ENGINE_NAMES[engine]} {size}")
                row: dict[str, Any] = {"engine": engine, "size": size}
                if engine == "local" and local_stop is not None:
                    rows.append(row | {"skipped": local_stop["reason"]})
                    continue
                started = time.perf_counter()
                row["build"] = run_phase("build", args, engine, size)
                row["serve"] = run_phase("serve", args, engine, size)
                row["wall_s"] = time.perf_counter() - started
                if not args.keep:
                    shutil.rmtree(cell_folder(args.workspace, engine, size), ignore_errors=True)
                rows.append(row)
                if engine == "local" and following is not None:
                    predicted = row["wall_s"] * following / size
                    if predicted > args.local_limit_s:
                        local_stop = {
                            "after": size,
                            "reason": f"local mode took {row['wall_s']:.0f} s at {size} anime; "
                            f"{following} would take ~{predicted:.0f} s (linear), over the "
                            f"{args.local_limit_s:.0f} s limit",
                        }
                        print(
                            f"[scale] {local_stop['reason']}: stopping local mode",
                            file=sys.stderr,
                            flush=True,
                        )
    return {
        "setup": {
            "source": described["source"],
            "text_model": described["text_model"],
            "real_anime": described["anime"],
            "queries": len(
                described["queries"][: args.max_queries] if args.max_queries else described["queries"]
            ),
            "query_sets": dict(Counter(q["set"] for q in described["queries"])),
            "variant_cosine": args.cosine,
            "noise_sigma": noise_sigma(args.cosine, 384),
            "seed": args.seed,
            "batch_size": args.batch_size,
            "repeats": args.repeats,
            "similarity_requests": args.similarity_requests,
            "similarity_ids": BATCH_IDS,
            "in_process": args.in_process,
            "settings": _store_settings(),
        },
        "sizes": sizes,
        "engines": engines,
        "rows": rows,
        "local_stopped": local_stop,
        "targets": {
            "store_p95_filtered_ms": STORE_P95_FILTERED_MS,
            "similarity_p95_ms": SIMILARITY_P95_MS,
            "recall_at_10": RECALL_TARGET,
        },
        "wall_s": time.perf_counter() - began,
    }


def _store_settings() -> dict[str, Any]:
    settings = load_settings(None)
    return {
        "QDRANT_SEARCH_EF": settings.qdrant_search_ef,
        "QDRANT_EXACT_SEARCH_UP_TO": settings.qdrant_exact_search_up_to,
        "QDRANT_HNSW_M": settings.qdrant_hnsw_m,
        "QDRANT_HNSW_EF_CONSTRUCT": settings.qdrant_hnsw_ef_construct,
        "QDRANT_QUANTIZATION": settings.qdrant_quantization,
        "FUSION_CANDIDATES": settings.fusion_candidates,
    }


# -- reporting ---------------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _recall(serve: dict[str, Any], which: str) -> str:
    recall = serve.get("recall")
    if not recall:
        return "- (exact)"
    vectors = recall["vectors"]
    return " / ".join(
        f"{vectors[v][which]['mean']:.3f}" if which in vectors.get(v, {}) else "-"
        for v in ("facts", "title", "synopsis")
    )


def worst_recall(serve: dict[str, Any]) -> float | None:
    """The lowest mean recall@10 over the dense lists, filtered or not (None: local mode)."""
    recall = serve.get("recall")
    if not recall:
        return None
    return _worst(recall["vectors"])


def _worst(vectors: dict[str, dict[str, dict[str, float]]]) -> float | None:
    means = [m["mean"] for by_filter in vectors.values() for m in by_filter.values()]
    return min(means) if means else None


def sweep_markdown(results: dict[str, Any]) -> list[str]:
    """Recall and per-list cost against ef, per qdrant-edge size: the ef the targets need."""
    lines = [
        "",
        "| anime | ef | worst recall@10 (dense lists, filtered or not) | one list p50 / p95 ms |",
    ]
    lines.append("|---|---|---|---|")
    for row in results["rows"]:
        recall = row.get("serve", {}).get("recall") if row["engine"] == "edge" else None
        for point in (recall or {}).get("sweep", []):
            worst = _worst(point["vectors"])
            lines.append(
                f"| {row['size']} | {point['ef']} | {'-' if worst is None else f'{worst:.3f}'} | "
                f"{_ms(point['list_ms']['p50'])} / {_ms(point['list_ms']['p95'])} |"
            )
    return lines if len(lines) > 2 else []


def lists_markdown(results: dict[str, Any]) -> list[str]:
    """Each list of a text search alone, per qdrant-edge size: what the store time is made of."""
    lines = [
        "",
        "| anime | list | HNSW graphs | alone p50 / p95 ms | filtered p50 / p95 ms |",
        "|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        lists = row.get("serve", {}).get("lists") if row["engine"] == "edge" else None
        for using, measured in (lists or {}).items():
            plain, filtered = measured.get("unfiltered", {}), measured.get("filtered", {})
            lines.append(
                f"| {row['size']} | {using} | {measured['graphs']} | "
                f"{_ms(plain.get('p50'))} / {_ms(plain.get('p95'))} | "
                f"{_ms(filtered.get('p50'))} / {_ms(filtered.get('p95'))} |"
            )
    return lines if len(lines) > 3 else []


def verdicts(row: dict[str, Any]) -> dict[str, bool | None]:
    serve = row["serve"]
    store = serve["text"]["filtered"]["store_ms"]["p95"]
    similarity = serve["similarity"]["e2e_ms"]["p95"]
    recall = worst_recall(serve)
    return {
        "store_p95_filtered": store is not None and store <= STORE_P95_FILTERED_MS,
        "similarity_p95": similarity is not None
        and similarity <= SIMILARITY_P95_MS
        and not serve["similarity"]["errors"],
        "recall": None if recall is None else recall >= RECALL_TARGET,
    }


def markdown(results: dict[str, Any]) -> str:
    columns = [
        "engine", "anime", "search", "build s (upsert + index)", "upsert pts/s", "disk MiB",
        "RSS MiB build / serve", "store p50 / p95 ms", "filtered store p50 / p95 ms",
        "use case p95 ms (filtered)", "similarity batch p50 / p95 ms (store p95)",
        "recall@10 facts / title / synopsis", "filtered recall@10",
    ]  # fmt: skip
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in results["rows"]:
        name = ENGINE_NAMES[row["engine"]]
        if "skipped" in row:
            lines.append(f"| {name} | {row['size']} | not run: {row['skipped']} |" + " |" * 10)
            continue
        b, s = row["build"], row["serve"]
        plain, filtered = s["text"]["unfiltered"], s["text"]["filtered"]
        sim = s["similarity"]["e2e_ms"]
        sim_store = s["similarity"].get("store_ms", {}).get("p95")
        lines.append(
            f"| {name} | {row['size']} | {s['search']} | {b['build_s']:.1f} ({b['upsert_s']:.1f} + "
            f"{b['optimize_s']:.1f}) | {b['upsert_points_per_s']:.0f} | {b['disk_mib']:.0f} | "
            f"{b['rss_build_peak_mib']:.0f} / {s['rss_serving_peak_mib']:.0f} | "
            f"{_ms(plain['store_ms']['p50'])} / {_ms(plain['store_ms']['p95'])} | "
            f"{_ms(filtered['store_ms']['p50'])} / {_ms(filtered['store_ms']['p95'])} | "
            f"{_ms(plain['usecase_ms']['p95'])} ({_ms(filtered['usecase_ms']['p95'])}) | "
            f"{_ms(sim['p50'])} / {_ms(sim['p95'])} ({_ms(sim_store)}) | "
            f"{_recall(s, 'unfiltered')} | {_recall(s, 'filtered')} |"
        )
    edge = [r for r in results["rows"] if r["engine"] == "edge" and "serve" in r]
    if edge:
        largest = max(edge, key=lambda r: r["size"])
        met = verdicts(largest)
        word = {True: "met", False: "NOT met", None: "n/a"}
        s = largest["serve"]
        ef = s["recall"]["ef"] if s["recall"] else "-"
        worst = worst_recall(s)
        lines += [
            "",
            f"| target, qdrant-edge at {largest['size']} anime | measured | verdict |",
            "|---|---|---|",
            f"| filtered text search, store p95 <= {STORE_P95_FILTERED_MS:g} ms | "
            f"{_ms(s['text']['filtered']['store_ms']['p95'])} ms | {word[met['store_p95_filtered']]} |",
            f"| similarity batch of {BATCH_IDS} ids, end-to-end p95 <= {SIMILARITY_P95_MS:g} ms (1 client) | "
            f"{_ms(s['similarity']['e2e_ms']['p95'])} ms | {word[met['similarity_p95']]} |",
            f"| recall@10 >= {RECALL_TARGET} vs exact (worst list, ef {ef}) | "
            f"{'-' if worst is None else f'{worst:.3f}'} | {word[met['recall']]} |",
        ]
    lines += sweep_markdown(results)
    lines += lists_markdown(results)
    stop = results.get("local_stopped")
    if stop:
        lines += ["", f"Local mode stopped after {stop['after']} anime: {stop['reason']}."]
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    """Cost against catalogue size (log x), both engines: store p95, similarity p95, build time, RSS,
    disk, recall@10."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results["rows"] if "serve" in r]
    panels: list[
        tuple[str, str, list[tuple[str, Callable[[dict[str, Any]], float | None]]], float | None]
    ] = [
        (
            "text search: store p95",
            "ms",
            [
                ("filtered", lambda r: r["serve"]["text"]["filtered"]["store_ms"]["p95"]),
                ("unfiltered", lambda r: r["serve"]["text"]["unfiltered"]["store_ms"]["p95"]),
            ],
            STORE_P95_FILTERED_MS,
        ),
        (
            f"similarity batch ({BATCH_IDS} ids): e2e p95",
            "ms",
            [("", lambda r: r["serve"]["similarity"]["e2e_ms"]["p95"])],
            SIMILARITY_P95_MS,
        ),
        (
            "build time",
            "s",
            [
                ("upsert + index", lambda r: r["build"]["build_s"]),
                ("index", lambda r: r["build"]["optimize_s"]),
            ],
            None,
        ),
        (
            "peak RSS",
            "MiB",
            [
                ("serving", lambda r: r["serve"]["rss_serving_peak_mib"]),
                ("build", lambda r: r["build"]["rss_build_peak_mib"]),
            ],
            None,
        ),
        ("disk", "MiB", [("", lambda r: r["build"]["disk_mib"])], None),
        ("recall@10 vs exact (worst list)", "", [("", lambda r: worst_recall(r["serve"]))], RECALL_TARGET),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(14, 8))
    for ax, (title, unit, series, target) in zip(axes.flat, panels, strict=True):
        logarithmic = unit in ("ms", "s", "MiB")
        for colour, engine in enumerate(results["engines"]):
            mine = sorted((r for r in rows if r["engine"] == engine), key=lambda r: r["size"])
            # One colour per engine, the second series of a panel dashed.
            for style, (label, value) in zip(("-", "--"), series, strict=False):
                values = [(r["size"], value(r)) for r in mine]
                # A log axis cannot show a zero (local mode builds no index): such points are left out.
                values = [(x, y) for x, y in values if y is not None and (y >= 0.01 or not logarithmic)]
                if values:
                    name = ENGINE_NAMES[engine] + (f", {label}" if label else "")
                    ax.plot(
                        [x for x, _ in values],
                        [y for _, y in values],
                        style,
                        color=f"C{colour}",
                        marker="o",
                        label=name,
                    )
        if target is not None:
            ax.axhline(target, linestyle=":", color="grey", label=f"target {target:g}")
        ax.set_title(title)
        ax.set_xscale("log")
        if logarithmic:
            ax.set_yscale("log")
        ax.set_xlabel("anime in the catalogue")
        ax.set_ylabel(unit)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- command line ------------------------------------------------------------------------------------


def _add_cell_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workspace", type=Path, default=Path("var/scale"))
    parser.add_argument("--batch-size", type=int, default=64, help="anime per upsert (the ingest's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--cosine", type=float, default=DEFAULT_COSINE, help="a variant's cosine to its source"
    )
    parser.add_argument("--repeats", type=int, default=3, help="measured passes over the text queries")
    parser.add_argument("--similarity-requests", type=int, default=30, help="measured similarity batches")
    parser.add_argument("--max-queries", type=int, default=None, help="only the first N text queries")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.scale",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    prepare = commands.add_parser("setup", help="read the real catalogue and embed the queries, once")
    prepare.add_argument("--source", type=Path, default=Path("var/relevance/e5-int8"))
    prepare.add_argument("--workspace", type=Path, default=Path("var/scale"))
    prepare.add_argument("--per-set", type=int, default=8, help="queries per relevance query set")
    prepare.add_argument("--seed", type=int, default=0)
    measure = commands.add_parser("run", help="build and measure every size on each engine")
    _add_cell_arguments(measure)
    measure.add_argument("--sizes", nargs="+", type=int, default=[1000, 10000, 50000, 200000])
    measure.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    measure.add_argument(
        "--local-limit-s",
        type=float,
        default=180.0,
        help="stop local mode before a size predicted to take longer",
    )
    measure.add_argument("--keep", action="store_true", help="keep each cell's store folder")
    measure.add_argument(
        "--in-process", action="store_true", help="no subprocesses (tests: RSS not per cell)"
    )
    measure.add_argument("--json", type=Path, default=None)
    measure.add_argument("--plot", type=Path, default=None)
    cell = commands.add_parser("cell", help="(internal) one phase of one (engine, size), in this process")
    cell.add_argument("phase", choices=["build", "serve"])
    _add_cell_arguments(cell)
    cell.add_argument("--engine", choices=ENGINES, required=True)
    cell.add_argument("--size", type=int, required=True)
    cell.add_argument("--out", type=Path, required=True)
    report = commands.add_parser("report", help="the Markdown tables (and --plot) of a results JSON")
    report.add_argument("results", type=Path)
    report.add_argument("--plot", type=Path, default=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.command == "setup":
        summary = asyncio.run(setup(args.source, args.workspace, per_set=args.per_set, seed=args.seed))
        print(json.dumps(summary))
        return 0
    if args.command == "cell":
        folder = cell_folder(args.workspace, args.engine, args.size)
        folder.parent.mkdir(parents=True, exist_ok=True)
        result = asyncio.run(cell_phase(args.phase, args, args.engine, args.size, folder))
        args.out.write_text(json.dumps(result))
        return 0
    if args.command == "report":
        results = json.loads(args.results.read_text())
    else:
        results = run(args)
        if args.json:
            write_results(args.json, "benchmarks.scale", argv, results)
    print(markdown(results))
    if args.plot:
        plot(results, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
