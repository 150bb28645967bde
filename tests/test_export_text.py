"""Export of text encoders: parity, pooling, the sparse head, max length, and a Triton-valid config."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from export import onnx_graph, triton_config
from export.checkpoint import inspect_text
from export.cli import main as export_cli
from export.parity import ParityError
from export.text_export import export_text, text_triton_config
from export.text_model import load_text_module
from service.domain.manifest import TEXT_EMBEDDER, load_manifest, version_dirs
from tests.conftest import ROOT

_TRITON_TYPES = {"int64": "TYPE_INT64", "float32": "TYPE_FP32"}


def _session(repository, role=TEXT_EMBEDDER):
    manifest, directory = load_manifest(repository, role)
    return manifest, ort.InferenceSession(str(directory / "model.onnx"), providers=["CPUExecutionProvider"])


def _tokens(tokenizer, texts):
    enc = tokenizer(texts, padding=True, return_tensors="np")
    return enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)


def test_tiny_xlmr_manifest_records_parity_dims_and_the_checkpoints_own_max_length(tiny_repository):
    manifest, _ = load_manifest(tiny_repository, TEXT_EMBEDDER)
    assert manifest.architecture == "xlm-roberta"
    assert manifest.dim == 32
    assert manifest.pooling == "cls"
    assert manifest.has_sparse
    assert manifest.tokenizer is not None
    assert manifest.tokenizer.max_length == 8192  # BGE-m3's window, not a silent 512
    assert manifest.tokenizer.pad_token_id == 1
    assert 0 < manifest.parity_max_abs_diff <= manifest.parity_tolerance == 1e-4
    assert manifest.opset == 17
    assert len(manifest.fingerprint) == 64


def test_tiny_xlmr_dense_is_l2_normalised_cls_not_mean_pooling(tiny_repository, tiny_checkpoint):
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_checkpoint))
    ids, mask = _tokens(tokenizer, ["a boy pilots a giant robot", "summer festival", "校园 恋爱"])
    _, session = _session(tiny_repository)
    dense, sparse = session.run(["dense", "sparse"], {"input_ids": ids, "attention_mask": mask})

    encoder = AutoModel.from_pretrained(str(tiny_checkpoint), add_pooling_layer=False).eval()
    with torch.no_grad():
        hidden = encoder(
            input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)
        ).last_hidden_state
    cls = torch.nn.functional.normalize(hidden[:, 0], dim=-1).numpy()
    m = torch.from_numpy(mask).unsqueeze(-1).float()
    mean = torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1), dim=-1).numpy()

    np.testing.assert_allclose(np.linalg.norm(dense, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(dense, cls, atol=1e-4)
    assert np.abs(dense - mean).max() > 1e-2

    head = torch.nn.Linear(32, 1)
    head.load_state_dict(torch.load(tiny_checkpoint / "sparse_linear.pt", weights_only=True))
    with torch.no_grad():
        expected_sparse = (torch.relu(head(hidden)).squeeze(-1) * torch.from_numpy(mask)).numpy()
    np.testing.assert_allclose(sparse, expected_sparse, atol=1e-4)
    assert (sparse[mask == 0] == 0).all()


def test_long_inputs_beyond_512_tokens_run_through_the_graph(tiny_repository, tiny_checkpoint):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_checkpoint))
    text = " ".join(["giant robot summer festival detectives"] * 400)
    enc = tokenizer([text], truncation=True, max_length=2000, return_tensors="np")
    assert enc["input_ids"].shape[1] == 2000
    _, session = _session(tiny_repository)
    (dense,) = session.run(["dense"], {k: v.astype(np.int64) for k, v in enc.items()})
    module = load_text_module(inspect_text(str(tiny_checkpoint)))
    with torch.no_grad():
        expected = module(torch.from_numpy(enc["input_ids"]), torch.from_numpy(enc["attention_mask"]))[0]
    np.testing.assert_allclose(dense, expected.numpy(), atol=1e-4)


def _assert_config_matches_graph(repository, role):
    """config.pbtxt parsed with Triton's protobuf: every tensor's name, dims and type as in the graph."""
    config = triton_config.read_config(repository / role)
    manifest, directory = load_manifest(repository, role)
    inputs, outputs = onnx_graph.graph_io(directory / "model.onnx")
    dtypes = onnx_graph.graph_dtypes(directory / "model.onnx")
    assert config.name == role
    for declared, graph in ((config.input, inputs), (config.output, outputs)):
        assert [t.name for t in declared] == list(graph)
        for tensor in declared:
            shape = graph[tensor.name]
            assert shape[0] == "batch"  # Triton adds the batch dim itself
            expected = [-1 if isinstance(d, str) else d for d in shape[1:]]
            assert list(tensor.dims) == expected, tensor.name
            assert triton_config.mc.DataType.Name(tensor.data_type) == _TRITON_TYPES[dtypes[tensor.name]]
    return config, manifest, outputs


def test_config_pbtxt_parses_with_tritons_protobuf_and_matches_the_onnx_graph(tiny_repository):
    config, manifest, outputs = _assert_config_matches_graph(tiny_repository, TEXT_EMBEDDER)
    assert config.backend == "onnxruntime"
    assert config.max_batch_size == 32
    assert list(config.dynamic_batching.preferred_batch_size) == [8, 16, 32]
    assert config.dynamic_batching.max_queue_delay_microseconds == 2000
    assert config.instance_group[0].count == 1
    assert outputs["dense"] == ["batch", manifest.dim]
    assert not config.optimization.execution_accelerators.gpu_execution_accelerator


@pytest.mark.parametrize("role", [TEXT_EMBEDDER, "image_embedder", "clip_text_embedder"])
def test_every_exported_role_declares_its_graphs_tensors(real_repository, role):
    _, manifest, outputs = _assert_config_matches_graph(real_repository, role)
    assert outputs[next(iter(outputs))] == ["batch", manifest.dim]


def test_cli_gpu_options_reach_config_pbtxt_and_parity_is_printed(tiny_checkpoint, tmp_path, capsys):
    code = export_cli(
        [
            "text",
            str(tiny_checkpoint),
            "--out",
            str(tmp_path),
            "--instance-kind",
            "gpu",
            "--instances",
            "2",
            "--tensorrt-fp16",
            "--max-batch-size",
            "16",
            "--preferred-batch-sizes",
            "4,16",
            "--queue-delay-us",
            "500",
        ]
    )
    assert code == 0
    printed = capsys.readouterr()
    assert "parity text_embedder: max |torch - onnxruntime| = " in printed.out
    # Progress: one line per step when stderr is not a terminal (CI, kubectl logs).
    assert "checking parity with PyTorch" in printed.err
    config, manifest, _ = _assert_config_matches_graph(tmp_path, TEXT_EMBEDDER)
    assert f"parity={manifest.parity_max_abs_diff:.2e}" in printed.out
    assert config.max_batch_size == 16
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 16]
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    group = config.instance_group[0]
    assert group.count == 2 and group.kind == triton_config.mc.ModelInstanceGroup.KIND_GPU
    (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt"
    assert accelerator.parameters["precision_mode"] == "FP16"
    assert accelerator.parameters["trt_engine_cache_path"] == "/tmp/trt_cache/text_embedder"


def test_cli_refuses_inconsistent_batching_options(tiny_checkpoint, tmp_path, capsys):
    args = ["text", str(tiny_checkpoint), "--out", str(tmp_path), "--max-batch-size", "8"]
    assert export_cli([*args, "--preferred-batch-sizes", "4,16"]) == 2
    assert "preferred batch sizes" in capsys.readouterr().err
    assert not (tmp_path / TEXT_EMBEDDER).exists()


def test_committed_production_config_is_what_export_writes_for_bge_m3():
    """model_repository/ holds BGE-m3's entry; regenerate it with the exporter to keep them in step."""
    committed = (ROOT / "model_repository" / TEXT_EMBEDDER / "config.pbtxt").read_text()
    generated = triton_config.render(
        text_triton_config(TEXT_EMBEDDER, 1024, True, triton_config.BatchingOptions())
    )
    assert triton_config.parse(committed) == triton_config.parse(generated)


def test_minilm_export_matches_sentence_transformers(minilm_repository, minilm_checkpoint):
    from sentence_transformers import SentenceTransformer

    texts = ["Space bounty hunters in 2071", "A girl joins a light music club", "巨大ロボット", "x"]
    reference = SentenceTransformer(str(minilm_checkpoint), device="cpu").encode(
        texts, normalize_embeddings=True
    )
    manifest, session = _session(minilm_repository)
    from transformers import AutoTokenizer

    ids, mask = _tokens(AutoTokenizer.from_pretrained(str(minilm_checkpoint)), texts)
    (dense,) = session.run(["dense"], {"input_ids": ids, "attention_mask": mask})
    assert manifest.pooling == "mean" and manifest.dim == 384 and not manifest.has_sparse
    assert manifest.tokenizer is not None and manifest.tokenizer.max_length == 256
    np.testing.assert_allclose(dense, reference, atol=1e-4)


def test_parity_above_tolerance_fails_loudly_and_writes_nothing(tiny_checkpoint, tmp_path):
    with pytest.raises(ParityError, match="differs from PyTorch"):
        export_text(str(tiny_checkpoint), tmp_path, tolerance=1e-12)
    assert version_dirs(tmp_path / TEXT_EMBEDDER) == []
    assert not any(p.name.endswith(".partial") for p in (tmp_path / TEXT_EMBEDDER).iterdir())


def test_cli_reports_parity_failure_with_exit_code(tiny_checkpoint, tmp_path, capsys):
    code = export_cli(["text", str(tiny_checkpoint), "--out", str(tmp_path), "--tolerance", "1e-12"])
    assert code == 3
    assert "parity check failed" in capsys.readouterr().err


def test_cli_refuses_unknown_checkpoint_without_traceback(tmp_path, capsys):
    code = export_cli(["text", str(tmp_path / "missing-folder-or-hub-id"), "--out", str(tmp_path)])
    assert code == 2
    assert "could not fetch" in capsys.readouterr().err


def test_external_data_export_loads_and_matches(tiny_checkpoint, tiny_repository, tmp_path):
    export_text(str(tiny_checkpoint), tmp_path, external_data=True)
    _, directory = load_manifest(tmp_path, TEXT_EMBEDDER)
    assert (directory / "model.onnx.data").is_file()
    feed = {"input_ids": np.array([[0, 5, 6, 7, 2]]), "attention_mask": np.ones((1, 5), np.int64)}
    (external,) = _session(tmp_path)[1].run(["dense"], feed)
    (inline,) = _session(tiny_repository)[1].run(["dense"], feed)
    np.testing.assert_allclose(external, inline, atol=1e-6)


def test_pooling_and_max_length_come_from_the_checkpoint_files(tmp_path):
    from tests.builders import build_tiny_xlmr

    plain = build_tiny_xlmr(tmp_path / "plain", sparse_head=False, sentence_transformers=False)
    info = inspect_text(str(plain))
    assert info.pooling == "mean" and info.sparse_head is None
    assert info.max_length == 8192  # from tokenizer_config's model_max_length
    assert inspect_text(str(plain), pooling="cls", max_length=1024).max_length == 1024
