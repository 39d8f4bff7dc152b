"""Small test images, made on the fly: solid colours, shapes, real photos, and broken or hostile files."""
from __future__ import annotations

import base64
import io

from PIL import Image, ImageDraw

SHAPES = ("circle", "rectangle", "triangle")
COLOURS = ((255, 0, 0), (0, 200, 0), (0, 0, 255), (0, 0, 0), (128, 128, 128), (0, 128, 128), (165, 42, 42),
           (255, 255, 0))


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64," + base64.b64encode(data).decode()


def shape_image(index: int, size: int = 64) -> Image.Image:
    """A distinct shape image per index: shape, colour, position and background vary."""
    shape, colour = SHAPES[index % 3], COLOURS[(index // 3) % len(COLOURS)]
    background = (230 + index % 26, 255 - index % 19, 235 + (index * 7) % 21)
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    offset = (index // 24) % 12
    box = (8 + offset, 8 + offset // 2, size - 20 + offset, size - 12)
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "rectangle":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([(box[0], box[3]), (box[2], box[3]), ((box[0] + box[2]) / 2, box[1])], fill=colour)
    return image


def shape_png(index: int, size: int = 64) -> bytes:
    return encode(shape_image(index, size), "PNG")


def photo_jpeg(name: str, max_side: int = 128) -> bytes:
    """One of scikit-image's bundled photos as a small JPEG."""
    import skimage.data

    image = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
    image.thumbnail((max_side, max_side))
    return encode(image, "JPEG", quality=90)


def truncated_jpeg() -> bytes:
    full = encode(Image.new("RGB", (256, 256), (10, 120, 200)).effect_spread(8), "JPEG", quality=95)
    return full[: len(full) // 2]


def broken_huffman_table_jpeg() -> bytes:
    """A photo JPEG whose segments run whole from SOI to EOI, but whose first Huffman table claims more codes than
    16-bit codes allow: its header reads, and only a decoder finds it broken."""
    data = bytearray(photo_jpeg("chelsea"))
    table = data.find(b"\xff\xc4")
    data[table + 5 : table + 21] = b"\xff" * 16  # the 16 code counts after the marker, length and class/id byte
    return bytes(data)


def decompression_bomb_png(side: int = 20_000) -> bytes:
    """A tiny file that decodes to side*side pixels."""
    return encode(Image.new("1", (side, side)), "PNG", optimize=True)


def svg_bytes() -> bytes:
    return b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>'


def ico_bytes() -> bytes:
    return encode(Image.new("RGB", (32, 32), (200, 0, 0)), "ICO")
