"""The shape world of every generated data set: palette, shapes, backgrounds, antialiased drawing."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from PIL import Image, ImageDraw

# The easy-VQA palette, measured from its images' shape pixels (exact RGB values).
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "black": (0, 0, 0),
    "gray": (128, 128, 128),
    "teal": (0, 128, 128),
    "brown": (165, 42, 42),
    "yellow": (255, 255, 0),
}

SHAPES: tuple[str, ...] = ("circle", "rectangle", "triangle")

# Shapes are drawn this many times larger, then downsampled with LANCZOS (antialiasing).
SUPERSAMPLE = 4

# easy-VQA backgrounds measure 229..255 per channel.
BACKGROUND_RANGE = (230, 255)

Box = tuple[float, float, float, float]
RGB = tuple[int, int, int]


def colour_rgb(colour: str | Sequence[int]) -> RGB:
    """The RGB triple for a palette name, or the triple itself."""
    if isinstance(colour, str):
        return COLOURS[colour]
    red, green, blue = colour
    return (int(red), int(green), int(blue))


def random_background(rng: random.Random) -> RGB:
    """A light pastel background colour, each channel in BACKGROUND_RANGE like easy-VQA's."""
    low, high = BACKGROUND_RANGE
    return (rng.randint(low, high), rng.randint(low, high), rng.randint(low, high))


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, colour: str | Sequence[int], box: Box) -> None:
    """Draw a filled `shape` filling `box` = (x0, y0, x1, y1) in the draw's own pixel coordinates.

    A circle is the ellipse inscribed in the box, a rectangle is the box, a triangle points up
    with its base on the box's bottom edge.
    """
    fill = colour_rgb(colour)
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=fill)
    elif shape == "rectangle":
        draw.rectangle((x0, y0, x1, y1), fill=fill)
    elif shape == "triangle":
        draw.polygon([(x0, y1), (x1, y1), ((x0 + x1) / 2, y0)], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def scale_box(box: Box, factor: float) -> Box:
    """The box with every coordinate multiplied by `factor`."""
    x0, y0, x1, y1 = box
    return (x0 * factor, y0 * factor, x1 * factor, y1 * factor)


def render_supersampled(
    image_size: int, background: Sequence[int], paint: Callable[[ImageDraw.ImageDraw, int], None]
) -> Image.Image:
    """A square RGB image: `paint(draw, scale)` draws at `scale`x size, then LANCZOS downsamples."""
    big = image_size * SUPERSAMPLE
    canvas = Image.new("RGB", (big, big), colour_rgb(background))
    paint(ImageDraw.Draw(canvas), SUPERSAMPLE)
    return canvas.resize((image_size, image_size), Image.Resampling.LANCZOS)


def render_shapes(
    image_size: int, background: Sequence[int], shapes: Sequence[tuple[str, str | Sequence[int], Box]]
) -> Image.Image:
    """Render (shape, colour, box) triples, boxes in final-image pixels, onto a plain background."""

    def paint(draw: ImageDraw.ImageDraw, scale: int) -> None:
        for shape, colour, box in shapes:
            draw_shape(draw, shape, colour, scale_box(box, scale))

    return render_supersampled(image_size, background, paint)
