"""Re-encodes a decoded upload as the stored copy: an upright PNG in RGB, RGBA or L, with no metadata."""
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


def canonical_png(image: Image.Image, max_side: int) -> ImageFacts:
    """The stored copy of a loaded image (its current, first frame): upright, bounded, re-encoded, no metadata."""
    # No byte of the upload survives, so trailing archives and polyglots end here; the sha256 is of these bytes,
    # so a picture re-sent with other metadata, or re-saved losslessly, is stored once.
    upright = ImageOps.exif_transpose(image)
    clean = bounded(canonical_mode(upright), max_side)
    clean.info = {}  # PNG's encoder would otherwise copy an ICC profile, text chunks or gamma from the upload
    buffer = io.BytesIO()
    clean.save(buffer, "PNG", compress_level=PNG_COMPRESS_LEVEL)
    data = buffer.getvalue()
    width, height = clean.size
    return ImageFacts(data=data, sha256=hashlib.sha256(data).hexdigest(), format="PNG", width=width, height=height)
