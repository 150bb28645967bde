"""The PyTorch module that becomes `text_embedder`: encoder + pooling + L2 norm (+ BGE-m3's sparse head).

Pooling and normalisation live inside the graph so Triton returns final vectors, not hidden states:
less data over the wire, and one definition of the embedding for every engine.
"""

from __future__ import annotations

import torch
from torch import nn

from export.checkpoint import TextCheckpoint


class TextEmbeddingModule(nn.Module):
    """(input_ids, attention_mask) -> dense [B, D] (+ sparse [B, L] per-token lexical weights)."""

    def __init__(self, encoder: nn.Module, pooling: str, sparse_head: nn.Linear | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.pooling = pooling
        self.sparse_head = sparse_head

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        dense = nn.functional.normalize(pooled, p=2.0, dim=-1)
        if self.sparse_head is None:
            return (dense,)
        # BGE-m3: relu(linear(h)) per token; max-pooling per token id happens in the façade,
        # which holds the ids (cheap in numpy, awkward as a graph).
        sparse = torch.relu(self.sparse_head(hidden)).squeeze(-1) * attention_mask.to(hidden.dtype)
        return dense, sparse


def load_text_module(checkpoint: TextCheckpoint) -> TextEmbeddingModule:
    from transformers import AutoModel

    kwargs = {"attn_implementation": "eager"}
    try:
        encoder = AutoModel.from_pretrained(str(checkpoint.path), add_pooling_layer=False, **kwargs)
    except TypeError:  # architectures without a pooler take no add_pooling_layer
        encoder = AutoModel.from_pretrained(str(checkpoint.path), **kwargs)
    head: nn.Linear | None = None
    if checkpoint.sparse_head is not None:
        state = torch.load(checkpoint.sparse_head, map_location="cpu", weights_only=True)
        head = nn.Linear(checkpoint.hidden_size, 1)
        head.load_state_dict(state)
    return TextEmbeddingModule(encoder, checkpoint.pooling, head).eval()
