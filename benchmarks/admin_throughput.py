"""Catalogue write speed over real HTTP: upsert throughput and reindex duration.

    python -m benchmarks.admin_throughput --model-repository var/model_repository --documents 2048

Starts the service (uvicorn) on a fresh local store, upserts real anime in batches through
POST /api/v1/admin/vectors/upsert (the service embeds them), then rebuilds the collection with
POST /api/v1/admin/reindex twice: a plain copy and a full re-embed. Reports vectors/minute and
seconds. `--qdrant-path` points at an existing store instead (e.g. the demo's, to time its reindex).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx
import msgspec

from service.platform.progress import counter
from service.triton_local.launcher import free_port
from tests.processes import start_service


def _reindex(client: httpx.Client, body: dict) -> dict:
    job = client.post("/api/v1/admin/reindex", json=body).json()
    while job["state"] == "running":
        time.sleep(0.5)
        job = client.get(f"/api/v1/admin/reindex/{job['job_id']}").json()
    return job


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.admin_throughput", description=__doc__)
    parser.add_argument("--model-repository", type=Path, default=Path("var/model_repository"))
    parser.add_argument(
        "--qdrant-path", type=Path, default=None, help="existing store (skips the upsert run)"
    )
    parser.add_argument("--documents", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--text-max-tokens", type=int, default=128)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    from service.datasets.bangumi import load_bangumi

    workdir = Path(tempfile.mkdtemp(prefix="bench-admin-"))
    store = args.qdrant_path or workdir / "qdrant"
    env = {
        "MODEL_REPOSITORY": str(args.model_repository),
        "QDRANT_PATH": str(store),
        "TEXT_MAX_TOKENS": str(args.text_max_tokens),
        "ADMIN_MAX_BATCH": str(max(args.batch_size, 1)),
    }
    port = free_port()
    process = start_service(env, port, workdir / "service.log")
    results: dict = {"batch_size": args.batch_size, "text_max_tokens": args.text_max_tokens}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600) as client:
            if args.qdrant_path is None:
                documents = load_bangumi(Path(os.environ.get("AVS_DATASET_CACHE", "var/datasets")))[
                    : args.documents
                ]
                payloads = [msgspec.to_builtins(d) for d in documents]
                started = time.perf_counter()
                with counter("upsert", len(payloads), unit="anime") as advance:
                    for i in range(0, len(payloads), args.batch_size):
                        batch = payloads[i : i + args.batch_size]
                        response = client.post("/api/v1/admin/vectors/upsert", json={"documents": batch})
                        response.raise_for_status()
                        advance(len(batch))
                seconds = time.perf_counter() - started
                vectors = client.get("/api/v1/admin/stats").json()["vectors"]
                stored_vectors = sum(vectors.values())
                results["upsert"] = {
                    "documents": len(payloads),
                    "vectors": stored_vectors,
                    "seconds": round(seconds, 2),
                    "documents_per_minute": round(len(payloads) / seconds * 60),
                    "vectors_per_minute": round(stored_vectors / seconds * 60),
                }
            points = client.get("/api/v1/admin/stats").json()["points"]
            for name, body in (("reindex_copy", {}), ("reindex_reembed", {"reembed": True})):
                print(f"[{name}] {points} points", file=sys.stderr)
                job = _reindex(client, body)
                results[name] = {"points": points, "state": job["state"], "seconds": job["seconds"]}
    finally:
        process.terminate()
        process.wait()
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
