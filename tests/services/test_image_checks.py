"""check_image in-process: the stored copy holds the upload's pixels for the worker (exactly, unless the upload was a
JPEG); a bomb is a local error."""
from __future__ import annotations

import io
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image, ImageOps

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


# --- a plain PNG is stored as sent ------------------------------------------------------------------

def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png(width: int, height: int, colour: int, rows: bytes, extra_chunks: bytes = b"", after: bytes = b"",
         depth: int = 8, interlace: int = 0) -> bytes:
    """A PNG written chunk by chunk, so that each test can break exactly one rule."""
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, interlace)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + extra_chunks + _chunk(b"IDAT", rows)
            + _chunk(b"IEND", b"") + after)


def _rows(width: int, height: int, channels: int, filter_type: int = 0) -> bytes:
    rng = np.random.default_rng(width * height)
    pixels = rng.integers(0, 256, (height, width * channels), dtype=np.uint8)
    return b"".join(bytes([filter_type]) + row.tobytes() for row in pixels)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA"])
def test_a_plain_png_is_stored_byte_for_byte_and_reads_as_sent(mode):
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (24, 40, len(mode)), dtype=np.uint8).squeeze(),
                            mode)
    upload = encode(image, "PNG")
    stored = check_image(upload, ServiceSettings())
    assert stored.data == upload and (stored.format, stored.width, stored.height) == ("PNG", 40, 24)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(stored.data))), np.asarray(image))


def test_a_hand_written_plain_png_with_every_filter_type_decodes():
    # Filter types 1-4 on random bytes: valid PNG whatever the bytes, so Pillow must read it as LensQ stored it.
    rows = b"".join(_rows(16, 1, 3, filter_type=k % 5) for k in range(10))
    upload = _png(16, 10, 2, zlib.compress(rows))
    assert check_image(upload, ServiceSettings()).data == upload
    assert Image.open(io.BytesIO(upload)).convert("RGB").size == (16, 10)


def _adam7_rows(width: int, height: int) -> bytes:
    """An RGB image's rows as Adam7 interlacing stores them: seven passes, each a sub-image with filter type 0."""
    pixels = np.random.default_rng(7).integers(0, 256, (height, width, 3), dtype=np.uint8)
    passes = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
    sub_images = [pixels[y0::dy, x0::dx] for x0, y0, dx, dy in passes]
    return b"".join(b"\x00" + row.tobytes() for sub in sub_images if sub.size for row in sub)


PIXELS_RGB = zlib.compress(_rows(8, 4, 3))


@pytest.mark.parametrize("extra", [
    {"extra_chunks": _chunk(b"tEXt", b"Comment\x00hi") + _chunk(b"gAMA", struct.pack(">I", 45455))},
    {"after": b"PK\x03\x04 an archive"},
])
def test_a_png_keeps_its_pixel_chunks_alone_as_sent(extra):
    plain = _png(8, 4, 2, PIXELS_RGB)
    stored = check_image(_png(8, 4, 2, PIXELS_RGB, **extra), ServiceSettings())
    assert stored.data == plain and stored.sha256 == check_image(plain, ServiceSettings()).sha256


REENCODED = {
    "bytes after the zlib stream": _png(8, 4, 2, PIXELS_RGB + b"hidden"),
    "interlaced": _png(8, 4, 2, zlib.compress(_adam7_rows(8, 4)), interlace=1),
    "16-bit gray": (CORPUS / "gray16.png").read_bytes(),
    "a palette": encode(Image.new("P", (8, 4)), "PNG"),
    "a transparent colour": _png(8, 4, 2, PIXELS_RGB, extra_chunks=_chunk(b"tRNS", b"\x00\x01\x00\x02\x00\x03")),
    "an unknown chunk": _png(8, 4, 2, PIXELS_RGB, extra_chunks=_chunk(b"prIv", b"data")),
    "over the side bound": _png(80, 2, 0, zlib.compress(_rows(80, 2, 1))),
}


@pytest.mark.parametrize("name", REENCODED)
def test_a_png_that_is_not_plain_pixels_is_re_encoded(name):
    from multimodal import decode_image

    from services.canonical_image import plain_png_copy

    upload = REENCODED[name]
    stored = check_image(upload, ServiceSettings(stored_image_max_side=64))
    assert plain_png_copy(upload, 64) is None
    chunks = [stored.data[at + 4:at + 8] for at in _chunk_offsets(stored.data)]
    assert set(chunks) == {b"IHDR", b"IDAT", b"IEND"} and stored.data.endswith(_chunk(b"IEND", b""))
    if name != "over the side bound":
        assert np.array_equal(np.asarray(decode_image(upload)), np.asarray(decode_image(stored.data)))


def _chunk_offsets(data: bytes) -> list[int]:
    offsets, at = [], 8
    while at < len(data):
        offsets.append(at)
        at += 12 + struct.unpack(">I", data[at:at + 4])[0]
    return offsets


def test_a_png_that_only_looks_plain_is_left_to_the_decoder():
    from services.canonical_image import plain_png_copy

    bad_filter = _png(8, 4, 2, zlib.compress(_rows(8, 4, 3, filter_type=5)))  # no such filter type
    short = _png(8, 4, 2, zlib.compress(_rows(8, 3, 3)))  # a row short
    assert plain_png_copy(bad_filter, 64) is None and plain_png_copy(short, 64) is None
    with pytest.raises(InputError, match="could not be decoded"):
        check_image(bad_filter, ServiceSettings())


def test_a_plain_png_over_the_pixel_cap_is_refused():
    upload = _png(64, 64, 0, zlib.compress(_rows(64, 64, 1)))
    with pytest.raises(InputError, match="over the cap"):
        check_image(upload, ServiceSettings(max_image_pixels=1000))


# --- a JPEG keeps its own pixel segments ------------------------------------------------------------

def _segment(marker: int, body: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body


def _with_metadata(jpeg: bytes) -> bytes:
    """The JPEG with a comment, an ICC segment and EXIF (orientation 1) after SOI, and a ZIP after EOI."""
    exif = Image.Exif()
    exif[0x0112] = 1
    metadata = (_segment(0xFE, b"a comment") + _segment(0xE2, b"ICC_PROFILE\x00\x01\x01" + b"\x00" * 64)
                + _segment(0xE1, b"Exif\x00\x00" + exif.tobytes()[6:]))
    return jpeg[:2] + metadata + jpeg[2:] + b"PK\x03\x04 an archive"


@pytest.mark.parametrize("options", [{}, {"progressive": True}, {"subsampling": 2, "quality": 70}],
                         ids=["baseline", "progressive", "4:2:0"])
def test_a_jpeg_is_stored_as_its_own_pixel_segments_with_exact_pixels(options):
    from multimodal import decode_image
    from services.canonical_image import plain_jpeg_bytes

    photo = Image.open(io.BytesIO(photo_jpeg("chelsea"))).convert("RGB")
    plain = encode(photo, "JPEG", **options)
    upload = _with_metadata(plain)
    stored = check_image(upload, ServiceSettings())
    assert stored.format == "JPEG" and stored.data == plain_jpeg_bytes(plain, Image.open(io.BytesIO(plain)), 1536)
    assert stored.sha256 == check_image(plain, ServiceSettings()).sha256  # the metadata changes nothing stored
    assert b"a comment" not in stored.data and b"ICC_PROFILE" not in stored.data and b"Exif" not in stored.data
    assert not stored.data[stored.data.rindex(b"\xff\xd9") + 2:]
    assert np.array_equal(np.asarray(decode_image(upload)), np.asarray(decode_image(stored.data)))


def test_a_rotated_or_adobe_jpeg_is_re_encoded_upright():
    from services.canonical_image import plain_jpeg_bytes

    rotated = (CORPUS / "exif-rotated.jpg").read_bytes()
    cmyk = (CORPUS / "cmyk.jpg").read_bytes()
    for upload in (rotated, cmyk):
        assert plain_jpeg_bytes(upload, Image.open(io.BytesIO(upload)), 1536) is None
    upright = ImageOps.exif_transpose(Image.open(io.BytesIO(rotated)))
    assert Image.open(io.BytesIO(check_image(rotated, ServiceSettings()).data)).size == upright.size


def test_a_jpeg_cut_short_is_refused():
    photo = encode(Image.open(io.BytesIO(photo_jpeg("chelsea"))).convert("RGB"), "JPEG")
    cut = photo[: len(photo) * 2 // 3]  # no EOI: not plain, and the decoder refuses it
    with pytest.raises(InputError, match="could not be decoded|truncated"):
        check_image(cut, ServiceSettings())
