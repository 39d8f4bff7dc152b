"""check_image in-process: the stored copy holds the upload's pixels for the worker (exactly, unless the upload was a
JPEG); a bomb is a local error."""
from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from PIL import Image

from bad_corpus import CORPUS
from image_factory import encode, photo_jpeg, shape_png
from services.config import ServiceSettings
from services.errors import InputError
from services.input_checks import check_image


def _palette_with_transparency() -> bytes:
    image = Image.new("P", (20, 10))
    image.putpalette([0, 0, 0, 255, 0, 0] * 128)
    return encode(image, "PNG", transparency=0)


UPLOADS = {
    "shape PNG": lambda: shape_png(4),
    "photo JPEG": lambda: photo_jpeg("chelsea"),
    "RGBA PNG": lambda: encode(Image.new("RGBA", (20, 10), (200, 10, 10, 100)), "PNG"),
    "palette PNG with a transparent colour": _palette_with_transparency,
    "LA PNG": lambda: encode(Image.new("LA", (20, 10), (100, 50)), "PNG"),
    "bilevel TIFF": lambda: encode(Image.new("1", (20, 10), 1), "TIFF"),
    "RGBA WebP": lambda: encode(Image.new("RGBA", (20, 10), (1, 2, 3, 4)), "WEBP", lossless=True),
    "32-bit float TIFF": lambda: encode(Image.linear_gradient("L").convert("F"), "TIFF"),
    **{name: (lambda name=name: (CORPUS / name).read_bytes())
       for name in ("cmyk.jpg", "gray16.png", "rgb48.png", "animated.gif", "two-pages.tiff", "exif-rotated.jpg",
                    "polyglot-jpeg-zip.jpg")},
}


JPEG_UPLOADS = ("photo JPEG", "cmyk.jpg", "exif-rotated.jpg", "polyglot-jpeg-zip.jpg")


@pytest.mark.parametrize("name", [name for name in UPLOADS if name not in JPEG_UPLOADS])
def test_the_model_sees_the_same_pixels_in_the_stored_copy_of_a_lossless_upload(name):
    from multimodal import decode_image

    upload = UPLOADS[name]()
    stored = check_image(upload, ServiceSettings())
    assert stored.format == "PNG"
    assert Image.open(io.BytesIO(stored.data)).mode in ("RGB", "RGBA", "L")
    assert np.array_equal(np.asarray(decode_image(upload)), np.asarray(decode_image(stored.data)))


@pytest.mark.parametrize("name", JPEG_UPLOADS)
def test_a_jpeg_upload_is_stored_as_a_jpeg_within_two_levels_of_its_pixels(name):
    from multimodal import decode_image

    upload = UPLOADS[name]()
    stored = check_image(upload, ServiceSettings())
    image = Image.open(io.BytesIO(stored.data))
    assert (stored.format, image.format) == ("JPEG", "JPEG")
    assert image.mode in ("RGB", "L") and not image.info.get("exif") and not image.info.get("icc_profile")
    want, got = np.asarray(decode_image(upload), dtype=float), np.asarray(decode_image(stored.data), dtype=float)
    assert want.shape == got.shape  # upright and the same size
    assert np.abs(want - got).mean() < 2.0  # about 0.5 on a photo; 1.7 on these small sharp-edged images


def test_a_bomb_is_an_error_without_touching_the_process_warning_filters():
    wide = (CORPUS / "wide.png").read_bytes()  # 48 M pixels: between the cap and twice the cap (Pillow's own error)
    before = list(warnings.filters)
    with pytest.raises(InputError, match="decompression bomb"):
        check_image(wide, ServiceSettings())
    assert warnings.filters == before
    settings = ServiceSettings(max_image_pixels=50_000_000)
    assert check_image(wide, settings).width == settings.stored_image_max_side  # decoded in full, then bounded


def test_a_large_photo_is_stored_bounded_with_its_aspect_kept():
    settings = ServiceSettings(stored_image_max_side=512)
    rng = np.random.default_rng(0)
    upload = encode(Image.fromarray(rng.integers(0, 255, (1200, 1800, 3), dtype=np.uint8)), "JPEG")
    facts = check_image(upload, settings)
    stored = Image.open(io.BytesIO(facts.data))
    assert (facts.width, facts.height) == stored.size == (512, 341)
    small = check_image(shape_png(4), settings)  # within the bound: stored at its own size
    assert Image.open(io.BytesIO(small.data)).size == Image.open(io.BytesIO(shape_png(4))).size
