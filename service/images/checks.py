"""Client pictures before any pixel is decoded: size limits, base64, format sniffing, the errors.

`decode_base64_image` bounds the size on the *text* before decoding, so an oversized request is refused
without allocating its decoded copy. Every refusal is an `ImageError` (a `ServiceError`), so the API
answers with the error envelope and a 4xx, never a traceback. Pillow is only asked which formats
it knows and whose signature the first bytes carry; no decoder runs here.
"""

from __future__ import annotations

import base64
import binascii
import math
import re

import msgspec
from PIL import Image

from service.platform.errors import ServiceError

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
FORMAT_ALIASES = {"MPO": "JPEG"}

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


class InvalidBase64(ImageError, status_code=422, code="invalid_base64"):
    pass


class ImageTooLarge(ImageError, status_code=413, code="image_too_large"):
    pass


class UnsupportedImage(ImageError, status_code=415, code="unsupported_image_format"):
    pass


class CorruptImage(ImageError, status_code=422, code="corrupt_image"):
    pass


class ImageDimensions(ImageError, status_code=422, code="bad_image_dimensions"):
    pass


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


def check_dimensions(size: tuple[int, int], limits: ImageLimits) -> None:
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


def unidentified(data: bytes, allowed: tuple[str, ...]) -> ImageError:
    sniffed = sniff_format(data[:16])
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


def sniff_format(prefix: bytes) -> str | None:
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
            return FORMAT_ALIASES.get(name, name)
    return None


def reason(exc: BaseException) -> str:
    # Pillow's messages are short and describe the data; cap them so a hostile file cannot fill a log.
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
