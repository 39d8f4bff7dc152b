"""Small JPEG thumbnails of stored images, for the web page's rows."""
from __future__ import annotations

import io

from PIL import Image


def thumbnail_jpeg(data: bytes, side: int) -> bytes:
    """A JPEG whose longer side is at most `side`, from a stored (already checked, canonical PNG or JPEG) image."""
    with Image.open(io.BytesIO(data)) as image:
        image.draft("RGB", (side, side))  # JPEG sources decode at a reduced size; PNGs ignore it
        picture = image.convert("RGB")
    picture.thumbnail((side, side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=82, optimize=True)
    return buffer.getvalue()
