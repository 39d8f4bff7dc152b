"""Image decoding and normalisation: any mode, size, bit depth or EXIF orientation → model input."""
from __future__ import annotations

import io
import warnings

import numpy as np
import torch
from PIL import Image, ImageOps

ALLOWED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")
DEFAULT_MAX_PIXELS = 40_000_000


class ImageError(ValueError):
    """An input that is not a usable image; the message says why, for the client."""


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, target_size: int | None = None) -> Image.Image:
    """Bytes → a fully decoded RGB image, upright. Raises ImageError with a readable reason.

    With target_size, a JPEG is decoded at the smallest DCT scale (1/2, 1/4 or 1/8) whose shorter side still
    covers target_size: a 12 MP photo for a 64-336 px model never exists at full size in memory."""
    if not data:
        raise ImageError("image is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
            if image.width * image.height > max_pixels:
                raise ImageError(f"image has {image.width}x{image.height} pixels, over the cap of {max_pixels}")
            if target_size is not None:
                draft_for(image, target_size)
            image.load()
    except ImageError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise ImageError(f"image refused as a decompression bomb: {exc}") from None
    except Image.UnidentifiedImageError:
        raise ImageError(f"not a supported image (allowed: {', '.join(ALLOWED_FORMATS)})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"image could not be decoded: {exc}") from None
    return to_rgb(image)


def draft_for(image: Image.Image, target_size: int) -> None:
    """Asks a JPEG decoder for a reduced scale that still covers target_size on both sides (no-op otherwise)."""
    if image.format != "JPEG":
        return
    # Exif rotation swaps sides, and centre-cropping keeps the shorter side: asking both sides ≥ target covers both.
    image.draft("RGB" if image.mode in ("RGB", "YCbCr") else image.mode, (target_size, target_size))


def fit_to_model(image: Image.Image, size: int) -> Image.Image:
    """RGB image → the (size, size) square the model reads: centre-cropped and resized as image_to_tensor does."""
    image = to_rgb(image)
    return image if image.size == (size, size) else ImageOps.fit(image, (size, size), Image.Resampling.BICUBIC)


def to_rgb(image: Image.Image) -> Image.Image:
    """Normalise any PIL mode to 8-bit RGB: EXIF rotation applied, transparency flattened on white."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        image = _high_depth_to_l(image)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB") if image.mode != "RGB" else image


def _high_depth_to_l(image: Image.Image) -> Image.Image:
    """16-bit / 32-bit / float grayscale → 8-bit, scaled by the image's own range."""
    values = np.asarray(image, dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) / (high - low) * 255.0 if high > low else np.zeros_like(values)
    return Image.fromarray(scaled.round().astype(np.uint8), mode="L")


def image_to_tensor(image: Image.Image, size: int, mean, std) -> torch.Tensor:
    """RGB image → (3, size, size) float tensor: centre-cropped to a square, resized, normalised."""
    image = fit_to_model(image, size)
    pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255.0
    return (pixels - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


def images_to_batch(images, size: int, mean, std) -> torch.Tensor:
    """A list of PIL images → (B, 3, size, size)."""
    return torch.stack([image_to_tensor(image, size, mean, std) for image in images])
