"""Images of any mode, size, bit depth and orientation normalise to RGB model input; bad bytes fail clearly."""
import io

import numpy as np
import pytest
from PIL import Image

from multimodal.preprocess import ImageError, decode_image, image_to_tensor


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "P", "I;16", "1", "CMYK"])
def test_every_mode_becomes_rgb(mode):
    image = Image.new("RGB", (40, 30), (200, 10, 10)).convert(mode) if mode != "I;16" else Image.fromarray(
        (np.arange(1200).reshape(30, 40) * 50).astype(np.uint16))
    fmt = "TIFF" if mode in ("I;16", "CMYK", "LA") else "PNG"
    decoded = decode_image(_encode(image, fmt))
    assert decoded.mode == "RGB" and decoded.size == (40, 30)
    assert image_to_tensor(decoded, 64, (0.5,) * 3, (0.5,) * 3).shape == (3, 64, 64)


def test_sixteen_bit_grayscale_keeps_its_contrast():
    array = np.zeros((10, 10), dtype=np.uint16)
    array[:, 5:] = 60000
    decoded = np.asarray(decode_image(_encode(Image.fromarray(array), "PNG")))
    assert decoded[0, 0, 0] == 0 and decoded[0, 9, 0] == 255


def test_transparent_pixels_are_flattened_on_white():
    image = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    assert decode_image(_encode(image, "PNG")).getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (60, 20), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    decoded = decode_image(_encode(image, "JPEG", exif=exif.tobytes()))
    assert decoded.size == (20, 60)


def test_palette_with_transparency():
    image = Image.new("P", (10, 10), 0)
    image.putpalette([255, 0, 0] * 256)
    decoded = decode_image(_encode(image, "PNG", transparency=0))
    assert decoded.getpixel((1, 1)) == (255, 255, 255)


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty"),
        (b"hello, this is text", "not a supported image"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", "not a supported image"),
    ],
)
def test_bad_bytes_raise_a_readable_error(data, reason):
    with pytest.raises(ImageError, match=reason):
        decode_image(data)


def test_truncated_jpeg_is_refused():
    data = _encode(Image.new("RGB", (64, 64), (9, 9, 9)), "JPEG")
    with pytest.raises(ImageError, match="decoded"):
        decode_image(data[: len(data) // 2])


def test_pixel_cap_refuses_huge_images():
    data = _encode(Image.new("L", (3000, 3000)), "PNG")
    with pytest.raises(ImageError, match="pixels"):
        decode_image(data, max_pixels=1_000_000)


def test_large_photo_is_centre_cropped_to_a_square():
    image = Image.new("RGB", (400, 100), (0, 0, 0))
    image.paste((255, 255, 255), (150, 0, 250, 100))  # a white band in the middle
    tensor = image_to_tensor(image, 32, (0.0,) * 3, (1.0,) * 3)
    assert tensor.shape == (3, 32, 32) and float(tensor.mean()) == pytest.approx(1.0, abs=0.05)
