"""Bytes -> an upright RGB picture: Pillow decoding with the checks of `checks` applied first.

`load_image` sniffs the format from the bytes, checks the header dimensions before Pillow decodes a
pixel, and turns every decoder failure into an `ImageError`; EXIF orientation is applied and alpha,
palettes and 16-bit greys become 8-bit RGB the way CLIP's processor expects.
"""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

from service.images.checks import (
    DEFAULT_LIMITS,
    FORMAT_ALIASES,
    CorruptImage,
    ImageDimensions,
    ImageLimits,
    ImageTooLarge,
    UnsupportedImage,
    check_dimensions,
    reason,
    sniff_format,
    unidentified,
)

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
        raise unidentified(data, allowed) from None
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
            f"image header cannot be read: {reason(exc)}", format=sniff_format(data[:16])
        ) from exc
    with img:
        fmt = FORMAT_ALIASES.get(img.format or "", img.format or "")
        if fmt not in allowed:  # open() honours `formats`; this keeps the invariant local
            raise UnsupportedImage(
                f"{fmt or 'unknown'} images are not accepted", format=fmt, accepted=list(allowed)
            )
        # open() is lazy: the size comes from the header, nothing has been decompressed yet.
        check_dimensions(img.size, limits)
        try:
            img.load()
        except MemoryError:
            raise
        except Exception as exc:
            # Never LOAD_TRUNCATED_IMAGES: a half-grey picture would embed as garbage without a word.
            raise CorruptImage(f"image data is truncated or corrupt: {reason(exc)}", format=fmt) from exc
        orientation = _orientation(img)
        rgb = to_rgb(img)
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


def to_rgb(img: Image.Image) -> Image.Image:
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
            f"pixel mode {img.mode} cannot be converted to RGB: {reason(exc)}", mode=img.mode
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
