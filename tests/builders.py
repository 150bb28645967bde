"""Tiny random checkpoints built from configs (no downloads), shaped like the real ones.

The tiny XLM-RoBERTa mirrors BGE-m3's folder: config.json, a SentencePiece-style Unigram
tokenizer with XLM-R's special tokens, sentence-transformers files declaring CLS pooling and an
8192-token window, and `sparse_linear.pt`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import SentencePieceUnigramTokenizer, processors

SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]

_CORPUS = [
    "A boy pilots a giant robot to fight mysterious angels.",
    "Space bounty hunters drift through the solar system chasing their pasts.",
    "High school girls form a light music club and play in a band.",
    "A young alchemist searches for the philosopher's stone with his brother.",
    "Titans attack the last city of humanity behind three walls.",
    "A quiet slice of life story about friends, cafes and summer festivals.",
    "Detectives solve murders in a city of magic and steam.",
    "新世紀エヴァンゲリオン 使徒 ロボット 学園 恋愛 日常",
    "进击的巨人 钢之炼金术师 星际牛仔 轻音少女 科幻 战斗 校园",
    "mecha romance comedy drama fantasy horror mystery sports music idol isekai",
]


def build_xlmr_tokenizer(directory: Path, max_length: int = 8192):
    from transformers import XLMRobertaTokenizerFast

    unigram = SentencePieceUnigramTokenizer()
    unigram.train_from_iterator(
        _CORPUS * 20, vocab_size=300, special_tokens=SPECIAL_TOKENS, unk_token="<unk>"
    )
    backend = unigram._tokenizer
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", backend.token_to_id("<s>")), ("</s>", backend.token_to_id("</s>"))],
    )
    tokenizer = XLMRobertaTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        model_max_length=max_length,
    )
    tokenizer.save_pretrained(str(directory))
    return tokenizer


def build_tiny_xlmr(
    directory: Path,
    *,
    seed: int = 0,
    sparse_head: bool = True,
    sentence_transformers: bool = True,
    hidden_size: int = 32,
) -> Path:
    """A BGE-m3-shaped checkpoint folder with random weights; returns the folder."""
    from transformers import XLMRobertaConfig, XLMRobertaModel

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_xlmr_tokenizer(directory)
    assert tokenizer.pad_token_id == 1, "XLM-R convention: <pad> is id 1"
    torch.manual_seed(seed)
    config = XLMRobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=hidden_size * 2,
        max_position_embeddings=8194,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        type_vocab_size=1,
    )
    XLMRobertaModel(config, add_pooling_layer=False).eval().save_pretrained(str(directory))
    if sparse_head:
        torch.save(torch.nn.Linear(hidden_size, 1).state_dict(), directory / "sparse_linear.pt")
    if sentence_transformers:
        (directory / "1_Pooling").mkdir(exist_ok=True)
        (directory / "1_Pooling" / "config.json").write_text(
            json.dumps({"word_embedding_dimension": hidden_size, "pooling_mode_cls_token": True})
        )
        (directory / "modules.json").write_text(
            json.dumps(
                [
                    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                    {
                        "idx": 1,
                        "name": "1",
                        "path": "1_Pooling",
                        "type": "sentence_transformers.models.Pooling",
                    },
                    {
                        "idx": 2,
                        "name": "2",
                        "path": "2_Normalize",
                        "type": "sentence_transformers.models.Normalize",
                    },
                ]
            )
        )
        (directory / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 8192}))
    return directory
