"""Putting anime into the store: compose text, embed in batches, upsert. One path for CLI and API.

`python -m service.catalogue.ingest bangumi` loads the real bangumi dataset (fetched from the npm registry);
`python -m service.catalogue.ingest file anime.json` loads a JSON list of documents in the API's format.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from service.catalogue.pictures import ImageProblem, ImageResolver
from service.catalogue.writer import ItemOutcome, calibrate, put_documents, refresh_hubness
from service.domain.documents import AnimeDocument, decode_documents
from service.encoders.text import EmbeddingMemo
from service.platform.logs import configure_logging, get_logger
from service.platform.progress import counter
from service.runtime import Runtime, build_runtime, check_store
from service.settings import load_settings
from service.store.edge_client import LocalModeFolder, StoreLocked

_log = get_logger("service.catalogue.ingest")


@dataclass(frozen=True)
class IngestReport:
    documents: int
    upserted: int
    skipped: int
    seconds: float
    image_problems: list[ImageProblem] = field(default_factory=list)
    failed: list[ItemOutcome] = field(default_factory=list)

    @property
    def per_minute(self) -> float:
        return self.upserted / self.seconds * 60 if self.seconds else 0.0


def _silent(_: int) -> None:
    return None


def _batches(items: Sequence[AnimeDocument], size: int) -> Iterable[Sequence[AnimeDocument]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


async def ingest(
    runtime: Runtime,
    documents: Sequence[AnimeDocument],
    *,
    batch_size: int = 64,
    skip_existing: bool = False,
    progress: bool = True,
    images: ImageResolver | None = None,
    on_batch: Callable[[list[str]], None] | None = None,
) -> IngestReport:
    """Store `documents` in batches; `on_batch` hears each batch's ids once Qdrant acknowledged them.

    A collection without a calibration (a new one) is calibrated on these documents first, so their
    synopses are stored centred; every anime's hubness is refreshed once at the end
    (service/domain/calibration.py).
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    memo = EmbeddingMemo()
    await ensure_calibration(runtime, documents, memo)
    upserted = skipped = 0
    problems: list[ImageProblem] = []
    failed: list[ItemOutcome] = []
    reporter = counter("ingest", len(documents), unit="anime") if progress else nullcontext(_silent)
    with reporter as advance:
        for batch in _batches(documents, batch_size):
            todo = list(batch)
            if skip_existing:
                present = await runtime.store.existing_ids([d.anime_id for d in todo])
                todo = [d for d in todo if d.anime_id not in present]
                skipped += len(batch) - len(todo)
            if todo:
                report = await put_documents(
                    runtime, todo, images=images, strict_images=False, hubs=False, memo=memo
                )
                for item in report.items:
                    problems += [
                        ImageProblem(str(item.anime_id), w.field or "", w.code, w.message)
                        for w in item.warnings
                    ]
                    if not item.stored:
                        failed.append(item)
                upserted += report.stored
                if on_batch is not None:
                    on_batch([str(item.anime_id) for item in report.items if item.stored])
            advance(len(batch))
    if upserted:
        for model in await runtime.held_models():
            hubs = await refresh_hubness(runtime, model=model)
            _log.info("hubness refreshed", anime=len(hubs), version=model.version)
        await runtime.store.optimize()
    return IngestReport(len(documents), upserted, skipped, loop.time() - started, problems, failed)


async def ensure_calibration(
    runtime: Runtime, documents: Sequence[AnimeDocument], memo: EmbeddingMemo | None = None
) -> None:
    """Calibrate an empty collection on `documents`, for every text model version it holds; leave an
    existing calibration alone.

    A calibration made by another text model no longer describes the vectors this one writes: say so
    (the cure is a re-embedding reindex, which calibrates afresh) rather than centre with it quietly.
    """
    store = runtime.store
    await store.ensure_ready()
    if not runtime.settings.synopsis_centring:
        return
    empty: bool | None = None
    for model in await runtime.held_models():
        current = await store.calibration(key=model.names.calibration_key)
        if current is None:
            if empty is None:
                empty = await store.count() == 0
            calibration = await calibrate(runtime, documents, memo, model) if empty else None
            if calibration is not None:
                await store.save_calibration(calibration, key=model.names.calibration_key)
                _log.info(
                    "calibrated",
                    version=model.version,
                    languages=calibration.samples,
                    calibration=calibration.id,
                )
            else:
                _log.warning(
                    "no calibration (too few synopses per language, or a collection filled before): "
                    'synopses are stored uncentred until POST /api/v1/admin/reindex {"reembed": true}',
                    version=model.version,
                )
        elif current.text_model != model.manifest.model_version:
            raise CalibrationMismatch(
                f"the collection was calibrated for {current.text_model}, text model version "
                f"{model.version} is {model.manifest.model_version}: run "
                'POST /api/v1/admin/reindex {"reembed": true} first'
            )


class CalibrationMismatch(RuntimeError):
    """The collection's language means belong to another text model."""


def _load(args: argparse.Namespace) -> list[AnimeDocument]:
    if args.source == "bangumi":
        from service.datasets.bangumi import load_bangumi

        return load_bangumi(Path(args.cache), limit=args.limit)
    documents = decode_documents(Path(args.path).read_bytes())
    return documents[: args.limit] if args.limit else documents


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m service.catalogue.ingest", description=__doc__)
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
        sub.add_argument(
            "--images",
            type=Path,
            default=None,
            help="folder with <anime_id>.picture.jpg / <anime_id>.thumbnail.jpg",
        )
        sub.add_argument(
            "--fetch-images",
            action="store_true",
            help="download picture/thumbnail URLs (10 s timeout, 10 MB cap)",
        )
        sub.add_argument(
            "--log-batches",
            action="store_true",
            help="print one JSON line per acknowledged batch (its anime ids) on stdout, for pipelines",
        )
    return parser


def _print_batch(anime_ids: list[str]) -> None:
    sys.stdout.write(
        msgspec.json.encode(
            {"event": "batch_stored", "count": len(anime_ids), "anime_ids": anime_ids}
        ).decode()
        + "\n"
    )
    sys.stdout.flush()


async def _run(args: argparse.Namespace) -> IngestReport:
    settings = load_settings()
    check_store(settings)  # before the documents are loaded (fetched, for bangumi)
    documents = _load(args)
    runtime = await build_runtime(settings)
    try:
        resolver = ImageResolver(
            images_dir=args.images,
            fetch_urls=args.fetch_images,
            limits=runtime.image_limits,
            decoder=runtime.decoder,
        )
        return await ingest(
            runtime,
            documents,
            batch_size=args.batch_size,
            skip_existing=args.skip_existing,
            images=resolver,
            on_batch=_print_batch if args.log_batches else None,
        )
    finally:
        await runtime.close()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging()  # JSON lines on stderr: stdout carries --log-batches' lines and the summary
    try:
        report = asyncio.run(_run(args))
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        print(f"error: invalid documents: {exc}", file=sys.stderr)
        return 2
    except LocalModeFolder as exc:
        _log.error("cannot start", error="local_mode_folder", reason=str(exc), command=exc.command)
        return 2
    except StoreLocked as exc:
        _log.error("cannot start", error="store_locked", reason=str(exc))
        return 2
    print(
        f"ingested {report.upserted} of {report.documents} anime ({report.skipped} already present) "
        f"in {report.seconds:.1f}s ({report.per_minute:.0f}/min); {len(report.image_problems)} image problems"
    )
    for problem in report.image_problems[:20]:
        print(f"  {problem.anime_id} {problem.slot}: {problem.code}: {problem.message}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
