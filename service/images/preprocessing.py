"""A decoded picture -> the exact tensor the image encoder expects.

`preprocess` reproduces transformers' `CLIPImageProcessor` (PIL backend) bit for bit: the exporter
checks the ONNX model against that pipeline, so any drift here would be silent embedding drift.
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image

from service.domain.manifest import ImageSpec
from service.images.checks import DEFAULT_LIMITS, ImageDimensions, ImageLimits, decode_base64_image
from service.images.decoding import load_image, to_rgb

_RESAMPLE: dict[str, Image.Resampling] = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "lanczos": Image.Resampling.LANCZOS,
    "nearest": Image.Resampling.NEAREST,
}


def preprocess(image: Image.Image, spec: ImageSpec) -> np.ndarray:
    """One picture -> float32 [3, H, W], exactly as CLIPImageProcessor (PIL backend) computes it."""
    out = np.empty((3, spec.height, spec.width), dtype=np.float32)
    _preprocess_into(image, spec, out)
    return out


def preprocess_batch(images: list[Image.Image], spec: ImageSpec) -> np.ndarray:
    """[B, 3, H, W], written in place so a batch costs one allocation."""
    out = np.empty((len(images), 3, spec.height, spec.width), dtype=np.float32)
    for index, image in enumerate(images):
        _preprocess_into(image, spec, out[index])
    return out


def image_from_base64(text: str, spec: ImageSpec, limits: ImageLimits = DEFAULT_LIMITS) -> np.ndarray:
    """decode -> load -> preprocess: [3, H, W]."""
    return preprocess(load_image(decode_base64_image(text, limits), limits), spec)


def _preprocess_into(image: Image.Image, spec: ImageSpec, out: np.ndarray) -> None:
    rgb = image if image.mode == "RGB" else to_rgb(image)
    if min(rgb.size) < 1:  # Image.new accepts 0x0; it has no short side to scale
        raise ImageDimensions(f"image is {rgb.width}x{rgb.height}", width=rgb.width, height=rgb.height)
    if spec.resize == "squash":
        target = (spec.width, spec.height)
    else:
        target = _shortest_edge_size(rgb.size, spec.shortest_edge)
    # Resampling the uint8 image with PIL, as transformers does, is what makes the result bit-exact;
    # resizing floats (or with another library) shifts values by up to ~1e-2.
    resized = rgb if rgb.size == target else rgb.resize(target, resample=_RESAMPLE[spec.resample])
    pixels = np.asarray(resized)
    if spec.resize != "squash":
        # transformers' center_crop rounds the offset down on odd margins.
        top = (target[1] - spec.height) // 2
        left = (target[0] - spec.width) // 2
        pixels = pixels[top : top + spec.height, left : left + spec.width]
    table = _normalisation_table(tuple(map(float, spec.mean)), tuple(map(float, spec.std)))
    for channel in range(3):
        # A 256-entry lookup per channel: same values as rescale+normalise, without float temporaries.
        np.take(table[channel], pixels[..., channel], out=out[channel], mode="clip")


def _shortest_edge_size(size: tuple[int, int], edge: int) -> tuple[int, int]:
    """(width, height) with the short side == edge; the long side truncated, as transformers'
    get_resize_output_image_size(default_to_square=False) does."""
    width, height = size
    if width <= height:
        return edge, int(edge * height / width)
    return int(edge * width / height), edge


@functools.lru_cache(maxsize=16)
def _normalisation_table(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    # transformers rescales in float64, casts to float32, then normalises in float32; doing the same
    # per possible uint8 value gives identical results.
    scaled = (np.arange(256, dtype=np.float64) * (1 / 255)).astype(np.float32)
    table = (scaled[None, :] - np.asarray(mean, np.float32)[:, None]) / np.asarray(std, np.float32)[:, None]
    table.setflags(write=False)
    return table
