"""Find a checkpoint (Hugging Face id or local folder) and read what its own files say about it.

Pooling, max length and the sparse head come from the checkpoint's files
(sentence-transformers configs, BGE-m3's `sparse_linear.pt`), not from guesses about the model name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Pooling = Literal["cls", "mean"]

SPARSE_HEAD_FILE = "sparse_linear.pt"
# Past this, a tokenizer's model_max_length is the "no limit known" sentinel (1e30), not a real limit.
_SANE_MAX_LENGTH = 1_000_000


class CheckpointError(RuntimeError):
    """The checkpoint cannot be found or is not something this exporter understands."""


# Written by converters (export/e5_package.py) beside a checkpoint they produced: where its weights came
# from and which engine is the reference for its parity.
PROVENANCE_FILE = "provenance.json"
# Written by `finetune` beside a merged checkpoint: the base and the run (service.domain.manifest.Lineage).
LINEAGE_FILE = "lineage.json"


@dataclass(frozen=True)
class Provenance:
    """What a manifest says about the source: a name a reader elsewhere can look up, never a local path."""

    source: str
    upstream: str | None = None
    weights_note: str | None = None
    license: str | None = None
    reference_engine: str | None = None


@dataclass(frozen=True)
class TextCheckpoint:
    path: Path
    source: str
    revision: str | None
    model_type: str
    hidden_size: int
    pooling: Pooling
    max_length: int
    sparse_head: Path | None
    query_prompt: str = ""
    document_prompt: str = ""
    provenance: Provenance | None = None
    lineage: dict[str, Any] | None = None


def resolve(source: str, revision: str | None = None, trust_remote_code: bool = False) -> Path:
    """A local folder as it is; anything else is a Hugging Face repo id, downloaded to the HF cache."""
    local = Path(source).expanduser()
    if local.is_dir():
        return local.resolve()
    if local.exists():
        raise CheckpointError(f"{source} is a file; pass the checkpoint folder")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:  # pragma: no cover - huggingface_hub comes with transformers
        raise CheckpointError(
            "downloading from the Hub needs huggingface_hub (pip install '.[export]')"
        ) from exc
    try:
        return Path(snapshot_download(repo_id=source, revision=revision))
    except Exception as exc:
        raise CheckpointError(
            f"could not fetch '{source}' from the Hugging Face Hub ({type(exc).__name__}: {exc}). "
            "Offline? Download the checkpoint elsewhere and pass its local folder."
        ) from exc


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _sentence_transformers_pooling(path: Path) -> Pooling | None:
    """The pooling mode a sentence-transformers folder declares in modules.json, if it is one."""
    modules = _read_json(path / "modules.json")
    if not isinstance(modules, list):
        return None
    pooling: Pooling | None = None
    for module in modules:
        kind = str(module.get("type", ""))
        if kind.endswith("models.Pooling"):
            cfg = _read_json(path / module.get("path", "") / "config.json")
            if cfg.get("pooling_mode_cls_token"):
                pooling = "cls"
            elif cfg.get("pooling_mode_mean_tokens"):
                pooling = "mean"
            else:
                mode = cfg.get("pooling_mode")
                if mode in ("cls", "mean"):
                    pooling = mode
                elif cfg:
                    raise CheckpointError(
                        f"{path}: sentence-transformers pooling {cfg} is not supported (cls or mean only)"
                    )
    return pooling


def _max_length(path: Path, config: dict) -> int:
    st_cfg = _read_json(path / "sentence_bert_config.json")
    if isinstance(st_cfg.get("max_seq_length"), int):
        return int(st_cfg["max_seq_length"])
    tok_cfg = _read_json(path / "tokenizer_config.json")
    tok_max = tok_cfg.get("model_max_length")
    if isinstance(tok_max, (int, float)) and 0 < tok_max < _SANE_MAX_LENGTH:
        return int(tok_max)
    positions = int(config.get("max_position_embeddings", 512))
    # RoBERTa-family models offset positions by padding_idx + 1, so two slots are never usable.
    if config.get("model_type") in ("xlm-roberta", "roberta", "camembert"):
        positions -= int(config.get("pad_token_id", 1)) + 1
    return positions


def prompts(path: Path) -> tuple[str, str]:
    """(query, document) prompts from sentence-transformers' config_sentence_transformers.json.

    sentence-transformers names them freely; E5-style checkpoints use "query" and "passage" (or
    "document"), retrieval-tuned ones sometimes "search_query"/"search_document". None: no prompts.
    """
    config = _read_json(path / "config_sentence_transformers.json")
    named = config.get("prompts") if isinstance(config, dict) else None
    if not isinstance(named, dict):
        return "", ""

    def first(*names: str) -> str:
        return next((str(named[n]) for n in names if isinstance(named.get(n), str)), "")

    return first("query", "search_query"), first("document", "passage", "search_document")


def read_provenance(path: Path) -> Provenance | None:
    record = _read_json(path / PROVENANCE_FILE)
    if not isinstance(record, dict) or not isinstance(record.get("source"), str):
        return None
    return Provenance(
        source=record["source"],
        upstream=record.get("upstream"),
        weights_note=record.get("weights"),
        license=record.get("license"),
        reference_engine=record.get("reference_engine"),
    )


def describe_source(source: str, path: Path) -> str:
    """The name a manifest records for `source`: a Hub id as given, an installed package's name and
    version for a folder inside one, else `local:<folder name>` (a path would leak this machine's layout
    and mean nothing on another)."""
    local = Path(source).expanduser()
    if not local.exists():
        return source  # a Hub id
    parts = path.parts
    for marker in ("site-packages", "dist-packages"):
        if marker in parts and parts.index(marker) + 1 < len(parts):
            from importlib.metadata import packages_distributions, version

            top = parts[parts.index(marker) + 1]
            for dist in packages_distributions().get(top, []):
                return f"{dist}=={version(dist)}"
    return f"local:{path.name}"


def inspect_text(
    source: str,
    revision: str | None = None,
    pooling: Pooling | Literal["auto"] = "auto",
    max_length: int | None = None,
    sparse: bool | None = None,
) -> TextCheckpoint:
    path = resolve(source, revision)
    config = _read_json(path / "config.json")
    if not config:
        raise CheckpointError(f"{path} has no config.json: not a transformers checkpoint")
    st_pooling = _sentence_transformers_pooling(path)
    head = path / SPARSE_HEAD_FILE
    has_head = head.is_file()
    if sparse and not has_head:
        raise CheckpointError(f"--sparse asked, but {path} has no {SPARSE_HEAD_FILE}")
    use_sparse = has_head if sparse is None else sparse
    if pooling == "auto":
        # BGE-style checkpoints (the sparse head is the tell) embed with the CLS token.
        chosen: Pooling = st_pooling or ("cls" if has_head else "mean")
    else:
        chosen = pooling
    length = max_length or _max_length(path, config)
    query_prompt, document_prompt = prompts(path)
    provenance = read_provenance(path)
    lineage = _read_json(path / LINEAGE_FILE)
    return TextCheckpoint(
        path=path,
        source=provenance.source if provenance else describe_source(source, path),
        revision=revision,
        model_type=str(config.get("model_type", "unknown")),
        hidden_size=int(config["hidden_size"]),
        pooling=chosen,
        max_length=length,
        sparse_head=head if use_sparse else None,
        query_prompt=query_prompt,
        document_prompt=document_prompt,
        provenance=provenance,
        lineage=lineage if isinstance(lineage, dict) else None,
    )
