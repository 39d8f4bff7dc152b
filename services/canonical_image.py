"""Re-encodes a decoded upload as the stored copy: upright, in RGB, RGBA or L, with no metadata.

A JPEG upload in RGB or L is stored as a JPEG, everything else as a PNG. PNG would keep a JPEG's pixels exactly, but
costs the API about 20 ms to encode and the worker 7 ms to decode for a 640x480 photo, several times the model's own
time per image at batch 32; a JPEG costs about 1 ms each way, and the worker decodes it at a reduced DCT scale. The
upload's pixels already carry JPEG's loss: re-encoding at quality 95 with full-resolution colour moves them by about
half a level on a photo. Lossless uploads (PNG, GIF, BMP, TIFF, WebP) keep their exact pixels."""
from __future__ import annotations

import hashlib
import io

import numpy as np
from PIL import Image, ImageOps

from db.queries import ImageFacts

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


def canonical_copy(image: Image.Image, max_side: int, jpeg_quality: int = 95) -> ImageFacts:
    """The stored copy of a loaded image (its current, first frame): upright, bounded, re-encoded, no metadata."""
    # No byte of the upload survives, so trailing archives and polyglots end here; the sha256 is of these bytes,
    # so a picture re-sent with other metadata, or re-saved losslessly, is stored once.
    upload_format = image.format  # exif_transpose returns a copy without it
    upright = ImageOps.exif_transpose(image)
    clean = bounded(canonical_mode(upright), max_side)
    clean.info = {}  # the encoders would otherwise copy an ICC profile, EXIF, text chunks or gamma from the upload
    fmt = stored_format(upload_format, clean.mode)
    data = encode(clean, fmt, jpeg_quality)
    width, height = clean.size
    return ImageFacts(data=data, sha256=hashlib.sha256(data).hexdigest(), format=fmt, width=width, height=height)
