"""The stored copy of an upload: upright, in RGB, RGBA or L, within the side bound, with no metadata.

Most uploads need no re-encode: a PNG or JPEG whose pixels are already in that form keeps its own pixel chunks or
segments, without metadata or trailing bytes (plain_png_copy, plain_jpeg_bytes), so its pixels stay exact and the
API pays no encode. Everything else is decoded and re-encoded (canonical_copy). A JPEG upload in RGB or L is stored
as a JPEG, everything else as a PNG. PNG would keep a JPEG's pixels exactly, but costs the API about 20 ms to encode
and the worker 7 ms to decode for a 640x480 photo, several times the model's own time per image at batch 32; a JPEG
costs about 1 ms each way, and the worker decodes it at a reduced DCT scale. The upload's pixels already carry
JPEG's loss: re-encoding at quality 95 with full-resolution colour moves them by about half a level on a photo.
Lossless uploads (PNG, GIF, BMP, TIFF, WebP) keep their exact pixels."""
from __future__ import annotations

import hashlib
import io
import re
import struct
import zlib

import numpy as np
from PIL import Image, ImageOps

from db.queries import ImageFacts

ORIENTATION_TAG = 0x0112  # EXIF
HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
# zlib level 1: on a 12 MP photo about 4x faster than Pillow's default of 6, for about 20% more bytes.
PNG_COMPRESS_LEVEL = 1


def _high_depth_to_l(image: Image.Image) -> Image.Image:
    """16-bit / 32-bit / float grayscale → 8-bit, scaled by the image's own range."""
    # The same rule as multimodal.preprocess (not imported: the API stays torch-free), so the model sees equal pixels.
    values = np.asarray(image, dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) / (high - low) * 255.0 if high > low else np.zeros_like(values)
    return Image.fromarray(scaled.round().astype(np.uint8), mode="L")


def canonical_mode(image: Image.Image) -> Image.Image:
    """The image in RGBA (alpha, or a palette with a transparent colour), L (grayscale) or else RGB."""
    # Transparency is kept exactly where the worker's preprocessing honours it, so the model sees the same pixels.
    if image.mode in HIGH_DEPTH_MODES:
        return _high_depth_to_l(image)
    if image.mode in ALPHA_MODES or (image.mode == "P" and "transparency" in image.info):
        return image.convert("RGBA")
    if image.mode in ("1", "L"):
        return image.convert("L")
    return image.convert("RGB")


def bounded(image: Image.Image, max_side: int) -> Image.Image:
    """The image shrunk (aspect kept) so that its longer side is at most max_side; unchanged when already within."""
    # The model reads 64-336 px: storing a 12 MP photo whole would cost ~10 MB of PNG and over a second to encode.
    if max(image.size) <= max_side:
        return image
    scale = max_side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def stored_format(upload_format: str | None, mode: str) -> str:
    """JPEG for a JPEG upload without alpha (its pixels are lossy already), else PNG (exact pixels)."""
    return "JPEG" if upload_format == "JPEG" and mode in ("RGB", "L") else "PNG"


def encode(image: Image.Image, fmt: str, jpeg_quality: int) -> bytes:
    buffer = io.BytesIO()
    if fmt == "JPEG":
        # subsampling=0 (4:4:4): chroma at full resolution, since colour decides many answers on small shapes.
        image.save(buffer, "JPEG", quality=jpeg_quality, subsampling=0)
    else:
        image.save(buffer, "PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def stored_facts(data: bytes, fmt: str, width: int, height: int) -> ImageFacts:
    """The stored copy's bytes and what they are, named by their sha256 (the content address)."""
    return ImageFacts(data=data, sha256=hashlib.sha256(data).hexdigest(), format=fmt, width=width, height=height)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PLAIN_PNG_CHANNELS = {0: 1, 2: 3, 6: 4}  # PNG colour type -> channels: gray (L), truecolour (RGB), with alpha (RGBA)
# Ancillary chunks that say nothing about the pixels as Pillow (and so the model) reads them: text, time, physical
# size, colour management (never applied on decode) and hints. A transparency key (tRNS), EXIF (eXIf: orientation),
# a palette or animation chunks do change what the model sees, so a PNG with one is re-encoded instead.
PNG_METADATA_CHUNKS = {b"tEXt", b"zTXt", b"iTXt", b"tIME", b"pHYs", b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"sBIT",
                       b"bKGD", b"hIST", b"sPLT"}


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes, bytes]] | None:
    """(type, body, the chunk's bytes) of each chunk up to IEND, or None unless the bytes start with the signature
    and CRC-valid chunks up to IEND (what follows IEND is no part of the PNG)."""
    if not data.startswith(PNG_SIGNATURE):
        return None
    chunks, at = [], len(PNG_SIGNATURE)
    while at + 12 <= len(data):
        (length,), kind = struct.unpack(">I", data[at : at + 4]), data[at + 4 : at + 8]
        body, crc_end = data[at + 8 : at + 8 + length], at + 12 + length
        if crc_end > len(data) or struct.unpack(">I", data[crc_end - 4 : crc_end])[0] != zlib.crc32(kind + body):
            return None
        chunks.append((kind, body, data[at:crc_end]))
        at = crc_end
        if kind == b"IEND":
            return chunks
    return None


def plain_png_copy(data: bytes, max_side: int) -> ImageFacts | None:
    """The stored copy of a PNG whose pixels need no decoding to be kept exactly: its IHDR, IDAT and IEND chunks as
    sent, without its metadata chunks (PNG_METADATA_CHUNKS) or anything after IEND. It must be 8 bits per channel in
    L, RGB or RGBA, not interlaced, within max_side, and its IDAT data one complete zlib stream of exactly its rows,
    each with a valid filter type: pixels alone, which any decoder reads. Else None, and canonical_copy re-encodes it.

    This is what canonical_copy would store, but for the zlib compression, at about a sixth of the cost for a 64x64
    PNG."""
    chunks = _png_chunks(data)
    if not chunks or chunks[0][0] != b"IHDR" or len(chunks[0][1]) != 13 or chunks[-1][1]:
        return None
    kinds = [kind for kind, _, _ in chunks[1:-1] if kind not in PNG_METADATA_CHUNKS]
    if set(kinds) != {b"IDAT"}:
        return None
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    if (depth, compression, filtering, interlace) != (8, 0, 0, 0) or colour not in PLAIN_PNG_CHANNELS:
        return None
    if not 0 < width <= max_side or not 0 < height <= max_side:
        return None
    pixel_chunks = [chunk for chunk in chunks if chunk[0] in (b"IHDR", b"IDAT", b"IEND")]
    stride = 1 + width * PLAIN_PNG_CHANNELS[colour]  # a row: its filter type byte, then its pixels
    compressed = b"".join(body for kind, body, _ in pixel_chunks if kind == b"IDAT")
    stream = zlib.decompressobj()
    try:
        rows = stream.decompress(compressed, height * stride + 1)
    except zlib.error:
        return None
    if not stream.eof or stream.unused_data or len(rows) != height * stride or max(rows[::stride]) > 4:
        return None
    return stored_facts(PNG_SIGNATURE + b"".join(raw for _, _, raw in pixel_chunks), "PNG", width, height)


JPEG_STANDALONE = {0xD8, 0xD9, *range(0xD0, 0xD8)}  # SOI, EOI, RST0-7: markers without a length field
# The segments a plain JPEG keeps: frame (baseline, extended or progressive Huffman), tables, restart interval, scan.
JPEG_PIXEL_SEGMENTS = {0xC0, 0xC1, 0xC2, 0xC4, 0xDB, 0xDD, 0xDA}
JPEG_SCAN_END = re.compile(rb"\xff(?!\x00|[\xd0-\xd7])")  # the marker after entropy-coded data
# What a JFIF APP0 says that matters to a decoder is only that it is JFIF (colour is YCbCr): kept without its
# density or thumbnail.
JFIF_APP0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"


def _jpeg_segments(data: bytes) -> list[tuple[int, bytes]] | None:
    """(marker, the segment's bytes: a scan's with its entropy-coded data) of each segment between SOI and EOI, or
    None unless the bytes are a well-formed sequence of segments up to EOI (what follows EOI is no part of the JPEG)."""
    if not data.startswith(b"\xff\xd8"):
        return None
    segments, at = [], 2
    while at + 2 <= len(data) and data[at] == 0xFF:
        marker = data[at + 1]
        if marker == 0xD9:
            return segments
        if marker in JPEG_STANDALONE or at + 4 > len(data):
            return None
        end = at + 2 + struct.unpack(">H", data[at + 2 : at + 4])[0]
        if marker == 0xDA and (found := JPEG_SCAN_END.search(data, end)) is not None:
            end = found.start()
        if end > len(data):
            return None
        segments.append((marker, data[at:end]))
        at = end
    return None


def plain_jpeg_bytes(data: bytes, image: Image.Image, max_side: int) -> bytes | None:
    """The JPEG's own pixel segments (tables, frame, scans), without its metadata (APPn and COM segments) or anything
    after EOI, when that is all its pixels need: Huffman-coded, RGB or grayscale, no Adobe colour transform, upright
    (no EXIF orientation), within max_side. Else None, and canonical_copy re-encodes it.

    These bytes decode to exactly the upload's pixels, where a re-encode moves them by about half a level, and cost
    no encode (1 of the 2.4 ms a 640x480 photo's checks took) and no decode: the worker's decode is the one that
    finds damage only a decoder can (services.input_checks._plain_jpeg_facts)."""
    if image.mode not in ("RGB", "L") or max(image.size) > max_side:
        return None
    segments = _jpeg_segments(data)
    if segments is None:
        return None
    jfif = False
    for marker, segment in segments:
        if marker == 0xE0 and segment[4:9] == b"JFIF\x00":
            jfif = True
        elif marker == 0xEE or (0xE1 <= marker <= 0xEF and segment[4:10] == b"Exif\x00\x00"
                                and image.getexif().get(ORIENTATION_TAG, 1) != 1):
            return None  # Adobe's colour transform, or a rotation: re-encoded with them applied
        elif marker not in JPEG_PIXEL_SEGMENTS and not (0xE0 <= marker <= 0xEF or marker == 0xFE):
            return None
    kept = b"".join(segment for marker, segment in segments if marker in JPEG_PIXEL_SEGMENTS)
    return b"\xff\xd8" + (JFIF_APP0 if jfif else b"") + kept + b"\xff\xd9"


def canonical_copy(image: Image.Image, max_side: int, jpeg_quality: int = 95) -> ImageFacts:
    """The stored copy of a loaded image (its current, first frame): upright, bounded, re-encoded, no metadata."""
    # No byte of the upload survives (nor does any but the pixel data of a plain PNG or JPEG), so trailing archives,
    # polyglots and metadata end here; the sha256 is of the stored bytes, so a picture re-sent with other metadata
    # is stored once.
    upload_format = image.format  # exif_transpose returns a copy without it
    upright = ImageOps.exif_transpose(image)
    clean = bounded(canonical_mode(upright), max_side)
    clean.info = {}  # the encoders would otherwise copy an ICC profile, EXIF, text chunks or gamma from the upload
    fmt = stored_format(upload_format, clean.mode)
    return stored_facts(encode(clean, fmt, jpeg_quality), fmt, *clean.size)
