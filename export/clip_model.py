"""The PyTorch modules that become `image_embedder` and `clip_text_embedder`, and the image spec.

Both towers come from one CLIP-style checkpoint (transformers' CLIPModel, SigLIP, or JinaCLIP v2 via
trust_remote_code: all expose get_image_features / get_text_features), so their vectors share a
space. Matryoshka truncation and L2 normalisation are inside the graphs.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from service.domain.manifest import ImageSpec

# OpenAI CLIP's normalisation, the fallback when a checkpoint ships no preprocessor config.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic"}


def features(output: Any) -> torch.Tensor:
    """The projected embedding, whatever shape the model returns it in (tensor or ModelOutput)."""
    if torch.is_tensor(output):
        return output
    for name in ("text_embeds", "image_embeds", "pooler_output"):
        value = getattr(output, name, None)
        if value is not None:
            return value
    if isinstance(output, (tuple, list)) and output and torch.is_tensor(output[0]):
        return output[0]
    raise TypeError(f"cannot find embeddings in {type(output).__name__}")


class ImageTower(nn.Module):
    """pixel_values [B,3,H,W] -> embeds [B,dim], L2-normalised."""

    def __init__(self, model: nn.Module, dim: int) -> None:
        super().__init__()
        self.model = model
        self.dim = dim

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        embeds = features(self.model.get_image_features(pixel_values=pixel_values))
        return nn.functional.normalize(embeds[:, : self.dim], p=2.0, dim=-1)


class TextTower(nn.Module):
    """(input_ids, attention_mask) -> embeds [B,dim] in the image space, L2-normalised."""

    def __init__(self, model: nn.Module, dim: int, pad_token_id: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.dim = dim
        # JinaCLIP's text tower takes no attention_mask: it masks wherever input_ids == pad id.
        self.takes_mask = "attention_mask" in inspect.signature(model.get_text_features).parameters
        if not self.takes_mask and pad_token_id is None:
            raise ValueError("a text tower without attention_mask needs the tokenizer's pad_token_id")
        self.pad_token_id = pad_token_id

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.takes_mask:
            output = self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
        else:
            # Writing the pad id wherever the mask says "padding" keeps the mask the one source of
            # truth (as it is for every other tower), and keeps it in the graph: the tracer drops
            # inputs nothing reads, and the façade and Triton always send both.
            input_ids = torch.where(attention_mask.bool(), input_ids, self.pad_token_id)
            output = self.model.get_text_features(input_ids=input_ids)
        return nn.functional.normalize(features(output)[:, : self.dim], p=2.0, dim=-1)


def _size(value: Any) -> tuple[int, int] | None:
    if isinstance(value, int):
        return value, value
    if isinstance(value, dict):
        if "height" in value and "width" in value:
            return int(value["height"]), int(value["width"])
        if "shortest_edge" in value:
            edge = int(value["shortest_edge"])
            return edge, edge
    return None


def image_spec(path: Path, model_config: Any) -> ImageSpec:
    """Preprocessing as the checkpoint declares it (preprocessor_config.json), CLIP's defaults otherwise."""
    config_file = path / "preprocessor_config.json"
    raw: dict[str, Any] = json.loads(config_file.read_text()) if config_file.is_file() else {}
    vision = getattr(model_config, "vision_config", None)
    default_side = int(getattr(vision, "image_size", 224) or 224)
    crop = _size(raw.get("crop_size")) if raw.get("do_center_crop", True) else None
    size = crop or _size(raw.get("size")) or _size(raw.get("image_size")) or (default_side, default_side)
    mode = str(raw.get("resize_mode", ""))
    squash = mode == "squash" or raw.get("do_center_crop") is False
    resample = raw.get("resample", raw.get("interpolation", 3))
    return ImageSpec(
        height=size[0],
        width=size[1],
        mean=tuple(float(x) for x in raw.get("image_mean", raw.get("mean", CLIP_MEAN))),  # type: ignore[arg-type]
        std=tuple(float(x) for x in raw.get("image_std", raw.get("std", CLIP_STD))),  # type: ignore[arg-type]
        resize="squash" if squash else "shortest_edge_center_crop",
        resample=_RESAMPLE.get(resample, resample) if isinstance(resample, int) else str(resample),  # type: ignore[arg-type]
    )
