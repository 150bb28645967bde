"""Client pictures -> encoder tensors: decoding limits, hostile inputs, and parity with CLIPImageProcessor."""

from __future__ import annotations

import base64
import functools
import io
import struct
import time
import warnings
import zlib
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps

from service.domain.manifest import ImageSpec
from service.images import checks as image_checks
from service.images import decoding as image_decoding
from service.images.checks import (
    CorruptImage,
    ImageDimensions,
    ImageError,
    ImageLimits,
    ImageTooLarge,
    InvalidBase64,
    UnsupportedImage,
    decode_base64_image,
)
from service.images.decoding import load_image, read_image_file
from service.images.preprocessing import image_from_base64, preprocess, preprocess_batch
from service.platform.errors import ServiceError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_224 = ImageSpec(height=224, width=224, mean=CLIP_MEAN, std=CLIP_STD)
ORIENTATION = 0x0112
RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)
# Observed: 0.0 for every case (same PIL resize on uint8, same float64->float32 arithmetic).
PARITY_TOLERANCE = 1e-6


# ------------------------------------------------------------------------------------------- builders


def noise(width: int, height: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    """Noise over a gradient: noise is the worst case for resampling, the gradient keeps structure."""
    rng = np.random.default_rng(seed)
    channels = len(mode)
    ramp = np.linspace(0, 160, width, dtype=np.float64)[None, :, None]
    pixels = np.clip(ramp + rng.integers(0, 96, (height, width, channels)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, mode)


def encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def quadrants(width: int = 64, height: int = 32) -> Image.Image:
    """Asymmetric under every flip and rotation: red top-left, green top-right, blue bottom."""
    image = Image.new("RGB", (width, height), BLUE)
    image.paste(RED, (0, 0, width // 2, height // 2))
    image.paste(GREEN, (width // 2, 0, width, height // 2))
    return image


def with_orientation(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    return exif


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


@functools.cache
def png_bomb(width: int, height: int) -> bytes:
    """A complete, valid 1-bit PNG of zeros: a few KB that would decode to width*height bytes.

    Written chunk by chunk (Pillow would allocate the full image to save it), streamed through zlib.
    """
    row = bytes(1 + (width + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    rows_per_block = 1000
    block = row * rows_per_block
    parts = [compressor.compress(block) for _ in range(height // rows_per_block)]
    parts.append(compressor.compress(row * (height % rows_per_block)))
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, greyscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", b"".join(parts))
        + png_chunk(b"IEND", b"")
    )


def assert_error(exc: ImageError, cls: type[ImageError], status: int, code: str) -> None:
    assert type(exc) is cls
    assert (exc.status_code, exc.code) == (status, code)
    # The API's ServiceError handler turns these into the error envelope; plain callers see ValueError.
    assert isinstance(exc, ServiceError)
    assert isinstance(exc, ValueError)
    assert isinstance(exc.message, str) and exc.message and "Traceback" not in exc.message
    assert isinstance(exc.details, dict)
    msgspec.json.encode(exc.details)  # the envelope must be able to serialise them


# ---------------------------------------------------------------------- parity with CLIPImageProcessor


def reference_processor(**kwargs: Any) -> Any:
    """transformers' PIL-backed CLIP processor.

    In transformers 5 `CLIPImageProcessor` is the torchvision backend (it falls back to the PIL one,
    with a warning, when torchvision is missing); `CLIPImageProcessorPil` is the pipeline the
    checkpoints were trained with and the one this module reproduces. transformers 4 only has the PIL one.
    """
    transformers = pytest.importorskip("transformers")
    cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    return cls(**kwargs)


PIL_RESAMPLE = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3}


@pytest.mark.parametrize(
    "size",
    [(640, 480), (480, 640), (300, 300), (225, 224), (97, 131), (1920, 1080), (1001, 333)],
    ids=lambda s: f"{s[0]}x{s[1]}",
)
@pytest.mark.parametrize("resample", ["bicubic", "bilinear", "lanczos", "nearest"])
def test_preprocess_matches_clip_image_processor(size: tuple[int, int], resample: str) -> None:
    image = noise(*size, seed=size[0])
    processor = reference_processor(
        size={"shortest_edge": 224},
        crop_size={"height": 224, "width": 224},
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
        resample=PIL_RESAMPLE[resample],
    )
    expected = processor(images=image, return_tensors="np")["pixel_values"][0]
    spec = ImageSpec(height=224, width=224, mean=CLIP_MEAN, std=CLIP_STD, resample=resample)  # type: ignore[arg-type]
    got = preprocess(image, spec)
    assert got.shape == expected.shape == (3, 224, 224)
    assert got.dtype == np.float32
    assert np.abs(got - expected).max() <= PARITY_TOLERANCE


@pytest.mark.parametrize("crop", [(160, 224), (224, 192), (336, 336)])
def test_non_square_crops_resize_the_short_side_to_the_larger_crop_side(crop: tuple[int, int]) -> None:
    height, width = crop
    processor = reference_processor(
        size={"shortest_edge": max(crop)},
        crop_size={"height": height, "width": width},
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
    )
    spec = ImageSpec(height=height, width=width, mean=CLIP_MEAN, std=CLIP_STD)
    for image in (noise(500, 400, seed=1), noise(400, 700, seed=2)):
        expected = processor(images=image, return_tensors="np")["pixel_values"][0]
        assert np.abs(preprocess(image, spec) - expected).max() <= PARITY_TOLERANCE


def test_squash_matches_a_plain_resize_without_crop() -> None:
    processor = reference_processor(
        size={"height": 200, "width": 180}, do_center_crop=False, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    spec = ImageSpec(height=200, width=180, mean=(0.5,) * 3, std=(0.5,) * 3, resize="squash")
    image = noise(640, 360, seed=3)
    expected = processor(images=image, return_tensors="np")["pixel_values"][0]
    assert np.abs(preprocess(image, spec) - expected).max() <= PARITY_TOLERANCE


def test_rgba_input_matches_the_processor_which_also_composites_on_white() -> None:
    image = noise(300, 260, seed=4, mode="RGBA")
    expected = reference_processor()(images=image, return_tensors="np")["pixel_values"][0]
    assert np.abs(preprocess(image, CLIP_224) - expected).max() <= PARITY_TOLERANCE


def test_whole_pipeline_from_a_base64_jpeg_matches_the_processor_on_the_decoded_file() -> None:
    data = encode(noise(800, 600, seed=5), "JPEG", quality=90)
    expected = reference_processor()(images=Image.open(io.BytesIO(data)), return_tensors="np")["pixel_values"]
    got = image_from_base64("data:image/jpeg;base64," + b64(data), CLIP_224)
    assert np.abs(got - expected[0]).max() <= PARITY_TOLERANCE


# ----------------------------------------------------------------------------------- preprocess basics


def test_normalisation_uses_the_spec_mean_and_std_per_channel() -> None:
    spec = ImageSpec(height=16, width=16, mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 2.0))
    white = preprocess(Image.new("RGB", (40, 30), WHITE), spec)
    black = preprocess(Image.new("RGB", (40, 30), (0, 0, 0)), spec)
    np.testing.assert_allclose(white[:, 0, 0], [1.0, 3.0, 0.5], rtol=1e-6)
    np.testing.assert_allclose(black[:, 0, 0], [-1.0, -1.0, 0.0], atol=1e-6)
    assert (white == white[:, :1, :1]).all()


def test_center_crop_keeps_the_middle_of_the_long_side() -> None:
    # 3 vertical bands; resizing 96x32 -> 48x16 and cropping 16x16 keeps only the middle band.
    image = Image.new("RGB", (96, 32), RED)
    image.paste(GREEN, (32, 0, 64, 32))
    image.paste(BLUE, (64, 0, 96, 32))
    spec = ImageSpec(height=16, width=16, mean=(0.0,) * 3, std=(1.0,) * 3, resample="nearest")
    out = preprocess(image, spec)
    assert np.allclose(out[:, 8, 8], [0, 1, 0]) and np.allclose(out[1], 1.0)


def test_batch_equals_stacked_singles_and_accepts_any_mode() -> None:
    pictures = [
        noise(120, 90, seed=6),
        noise(50, 70, seed=7).convert("L"),
        noise(64, 64, seed=8, mode="RGBA"),
    ]
    spec = ImageSpec(height=32, width=48, mean=CLIP_MEAN, std=CLIP_STD)
    batch = preprocess_batch(pictures, spec)
    assert batch.shape == (3, 3, 32, 48) and batch.dtype == np.float32
    for index, picture in enumerate(pictures):
        np.testing.assert_array_equal(batch[index], preprocess(picture, spec))
    assert preprocess_batch([], spec).shape == (0, 3, 32, 48)
    with pytest.raises(ImageDimensions):
        preprocess(Image.new("RGB", (0, 0)), spec)


@pytest.mark.parametrize(
    "changes",
    [{"height": 0}, {"std": (0.5, 0.0, 0.5)}, {"mean": (0.5, 0.5)}, {"resample": "cubic"}, {"resize": "pad"}],
)
def test_a_bad_spec_is_refused_at_construction_and_at_manifest_decode(changes: dict[str, Any]) -> None:
    fields = {"height": 8, "width": 8, "mean": (0.5,) * 3, "std": (0.5,) * 3, **changes}
    with pytest.raises(ValueError, match=r"must|need|unknown"):
        ImageSpec(**fields)
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(msgspec.json.encode(fields), type=ImageSpec)


def test_spec_round_trips_through_the_manifest_encoding() -> None:
    spec = ImageSpec(height=256, width=224, mean=CLIP_MEAN, std=CLIP_STD, resample="bilinear")
    assert msgspec.json.decode(msgspec.json.encode(spec), type=ImageSpec) == spec


# -------------------------------------------------------------------------------- orientation, alpha


def test_exif_orientation_6_comes_out_rotated_like_an_explicit_rotation() -> None:
    upright = quadrants(64, 32)
    data = encode(upright, "JPEG", quality=95, exif=with_orientation(6))
    loaded = load_image(data)
    # Orientation 6: the camera was turned; the viewer rotates 90° clockwise.
    assert loaded.size == (32, 64)
    stored = Image.open(io.BytesIO(data)).convert("RGB")
    np.testing.assert_array_equal(
        np.asarray(loaded), np.asarray(stored.transpose(Image.Transpose.ROTATE_270))
    )
    rotated = np.asarray(upright.rotate(-90, expand=True), dtype=np.int16)
    assert np.abs(np.asarray(loaded, dtype=np.int16) - rotated).mean() < 4  # JPEG noise only
    assert loaded.getpixel((24, 4)) == pytest.approx(RED, abs=12)  # red (top-left) is now top-right
    assert loaded.getexif().get(ORIENTATION) is None  # nobody downstream can rotate it twice


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_matches_pillows_exif_transpose(orientation: int) -> None:
    data = encode(quadrants(40, 24), "PNG", exif=with_orientation(orientation))
    expected = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    np.testing.assert_array_equal(np.asarray(load_image(data)), np.asarray(expected))


def test_orientation_survives_alpha_flattening() -> None:
    # Compositing onto white builds a new image without metadata: the orientation must be read first.
    picture = quadrants(40, 24).convert("RGBA")
    data = encode(picture, "PNG", exif=with_orientation(8))
    loaded = load_image(data)
    assert loaded.size == (24, 40)
    np.testing.assert_array_equal(np.asarray(loaded), np.asarray(quadrants(40, 24).rotate(90, expand=True)))


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_broken_exif_keeps_the_pixels_as_stored() -> None:
    data = encode(quadrants(), "JPEG", exif=b"Exif\x00\x00MM\x00*\xff\xff\xff\xff garbage")
    assert load_image(data).size == (64, 32)


def test_transparent_png_becomes_white_where_transparent() -> None:
    rgba = np.zeros((20, 40, 4), np.uint8)
    rgba[:, :20] = (255, 0, 0, 0)  # fully transparent red: must not show red
    rgba[:, 20:] = (0, 0, 255, 255)  # opaque blue
    rgba[:5, 20:] = (0, 0, 0, 128)  # half-transparent black over white: mid grey
    loaded = np.asarray(load_image(encode(Image.fromarray(rgba, "RGBA"), "PNG")))
    assert (loaded[:, :20] == WHITE).all()
    assert (loaded[5:, 20:] == BLUE).all()
    assert np.abs(loaded[:5, 20:].astype(int) - 127).max() <= 1


@pytest.mark.parametrize("mode", ["LA", "P", "RGBA-webp"])
def test_other_transparent_modes_are_flattened_on_white(mode: str) -> None:
    if mode == "LA":
        image = Image.new("LA", (16, 16), (0, 0))
        data = encode(image, "PNG")
    elif mode == "P":
        image = Image.new("P", (16, 16), 3)
        image.putpalette([0, 0, 0] * 256)
        data = encode(image, "PNG", transparency=3)
    else:
        data = encode(Image.new("RGBA", (16, 16), (0, 0, 0, 0)), "WEBP", lossless=True)
    loaded = load_image(data)
    assert loaded.mode == "RGB"
    assert (np.asarray(loaded) == 255).all()


def test_sixteen_bit_greyscale_is_scaled_not_clipped() -> None:
    # Pillow's own convert("RGB") clips I;16 to 255, which would turn every 16-bit scan white.
    grey = Image.fromarray(np.full((10, 10), 128 * 257, np.uint16))
    data = encode(grey, "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    assert (np.asarray(load_image(data)) == 128).all()


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "I;16", "CMYK", "L"])
def test_tall_pictures_convert_strip_by_strip_to_the_same_pixels(mode: str) -> None:
    """Conversion runs in strips of rows to bound memory; the pixels equal one whole-image pass."""
    rng = np.random.default_rng(7)
    height, width = 1000, 37  # several strips and a partial last one
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65536, (height, width), dtype=np.uint16))
    elif mode == "P":
        image = Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8), "P")
        image.putpalette(rng.integers(0, 256, 768, dtype=np.uint8).tolist())
        image.info["transparency"] = 5
    else:
        bands = len(Image.new(mode, (1, 1)).getbands())
        image = Image.fromarray(rng.integers(0, 256, (height, width, bands), dtype=np.uint8).squeeze(), mode)
    whole = image_decoding._strip_to_rgb(image)
    stripped = image_decoding.to_rgb(image)
    assert stripped.mode == whole.mode == "RGB" and stripped.size == whole.size
    assert np.array_equal(np.asarray(stripped), np.asarray(whole))


def test_webp_and_progressive_jpeg_load() -> None:
    picture = noise(60, 40, seed=9)
    for data in (encode(picture, "WEBP", quality=90), encode(picture, "JPEG", progressive=True)):
        loaded = load_image(data)
        assert (loaded.mode, loaded.size) == ("RGB", (60, 40))


# ------------------------------------------------------------------------------------------- base64


@functools.cache
def sample_png() -> bytes:
    return encode(noise(48, 40, seed=10), "PNG")


def test_raw_base64_and_data_urls_decode_to_the_same_bytes() -> None:
    data = sample_png()
    text = b64(data)
    assert "+" in text or "/" in text  # makes the urlsafe case below meaningful
    urlsafe = base64.urlsafe_b64encode(data).decode().rstrip("=")
    variants = [
        text,
        "data:image/png;base64," + text,
        "DATA:IMAGE/PNG;BASE64," + text,
        "data:;base64," + text,
        "data:image/png;name=cover.png;base64," + text,
        "data:text/plain;base64," + text,  # the declared type is ignored: the bytes are sniffed
        urlsafe,
        "data:image/png;base64," + urlsafe,
        text.rstrip("="),
        base64.encodebytes(data).decode(),  # MIME: newline every 76 characters
        "\r\n".join(text[i : i + 64] for i in range(0, len(text), 64)),  # PEM with CRLF
        "  \n\t" + " ".join(text[i : i + 10] for i in range(0, len(text), 10)) + " \n",
        "  data:image/png;base64,\n" + base64.encodebytes(data).decode(),
    ]
    for variant in variants:
        assert decode_base64_image(variant) == data
    assert load_image(decode_base64_image(variants[-1])).size == (48, 40)


@given(
    payload=st.binary(min_size=1, max_size=300),
    urlsafe=st.booleans(),
    strip_padding=st.booleans(),
    wrap=st.integers(min_value=0, max_value=80),
)
@settings(max_examples=200, derandomize=True, database=None)
def test_any_bytes_round_trip_through_every_encoding_variant(
    payload: bytes, urlsafe: bool, strip_padding: bool, wrap: int
) -> None:
    text = (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(payload).decode()
    if strip_padding:
        text = text.rstrip("=")
    if wrap:
        text = "\n".join(text[i : i + wrap] for i in range(0, len(text), wrap))
    assert decode_base64_image(text) == payload


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   \n\t ",
        "====",
        "data:image/png;base64,",
        "data:image/png;base64,   ",
        "iVBORw0KGgo$AAAA",
        "iVBORw0K GgoA*AAA",
        "iVBORw0KGgoÿAAA",
        "QUJD=QUJD",  # padding in the middle: two payloads glued together
        "QUJDQ",  # 4k+1 characters: cut mid-quantum
        "data:image/png," + "iVBORw0KGgo",  # data URL that is not base64
        "data:image/png;base64" + "iVBORw0KGgo" * 80,  # no comma within the header allowance
    ],
)
def test_invalid_base64_is_refused_with_422(text: str) -> None:
    with pytest.raises(InvalidBase64) as caught:
        decode_base64_image(text)
    assert_error(caught.value, InvalidBase64, 422, "invalid_base64")


def test_non_string_input_is_invalid_base64() -> None:
    with pytest.raises(InvalidBase64):
        decode_base64_image(b"iVBORw0KGgo=")  # type: ignore[arg-type]


def test_eleven_megabytes_of_base64_are_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def must_not_decode(*_: Any, **__: Any) -> bytes:
        raise AssertionError("the text was decoded")

    monkeypatch.setattr(image_checks.base64, "b64decode", must_not_decode)
    text = "A" * (4 * -(-11 * 1024 * 1024 // 3))  # base64 of 11 MiB of zeros, 15.4 M characters
    with pytest.raises(ImageTooLarge) as caught:
        decode_base64_image("data:image/png;base64," + text)
    assert_error(caught.value, ImageTooLarge, 413, "image_too_large")
    assert caught.value.details["max_bytes"] == 10 * 1024 * 1024


def test_decoded_size_bound_is_exact_and_checked_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    limits = ImageLimits(max_bytes=1000)
    for size in (998, 999, 1000):  # all three padding cases at the limit
        payload = bytes(range(256)) * 4
        text = base64.encodebytes(payload[:size]).decode()
        assert decode_base64_image(text, limits) == payload[:size]
        assert decode_base64_image(text.replace("=", ""), limits) == payload[:size]
    monkeypatch.setattr(image_checks.base64, "b64decode", lambda *_, **__: pytest.fail("decoded"))
    for size in (1001, 1002, 1003):
        # Wrapped text under the coarse character bound: refused from the payload length.
        with pytest.raises(ImageTooLarge) as caught:
            decode_base64_image(base64.encodebytes(bytes(size)).decode(), limits)
        assert caught.value.details == {"max_bytes": 1000, "got": size}


def test_image_from_base64_runs_the_whole_chain() -> None:
    out = image_from_base64(b64(sample_png()), CLIP_224)
    assert out.shape == (3, 224, 224) and out.dtype == np.float32 and np.isfinite(out).all()
    with pytest.raises(UnsupportedImage):
        image_from_base64(b64(b"just some text, not a picture"), CLIP_224)


# ------------------------------------------------------------------------------------ hostile images


def test_truncated_jpeg_is_corrupt() -> None:
    data = encode(noise(320, 240, seed=11), "JPEG", quality=90)
    with pytest.raises(CorruptImage) as caught:
        load_image(data[: len(data) // 2])
    assert_error(caught.value, CorruptImage, 422, "corrupt_image")


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "JPEG"])
@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_truncated_data_of_every_allowed_format_is_corrupt(fmt: str, cut: float) -> None:
    data = encode(noise(320, 240, seed=12), fmt)
    with pytest.raises(CorruptImage):
        load_image(data[: int(len(data) * cut)])


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_a_damaged_header_of_an_allowed_format_is_corrupt_not_unsupported(fmt: str) -> None:
    data = encode(noise(32, 32, seed=13), fmt)
    with pytest.raises(CorruptImage) as caught:
        load_image(data[:20])
    assert caught.value.details.get("format") == fmt


def test_a_one_by_hundred_thousand_strip_is_refused() -> None:
    strip = encode(Image.new("L", (1, 100_000)), "PNG")
    with pytest.raises(ImageDimensions) as caught:
        load_image(strip)
    assert_error(caught.value, ImageDimensions, 422, "bad_image_dimensions")
    assert (caught.value.details["width"], caught.value.details["height"]) == (1, 100_000)


def test_aspect_ratio_and_min_side_limits() -> None:
    assert load_image(encode(Image.new("RGB", (400, 20)), "PNG")).size == (400, 20)  # exactly 20:1
    with pytest.raises(ImageDimensions, match="aspect ratio"):
        load_image(encode(Image.new("RGB", (420, 20)), "PNG"))
    with pytest.raises(ImageDimensions, match="at least 8"):
        load_image(encode(Image.new("RGB", (7, 7)), "PNG"))
    assert load_image(encode(Image.new("RGB", (7, 7)), "PNG"), ImageLimits(min_side=4)).size == (7, 7)


@pytest.mark.parametrize("side", [8000, 30000])
def test_decompression_bombs_are_refused_from_the_header(side: int) -> None:
    # 8000² (64 M pixels) passes Pillow's guard and is stopped by max_pixels; 30000² (900 M) trips
    # Pillow's DecompressionBombError inside open(). Either way nothing is decompressed.
    bomb = png_bomb(side, side)
    assert len(bomb) < 150_000
    before = Image.MAX_IMAGE_PIXELS
    started = time.perf_counter()
    with pytest.raises(ImageDimensions) as caught:
        load_image(bomb)
    assert time.perf_counter() - started < 0.5  # decoding 900 M pixels would take seconds and ~1 GB
    assert_error(caught.value, ImageDimensions, 422, "bad_image_dimensions")
    assert before == Image.MAX_IMAGE_PIXELS  # no global tweaking


def test_pillow_bomb_warning_is_refused_whether_or_not_warnings_are_errors() -> None:
    bomb = png_bomb(10_000, 10_000)  # 100 M: above Pillow's warning threshold, below its error one
    with pytest.warns(Image.DecompressionBombWarning), pytest.raises(ImageDimensions):
        load_image(bomb)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageDimensions):
            load_image(bomb)


def test_max_pixels_is_configurable() -> None:
    data = encode(Image.new("RGB", (100, 100)), "PNG")
    with pytest.raises(ImageDimensions):
        load_image(data, ImageLimits(max_pixels=9_999))
    assert load_image(data, ImageLimits(max_pixels=10_000)).size == (100, 100)


@pytest.mark.parametrize(
    "data",
    [b"hello, this is a text file and not a picture\n", b"%PDF-1.7\n", b"\x00" * 64, b"x"],
    ids=["text", "pdf", "zeros", "one-byte"],
)
def test_non_images_are_unsupported(data: bytes) -> None:
    with pytest.raises(UnsupportedImage) as caught:
        load_image(data)
    assert_error(caught.value, UnsupportedImage, 415, "unsupported_image_format")


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF", "ICO"])
def test_formats_outside_the_allowed_set_are_unsupported(fmt: str) -> None:
    data = encode(noise(32, 32, seed=14), fmt)
    with pytest.raises(UnsupportedImage) as caught:
        load_image(data)
    assert_error(caught.value, UnsupportedImage, 415, "unsupported_image_format")
    assert caught.value.details["format"] == fmt
    assert caught.value.details["accepted"] == ["JPEG", "PNG", "WEBP"]


def test_allowed_formats_are_configurable() -> None:
    gif = Image.new("P", (16, 16), 1)
    gif.putpalette([0, 0, 0, 255, 0, 0] + [0, 0, 0] * 254)
    data = encode(gif, "GIF")
    assert np.asarray(load_image(data, ImageLimits(formats=frozenset({"gif"})))).tolist()[0][0] == [255, 0, 0]
    with pytest.raises(UnsupportedImage):
        load_image(encode(noise(16, 16), "PNG"), ImageLimits(formats=frozenset({"JPEG"})))


@pytest.mark.parametrize(
    "changes",
    [{"max_bytes": 0}, {"max_aspect_ratio": 0.5}, {"formats": frozenset()}, {"formats": frozenset({"JPG"})}],
)
def test_bad_limits_are_refused_at_configuration_time(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"must|Pillow cannot"):
        ImageLimits(**changes)


def test_raw_bytes_over_the_limit_are_refused() -> None:
    with pytest.raises(ImageTooLarge) as caught:
        load_image(sample_png(), ImageLimits(max_bytes=100))
    assert caught.value.details == {"max_bytes": 100, "got": len(sample_png())}


def test_empty_bytes_are_not_an_image() -> None:
    with pytest.raises(UnsupportedImage):
        load_image(b"")


def test_read_image_file_applies_the_same_checks(tmp_path: Path) -> None:
    good = tmp_path / "cover.jpg"
    good.write_bytes(encode(quadrants(), "JPEG", exif=with_orientation(6)))
    assert read_image_file(good).size == (32, 64)
    with pytest.raises(ImageTooLarge):
        read_image_file(good, ImageLimits(max_bytes=64))
    text = tmp_path / "notes.png"  # the extension is not trusted either
    text.write_text("not a picture")
    with pytest.raises(UnsupportedImage):
        read_image_file(text)
    with pytest.raises(FileNotFoundError):
        read_image_file(tmp_path / "missing.png")


# --------------------------------------------------------------------------------------------- fuzzing

# Fuzzed headers can declare any size; a small pixel budget keeps a mutated width from costing
# ~100 MB of allocation per example, and the error paths are the same.
FUZZ_LIMITS = ImageLimits(max_pixels=1_000_000)
FUZZ_SPEC = ImageSpec(height=16, width=16, mean=CLIP_MEAN, std=CLIP_STD)


@functools.cache
def fuzz_seeds() -> tuple[bytes, ...]:
    picture = noise(24, 16, seed=15)
    palette = picture.convert("P")
    return (
        encode(picture, "PNG"),
        encode(noise(24, 16, seed=16, mode="RGBA"), "PNG"),
        encode(palette, "PNG", transparency=0),
        encode(picture, "JPEG", quality=80, exif=with_orientation(6)),
        encode(picture, "JPEG", progressive=True),
        encode(picture, "WEBP", quality=80),
        encode(noise(24, 16, seed=17, mode="RGBA"), "WEBP", lossless=True),
    )


@st.composite
def mutated_images(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(fuzz_seeds())))
    edits = draw(st.lists(st.sampled_from(["flip", "truncate", "insert", "delete"]), min_size=1, max_size=4))
    for edit in edits:
        if not data:
            break
        # Half the edits land in the first 64 bytes, where the headers (and the interesting bugs) are.
        where = draw(st.one_of(st.integers(0, min(63, len(data) - 1)), st.integers(0, len(data) - 1)))
        if edit == "flip":
            data[where] ^= draw(st.integers(1, 255))
        elif edit == "truncate":
            del data[where:]
        elif edit == "insert":
            data[where:where] = draw(st.binary(min_size=1, max_size=16))
        else:
            del data[where : where + draw(st.integers(1, 16))]
    return bytes(data)


def only_image_errors(data: bytes) -> None:
    """Anything but an ImageError escaping would be a 500 (or a crash) in the service."""
    try:
        image = load_image(data, FUZZ_LIMITS)
    except ImageError as exc:
        error: ImageError | None = exc
    else:
        error = None
        assert image.mode == "RGB"
        assert np.isfinite(preprocess(image, FUZZ_SPEC)).all()
    if error is not None:
        assert error.status_code in {413, 415, 422}
        msgspec.json.encode(error.details)


@given(st.one_of(mutated_images(), st.binary(max_size=2048)))
@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
def test_fuzzed_bytes_only_ever_raise_image_errors(data: bytes) -> None:
    only_image_errors(data)


@given(st.text(max_size=200))
@settings(max_examples=300, deadline=None, derandomize=True, database=None)
def test_fuzzed_text_only_ever_raises_image_errors(text: str) -> None:
    try:
        decoded = decode_base64_image(text)
    except (InvalidBase64, ImageTooLarge):
        return
    assert decoded
    only_image_errors(decoded)
