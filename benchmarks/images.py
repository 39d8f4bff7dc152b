"""The benchmarks' inputs: distinct photo JPEGs of a chosen size, and a 12-megapixel JPEG, made from real photos."""
from __future__ import annotations

import functools
import io

import numpy as np
from PIL import Image

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field")
QUESTIONS = ("what shape is in the image?", "what color is the shape?", "is there a circle?", "what is this?")


@functools.cache
def photo(name: str) -> Image.Image:
    from skimage import data

    return Image.fromarray(getattr(data, name)()).convert("RGB")


def jpeg_bytes(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def job_photo(index: int, side: int) -> bytes:
    """A distinct JPEG per index: a real photo, cropped at an index-dependent offset, resized to side x 3/4 side."""
    source = photo(PHOTOS[index % len(PHOTOS)])
    rng = np.random.default_rng(index)
    width, height = source.size
    left, top = int(rng.integers(0, width // 8)), int(rng.integers(0, height // 8))
    crop = source.crop((left, top, left + width * 7 // 8, top + height * 7 // 8))
    return jpeg_bytes(crop.resize((side, side * 3 // 4), Image.Resampling.BILINEAR))


def job_photos(count: int, side: int) -> list[bytes]:
    return [job_photo(i, side) for i in range(count)]


def twelve_megapixel_jpeg() -> bytes:
    """A 4000 x 3000 JPEG (quality 90) of a real photo with sensor-like grain, about the size a phone sends."""
    large = np.asarray(photo("astronaut").resize((4000, 3000), Image.Resampling.BICUBIC), dtype=np.int16)
    # An upscaled photo is too smooth to cost what a real one costs to entropy-decode: grain restores the detail.
    grain = np.random.default_rng(0).normal(0, 6, large.shape).astype(np.int16)
    return jpeg_bytes(Image.fromarray(np.clip(large + grain, 0, 255).astype(np.uint8)))


def easy_vqa_items(count: int) -> list[tuple[Image.Image, str]]:
    """`count` easy-VQA test images (64 x 64 shapes, the domain the shipped checkpoints were trained on) with a
    question each."""
    from easy_vqa import get_test_image_paths, get_test_questions

    questions, _answers, image_ids = get_test_questions()
    paths = get_test_image_paths()
    return [(Image.open(paths[image_ids[i]]).convert("RGB"), questions[i]) for i in range(count)]


def easy_vqa_images(count: int) -> list[Image.Image]:
    """`count` distinct easy-VQA test images (there are 1,000; beyond that they repeat)."""
    from easy_vqa import get_test_image_paths

    paths = [path for _, path in sorted(get_test_image_paths().items())]
    return [Image.open(paths[i % len(paths)]).convert("RGB") for i in range(count)]


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()
