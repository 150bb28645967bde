"""Putting anime into the store: compose text, embed in batches, upsert. One path for CLI and API.

`python -m service.ingest bangumi` loads the real bangumi dataset (fetched from the npm registry);
`python -m service.ingest file anime.json` loads a JSON list of documents in the API's format.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import msgspec

from service.documents import AnimeDocument, decode_documents, to_payload
from service.progress import counter
from service.runtime import TEXT_SPARSE_VECTOR, TEXT_VECTOR, Runtime, build_runtime
from service.settings import load_settings
from service.store.qdrant_store import StoredPoint
from service.text_compose import compose_text


@dataclass(frozen=True)
class IngestReport:
    documents: int
    upserted: int
    skipped: int
    seconds: float

    @property
    def per_minute(self) -> float:
        return self.upserted / self.seconds * 60 if self.seconds else 0.0


def _silent(_: int) -> None:
    return None


def _batches(items: Sequence[AnimeDocument], size: int) -> Iterable[Sequence[AnimeDocument]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


async def embed_points(runtime: Runtime, documents: Sequence[AnimeDocument]) -> list[StoredPoint]:
    """Vectors and payload for each document, stamped with the model version that made them."""
    embeddings = await runtime.text.encode([compose_text(d) for d in documents])
    stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    version = runtime.text.manifest.model_version
    points = []
    for row, doc in enumerate(documents):
        vectors: dict = {TEXT_VECTOR: embeddings.dense[row].tolist()}
        if embeddings.sparse is not None and len(embeddings.sparse[row]):
            vectors[TEXT_SPARSE_VECTOR] = embeddings.sparse[row]
        payload = to_payload(doc) | {"model_version": version, "updated_at": stamp}
        points.append(StoredPoint(anime_id=doc.anime_id, vectors=vectors, payload=payload))
    return points


async def ingest(
    runtime: Runtime,
    documents: Sequence[AnimeDocument],
    *,
    batch_size: int = 64,
    skip_existing: bool = False,
    progress: bool = True,
) -> IngestReport:
    loop = asyncio.get_running_loop()
    started = loop.time()
    upserted = skipped = 0
    reporter = counter("ingest", len(documents), unit="anime") if progress else nullcontext(_silent)
    with reporter as advance:
        for batch in _batches(documents, batch_size):
            todo = list(batch)
            if skip_existing:
                present = await runtime.store.existing_ids([d.anime_id for d in todo])
                todo = [d for d in todo if d.anime_id not in present]
                skipped += len(batch) - len(todo)
            if todo:
                await runtime.store.upsert(await embed_points(runtime, todo))
                upserted += len(todo)
            advance(len(batch))
    return IngestReport(len(documents), upserted, skipped, loop.time() - started)


def _load(args: argparse.Namespace) -> list[AnimeDocument]:
    if args.source == "bangumi":
        from service.datasets.bangumi import load_bangumi

        return load_bangumi(Path(args.cache), limit=args.limit)
    documents = decode_documents(Path(args.path).read_bytes())
    return documents[: args.limit] if args.limit else documents


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m service.ingest", description=__doc__)
    sources = parser.add_subparsers(dest="source", required=True)
    bangumi = sources.add_parser("bangumi", help="the bangumi dataset (npm packages bgmd + bangumi-data)")
    bangumi.add_argument("--cache", default="var/datasets", help="where fetched packages are kept")
    file = sources.add_parser("file", help="a JSON list of anime documents")
    file.add_argument("path")
    for sub in (bangumi, file):
        sub.add_argument("--limit", type=int, default=None, help="only the first N documents")
        sub.add_argument("--batch-size", type=int, default=64)
        sub.add_argument(
            "--skip-existing", action="store_true", help="do not re-embed anime already in the store (resume)"
        )
    return parser


async def _run(args: argparse.Namespace) -> IngestReport:
    settings = load_settings()
    documents = _load(args)
    runtime = await build_runtime(settings)
    try:
        return await ingest(runtime, documents, batch_size=args.batch_size, skip_existing=args.skip_existing)
    finally:
        await runtime.close()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = asyncio.run(_run(args))
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        print(f"error: invalid documents: {exc}", file=sys.stderr)
        return 2
    print(
        f"ingested {report.upserted} of {report.documents} anime ({report.skipped} already present) "
        f"in {report.seconds:.1f}s ({report.per_minute:.0f}/min)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
