"""Client pictures -> the exact tensor the image encoder expects.

Pure functions, no HTTP and no I/O beyond decoding bytes (and reading a local file for the CLI):

* `decode_base64_image` bounds the size on the *text* before decoding, so an oversized request is
  refused without allocating its decoded copy;
* `load_image` sniffs the format from the bytes, checks the header dimensions before Pillow decodes a
  pixel, and turns every decoder failure into an `ImageError` (a `ServiceError`, so the API answers
  with the error envelope and a 4xx, never a traceback);
* `preprocess` reproduces transformers' `CLIPImageProcessor` (PIL backend) bit for bit: the exporter
  checks the ONNX model against that pipeline, so any drift here would be silent embedding drift.
"""

from __future__ import annotations

import base64
import binascii
import functools
import io
import math
import os
import re
from typing import Literal, get_args

import msgspec
import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

from service.errors import ServiceError

__all__ = [
    "DEFAULT_LIMITS",
    "CorruptImage",
    "ImageDimensions",
    "ImageError",
    "ImageLimits",
    "ImageSpec",
    "ImageTooLarge",
    "InvalidBase64",
    "UnsupportedImage",
    "decode_base64_image",
    "image_from_base64",
    "load_image",
    "preprocess",
    "preprocess_batch",
    "read_image_file",
]

ResizeMode = Literal["shortest_edge_center_crop", "squash"]
Resample = Literal["bicubic", "bilinear", "lanczos", "nearest"]

_RESAMPLE: dict[str, Image.Resampling] = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "lanczos": Image.Resampling.LANCZOS,
    "nearest": Image.Resampling.NEAREST,
}

# Room for a data URL header ("data:image/png;name=cover.png;base64,") ahead of the payload.
_DATA_URL_HEADER_MAX = 512
# Line breaks every 64 characters with CRLF cost 1/32 of the payload; allow twice that so wrapped
# base64 (PEM, MIME) near the limit still passes the cheap pre-check. Anything beyond is refused
# without being looked at: no legitimate client pads a picture with that much whitespace.
_WHITESPACE_SLACK = 16
_URLSAFE_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_NOT_BASE64 = re.compile(r"[^A-Za-z0-9+/_\-=]")

# Pillow names JPEGs carrying a Multi-Picture index (common from phone cameras) "MPO"; the first
# picture is an ordinary JPEG, so allowing JPEG allows these.
_FORMAT_ALIASES = {"MPO": "JPEG"}
# Same table as ImageOps.exif_transpose; kept here because the orientation must be read before alpha
# flattening, which drops the metadata.
_ORIENTATION: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# 16-bit greyscale PNGs decode to these modes; Pillow's convert("RGB") clips them instead of scaling.
_WIDE_GREY_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})


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
        if self.resample not in _RESAMPLE:
            raise ValueError(f"unknown resample filter {self.resample!r}")

    @property
    def shortest_edge(self) -> int:
        """The short side after resizing: the crop must fit inside, whichever of H, W is larger."""
        return max(self.height, self.width)


_DEFAULT_FORMATS = frozenset({"JPEG", "PNG", "WEBP"})


class ImageLimits(msgspec.Struct, frozen=True, kw_only=True):
    max_bytes: int = 10 * 1024 * 1024  # decoded bytes
    max_pixels: int = 40_000_000  # decompression-bomb guard (width*height)
    max_aspect_ratio: float = 20.0  # a 1x100000 strip is not a picture
    min_side: int = 8
    formats: frozenset[str] = _DEFAULT_FORMATS

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or self.max_pixels < 1 or self.min_side < 1:
            raise ValueError("image limits must be positive")
        if not self.max_aspect_ratio >= 1:
            raise ValueError(f"max_aspect_ratio must be at least 1, got {self.max_aspect_ratio}")
        if not self.formats:
            raise ValueError("at least one image format must be allowed")
        if self.formats != _DEFAULT_FORMATS:
            # A name Pillow cannot open would make every request fail; say so at configuration time.
            # Skipped for the default set so importing this module does not load every Pillow plugin.
            Image.init()
            unknown = sorted(f for f in self.formats if f.upper() not in Image.OPEN)
            if unknown:
                raise ValueError(f"Pillow cannot open image formats {unknown}")

    @property
    def max_base64_chars(self) -> int:
        """Longest base64 text (data URL and line breaks included) worth decoding at all.

        The façade can use it to size its request-body limit.
        """
        payload = 4 * math.ceil(self.max_bytes / 3)
        return payload + payload // _WHITESPACE_SLACK + _DATA_URL_HEADER_MAX

    @property
    def allowed_formats(self) -> tuple[str, ...]:
        return tuple(sorted(f.upper() for f in self.formats))


DEFAULT_LIMITS = ImageLimits()


class ImageError(ServiceError, ValueError):
    """A picture the service cannot use. ValueError for callers outside the service; ServiceError so
    the API's handler answers with `status_code` and `code`. `message` is for humans and `details`
    for machines; neither ever holds a traceback."""

    status_code: int = 422
    code: str = "invalid_image"


class InvalidBase64(ImageError):
    status_code = 422
    code = "invalid_base64"


class ImageTooLarge(ImageError):
    status_code = 413
    code = "image_too_large"


class UnsupportedImage(ImageError):
    status_code = 415
    code = "unsupported_image_format"


class CorruptImage(ImageError):
    status_code = 422
    code = "corrupt_image"


class ImageDimensions(ImageError):
    status_code = 422
    code = "bad_image_dimensions"


# --------------------------------------------------------------------------------------------- base64


def decode_base64_image(text: str, limits: ImageLimits = DEFAULT_LIMITS) -> bytes:
    """Raw base64 (standard or urlsafe, padded or not, wrapped or not) or a `data:...;base64,` URL."""
    if not isinstance(text, str):
        raise InvalidBase64("image must be a base64 string", got_type=type(text).__name__)
    # O(1) and before any copy: an 11 MB body is refused without touching its contents.
    if len(text) > limits.max_base64_chars:
        raise ImageTooLarge(
            f"image text is {len(text)} characters; images over {limits.max_bytes} bytes are refused",
            max_bytes=limits.max_bytes,
            max_chars=limits.max_base64_chars,
            got_chars=len(text),
        )
    payload = "".join(_strip_data_url(text).split()).rstrip("=")
    if not payload:
        raise InvalidBase64("image is empty")
    # Exact decoded size from the length alone, still before decoding.
    decoded_size = len(payload) * 3 // 4
    if decoded_size > limits.max_bytes:
        raise ImageTooLarge(
            f"image is {decoded_size} bytes; at most {limits.max_bytes} are accepted",
            max_bytes=limits.max_bytes,
            got=decoded_size,
        )
    bad = _NOT_BASE64.search(payload)
    if bad is not None:
        raise InvalidBase64(
            f"invalid base64 character {bad.group()!r} at position {bad.start()}", position=bad.start()
        )
    if len(payload) % 4 == 1:
        # No byte sequence encodes to 4k+1 characters: the text was cut.
        raise InvalidBase64("base64 data is truncated", length=len(payload))
    raw = payload.encode("ascii")
    if b"-" in raw or b"_" in raw:
        raw = raw.translate(_URLSAFE_TO_STANDARD)
    raw += b"=" * (-len(raw) % 4)
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as exc:
        # Left to get here: '=' inside the data, e.g. two padded payloads glued together.
        raise InvalidBase64(f"invalid base64: {exc}") from exc


def _strip_data_url(text: str) -> str:
    window = text[: _DATA_URL_HEADER_MAX + 64]
    head = window.lstrip()
    if head[:5].lower() != "data:":
        return text
    start = len(window) - len(head)
    comma = text.find(",", start, start + _DATA_URL_HEADER_MAX)
    if comma < 0:
        raise InvalidBase64("data URL has no ',' between its header and its data")
    params = [p.strip().lower() for p in text[start + 5 : comma].split(";")]
    # The declared media type is ignored on purpose: the format is sniffed from the bytes.
    if "base64" not in params[1:]:
        raise InvalidBase64("data URL is not base64-encoded (';base64' missing)")
    return text[comma + 1 :]


# ------------------------------------------------------------------------------------------- decoding


def load_image(data: bytes, limits: ImageLimits = DEFAULT_LIMITS) -> Image.Image:
    """Bytes -> a fully decoded, upright, opaque RGB image, or an `ImageError`."""
    if len(data) > limits.max_bytes:
        raise ImageTooLarge(
            f"image is {len(data)} bytes; at most {limits.max_bytes} are accepted",
            max_bytes=limits.max_bytes,
            got=len(data),
        )
    if not data:
        raise UnsupportedImage("image is empty", accepted=list(limits.allowed_formats))
    allowed = limits.allowed_formats
    try:
        # Only the allowed plugins parse the data; whatever the client declared is never consulted.
        img = Image.open(io.BytesIO(data), formats=allowed)
    except UnidentifiedImageError:
        raise _unidentified(data, allowed) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own guard (2 x MAX_IMAGE_PIXELS) fires inside open(), before our check can run;
        # the warning only arrives here as an exception under `-W error`, but must not become a 500.
        raise ImageDimensions(
            f"image declares too many pixels; at most {limits.max_pixels} are accepted",
            max_pixels=limits.max_pixels,
            reason=str(exc),
        ) from exc
    except Exception as exc:
        raise CorruptImage(
            f"image header cannot be read: {_reason(exc)}", format=_sniff_format(data[:16])
        ) from exc
    with img:
        fmt = _FORMAT_ALIASES.get(img.format or "", img.format or "")
        if fmt not in allowed:  # open() honours `formats`; this keeps the invariant local
            raise UnsupportedImage(
                f"{fmt or 'unknown'} images are not accepted", format=fmt, accepted=list(allowed)
            )
        # open() is lazy: the size comes from the header, nothing has been decompressed yet.
        _check_dimensions(img.size, limits)
        try:
            img.load()
        except MemoryError:
            raise
        except Exception as exc:
            # Never LOAD_TRUNCATED_IMAGES: a half-grey picture would embed as garbage without a word.
            raise CorruptImage(f"image data is truncated or corrupt: {_reason(exc)}", format=fmt) from exc
        orientation = _orientation(img)
        rgb = _to_rgb(img)
    if orientation is not None:
        rgb = rgb.transpose(orientation)
    # The pixels are now authoritative: stale EXIF orientation would invite a second rotation.
    rgb.info.clear()
    return rgb


def read_image_file(path: str | os.PathLike[str], limits: ImageLimits = DEFAULT_LIMITS) -> Image.Image:
    """`load_image` for local files (CLI ingest). I/O errors (missing file...) propagate as OSError."""
    size = os.stat(path).st_size
    if size > limits.max_bytes:
        raise ImageTooLarge(
            f"{os.fspath(path)} is {size} bytes; at most {limits.max_bytes} are accepted",
            max_bytes=limits.max_bytes,
            got=size,
        )
    with open(path, "rb") as handle:
        # One byte more than allowed, in case the file grew since stat().
        data = handle.read(limits.max_bytes + 1)
    return load_image(data, limits)


def _check_dimensions(size: tuple[int, int], limits: ImageLimits) -> None:
    width, height = size
    common = {"width": width, "height": height}
    if width < 1 or height < 1:
        raise ImageDimensions(f"image is {width}x{height}", **common)
    if width * height > limits.max_pixels:
        raise ImageDimensions(
            f"image is {width}x{height} = {width * height} pixels; at most {limits.max_pixels} are accepted",
            max_pixels=limits.max_pixels,
            pixels=width * height,
            **common,
        )
    if min(width, height) < limits.min_side:
        raise ImageDimensions(
            f"image is {width}x{height}; both sides must be at least {limits.min_side} pixels",
            min_side=limits.min_side,
            **common,
        )
    ratio = max(width, height) / min(width, height)
    if ratio > limits.max_aspect_ratio:
        raise ImageDimensions(
            f"image is {width}x{height}; aspect ratio {ratio:.1f} exceeds {limits.max_aspect_ratio:g}",
            max_aspect_ratio=limits.max_aspect_ratio,
            aspect_ratio=round(ratio, 3),
            **common,
        )


def _unidentified(data: bytes, allowed: tuple[str, ...]) -> ImageError:
    sniffed = _sniff_format(data[:16])
    if sniffed in allowed:
        # The magic bytes say PNG/JPEG/WEBP but the plugin rejected the header: damaged, not foreign.
        return CorruptImage(f"data starts like a {sniffed} file but its header is damaged", format=sniffed)
    if sniffed is not None:
        return UnsupportedImage(
            f"{sniffed} images are not accepted; send one of {', '.join(allowed)}",
            format=sniffed,
            accepted=list(allowed),
        )
    return UnsupportedImage(
        f"data is not an image in a recognised format; send one of {', '.join(allowed)}",
        accepted=list(allowed),
    )


def _sniff_format(prefix: bytes) -> str | None:
    """Name the format from magic bytes only: plugins' accept() checks, no foreign parser runs."""
    Image.init()
    for name in Image.ID:
        _, accept = Image.OPEN[name]
        if accept is None:  # formats without a signature would claim any data
            continue
        try:
            matched = accept(prefix)
        except Exception:
            continue
        if matched and not isinstance(matched, str):
            return _FORMAT_ALIASES.get(name, name)
    return None


def _orientation(img: Image.Image) -> Image.Transpose | None:
    try:
        value = img.getexif().get(ExifTags.Base.Orientation)
    except Exception:
        # Broken metadata is common in the wild; the pixels are still good, so keep them as stored.
        return None
    return _ORIENTATION.get(value) if isinstance(value, int) else None


# Rows converted at a time. Conversions are per pixel, so strips give the same pixels as one pass, and
# the temporaries stay a few MB: whole-image RGBA compositing or 16-bit grey arithmetic cost 5-10 bytes
# per pixel each, which at the pixel budget made a 100 KB PNG cost over 1 GB (found by the decoder fuzz).
_STRIP_ROWS = 256


def _to_rgb(img: Image.Image) -> Image.Image:
    """Always a new image: transparency composited on white, as CLIPImageProcessor's convert_to_rgb."""
    try:
        if img.height <= _STRIP_ROWS:
            return _strip_to_rgb(img)
        rgb = Image.new("RGB", img.size)
        for top in range(0, img.height, _STRIP_ROWS):
            strip = img.crop((0, top, img.width, min(img.height, top + _STRIP_ROWS)))
            rgb.paste(_strip_to_rgb(strip), (0, top))
        return rgb
    except MemoryError:
        raise
    except Exception as exc:
        raise UnsupportedImage(
            f"pixel mode {img.mode} cannot be converted to RGB: {_reason(exc)}", mode=img.mode
        ) from exc


def _strip_to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in _WIDE_GREY_MODES:
        img = _wide_grey_to_8bit(img)
    if "A" in img.getbands() or img.info.get("transparency") is not None:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def _wide_grey_to_8bit(img: Image.Image) -> Image.Image:
    values = np.asarray(img).astype(np.int64)
    grey = Image.fromarray(np.clip((values + 128) // 257, 0, 255).astype(np.uint8), "L")
    transparent = img.info.get("transparency")
    if isinstance(transparent, int):
        alpha = np.where(values == transparent, 0, 255).astype(np.uint8)
        grey = Image.merge("LA", (grey, Image.fromarray(alpha, "L")))
    return grey


def _reason(exc: BaseException) -> str:
    # Pillow's messages are short and describe the data; cap them so a hostile file cannot fill a log.
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


# -------------------------------------------------------------------------------------- preprocessing


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
    rgb = image if image.mode == "RGB" else _to_rgb(image)
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
