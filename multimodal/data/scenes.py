"""Generated shape scenes and faces with their canonical captions (LensQ's caption world).

Caption format (produced by `caption_for`, read back by `parse_caption`):

* Objects are grouped by (colour, shape). Groups are ordered by their leftmost object's x
  (ties: y, then colour, then shape).
* Each group is "<count> <colour> <shape>", the shape plural with an "s" when count > 1.
  Count words: "two", "three", "four"; a group of one is "a" -- except when the whole scene
  holds a single object, which reads "one" ("one green rectangle.").
* Groups are joined by ", " with " and " before the last one; the sentence ends with ".".
* With two or more objects a second sentence states one spatial relation between the
  leftmost object A and the next object B in x order: "A is left of B." when |dx| >= |dy|,
  otherwise "A is above B." / "A is below B." Each object is named "the <colour> <shape>"
  when it is the only one of its (colour, shape) in the scene, "a <colour> <shape>" otherwise.

Examples: "one green rectangle."
          "two red circles and a blue triangle. a red circle is left of the blue triangle."
          "a gray triangle, a teal circle and a yellow rectangle. the gray triangle is above the teal circle."
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass

from PIL import Image, ImageDraw

from multimodal.data.shapes import COLOURS, SHAPES, Box, random_background, render_shapes, render_supersampled

MAX_OBJECTS = 4
MIN_SIZE_FRACTION = 12 / 64  # smallest side of a scene object: 12 px at 64 px
MAX_SIZE_FRACTION = {1: 0.5, 2: 0.4, 3: 0.34, 4: 0.3}  # longest side, by number of objects
GAP_FRACTION = 2 / 64  # free space kept between two objects' boxes
MAX_RECTANGLE_ASPECT = 2.0
PLACEMENT_TRIES = 2000

# easy-VQA style single shapes: longest side 20-55% of the image, thin rectangles allowed.
SINGLE_SIZE_FRACTION = (0.2, 0.55)
SINGLE_MIN_SIDE_FRACTION = 0.15
SINGLE_MAX_RECTANGLE_ASPECT = 2.5

COUNT_WORDS = {1: "a", 2: "two", 3: "three", 4: "four"}
COUNT_VALUES = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}
COLOUR_ALIASES = {"grey": "gray"}

MOUTHS = ("smile", "frown", "flat")
FACE_FEATURE_COLOUR = (40, 30, 25)


@dataclass(frozen=True)
class SceneObject:
    """One filled shape: `size` is its box's longest side and `aspect` its width / height, in pixels."""

    shape: str
    colour: str
    size: float
    cx: float
    cy: float
    aspect: float = 1.0

    @property
    def width(self) -> float:
        return self.size if self.aspect >= 1 else self.size * self.aspect

    @property
    def height(self) -> float:
        return self.size / self.aspect if self.aspect >= 1 else self.size

    @property
    def box(self) -> Box:
        half_w, half_h = self.width / 2, self.height / 2
        return (self.cx - half_w, self.cy - half_h, self.cx + half_w, self.cy + half_h)


@dataclass(frozen=True)
class Scene:
    """The objects drawn in one square image of `image_size` pixels."""

    objects: tuple[SceneObject, ...]
    image_size: int

    def counts(self) -> Counter:
        """(colour, shape) -> how many objects of it the scene holds."""
        return Counter((obj.colour, obj.shape) for obj in self.objects)


def boxes_overlap(first: Box, second: Box, gap: float = 0.0) -> bool:
    """True when the boxes intersect or come closer than `gap`."""
    return not (
        first[2] + gap <= second[0]
        or second[2] + gap <= first[0]
        or first[3] + gap <= second[1]
        or second[3] + gap <= first[1]
    )


def random_object(
    rng: random.Random, image_size: int, size_range: tuple[float, float], min_side: float, max_aspect: float
) -> SceneObject:
    """A random shape and colour with its longest side in `size_range`, placed fully inside the image."""
    shape = rng.choice(SHAPES)
    colour = rng.choice(list(COLOURS))
    size = rng.uniform(*size_range)
    aspect = 1.0
    if shape == "rectangle":
        long_over_short = rng.uniform(1.0, max(1.0, min(max_aspect, size / min_side)))
        aspect = long_over_short if rng.random() < 0.5 else 1.0 / long_over_short
    probe = SceneObject(shape, colour, size, 0.0, 0.0, aspect)
    margin = 1.0
    cx = rng.uniform(margin + probe.width / 2, image_size - margin - probe.width / 2)
    cy = rng.uniform(margin + probe.height / 2, image_size - margin - probe.height / 2)
    return SceneObject(shape, colour, size, cx, cy, aspect)


def layout_scene(rng: random.Random, image_size: int = 64, n_objects: int | None = None) -> Scene:
    """A scene of `n_objects` (uniform in 1..4 when None) non-overlapping random objects."""
    if n_objects is None:
        n_objects = rng.randint(1, MAX_OBJECTS)
    if not 1 <= n_objects <= MAX_OBJECTS:
        raise ValueError(f"n_objects must be in 1..{MAX_OBJECTS}, got {n_objects}")
    min_side = MIN_SIZE_FRACTION * image_size
    size_range = (min_side, MAX_SIZE_FRACTION[n_objects] * image_size)
    gap = GAP_FRACTION * image_size
    placed: list[SceneObject] = []
    for _ in range(PLACEMENT_TRIES):
        candidate = random_object(rng, image_size, size_range, min_side, MAX_RECTANGLE_ASPECT)
        if not any(boxes_overlap(candidate.box, other.box, gap) for other in placed):
            placed.append(candidate)
            if len(placed) == n_objects:
                return Scene(tuple(placed), image_size)
    raise RuntimeError(f"could not place {n_objects} objects in a {image_size}px image")


def render_scene(scene: Scene, background: tuple[int, int, int]) -> Image.Image:
    """The scene drawn on a plain background, antialiased."""
    shapes = [(obj.shape, obj.colour, obj.box) for obj in scene.objects]
    return render_shapes(scene.image_size, background, shapes)


def generate_scene(
    rng: random.Random, image_size: int = 64, n_objects: int | None = None
) -> tuple[Image.Image, Scene]:
    """A random scene of 1-4 non-overlapping objects on a light background, and its description."""
    scene = layout_scene(rng, image_size, n_objects)
    return render_scene(scene, random_background(rng)), scene


def generate_single_shape(rng: random.Random, image_size: int = 64) -> tuple[Image.Image, Scene]:
    """One easy-VQA style shape (longest side 20-55% of the image) anywhere in the image."""
    size_range = (SINGLE_SIZE_FRACTION[0] * image_size, SINGLE_SIZE_FRACTION[1] * image_size)
    min_side = SINGLE_MIN_SIDE_FRACTION * image_size
    obj = random_object(rng, image_size, size_range, min_side, SINGLE_MAX_RECTANGLE_ASPECT)
    scene = Scene((obj,), image_size)
    return render_scene(scene, random_background(rng)), scene


def scene_dataset(n: int, seed: int, image_size: int = 64) -> list[tuple[Image.Image, Scene, str]]:
    """`n` (image, scene, caption) triples, the same for the same seed."""
    rng = random.Random(seed)
    triples = []
    for _ in range(n):
        image, scene = generate_scene(rng, image_size)
        triples.append((image, scene, caption_for(scene)))
    return triples


def objects_in_x_order(scene: Scene) -> list[SceneObject]:
    """The scene's objects left to right (ties: top to bottom)."""
    return sorted(scene.objects, key=lambda obj: (obj.cx, obj.cy, obj.colour, obj.shape))


def object_groups(scene: Scene) -> list[tuple[str, str, int]]:
    """(colour, shape, count) groups ordered by their leftmost object's x."""
    counts = scene.counts()
    groups: list[tuple[str, str, int]] = []
    for obj in objects_in_x_order(scene):
        key = (obj.colour, obj.shape)
        if key in counts:
            groups.append((obj.colour, obj.shape, counts.pop(key)))
    return groups


def group_phrase(colour: str, shape: str, count: int, only_object: bool) -> str:
    """'two red circles', 'a blue triangle', or 'one green rectangle' for a scene's only object."""
    count_word = "one" if only_object else COUNT_WORDS[count]
    return f"{count_word} {colour} {shape}{'s' if count > 1 else ''}"


def join_phrases(phrases: list[str]) -> str:
    """'x', 'x and y', 'x, y and z'."""
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def relation_sentence(scene: Scene) -> str:
    """Where the leftmost object is relative to the next one in x order."""
    first, second = objects_in_x_order(scene)[:2]
    counts = scene.counts()

    def name(obj: SceneObject) -> str:
        article = "the" if counts[(obj.colour, obj.shape)] == 1 else "a"
        return f"{article} {obj.colour} {obj.shape}"

    dx, dy = second.cx - first.cx, second.cy - first.cy
    if abs(dx) >= abs(dy):
        relation = "left of"
    else:
        relation = "above" if dy > 0 else "below"
    return f"{name(first)} is {relation} {name(second)}."


def caption_for(scene: Scene) -> str:
    """The canonical caption (format in the module docstring)."""
    groups = object_groups(scene)
    only_object = len(scene.objects) == 1
    caption = join_phrases([group_phrase(c, s, n, only_object) for c, s, n in groups]) + "."
    if len(scene.objects) >= 2:
        caption += " " + relation_sentence(scene)
    return caption


def singular_shape(word: str) -> str | None:
    """'circles' or 'circle' -> 'circle'; None for a word that names no shape."""
    if word in SHAPES:
        return word
    if word.endswith("s") and word[:-1] in SHAPES:
        return word[:-1]
    return None


def parse_caption(text: str) -> Counter:
    """(colour, shape) -> count read from the caption's first sentence; junk is skipped."""
    counts: Counter = Counter()
    if not isinstance(text, str):
        return counts
    first_sentence = text.lower().split(".")[0]
    tokens = re.findall(r"[a-z0-9]+", first_sentence)
    for count_word, colour_word, shape_word in zip(tokens, tokens[1:], tokens[2:]):
        count = COUNT_VALUES.get(count_word) or (int(count_word) if count_word.isdigit() else 0)
        colour = COLOUR_ALIASES.get(colour_word, colour_word)
        shape = singular_shape(shape_word)
        if count and colour in COLOURS and shape:
            counts[(colour, shape)] += count
    return counts


def caption_matches(text: str, scene: Scene) -> bool:
    """True iff the caption's first sentence counts exactly the scene's (colour, shape) objects."""
    return parse_caption(text) == scene.counts()


def face_colour(rng: random.Random) -> tuple[int, int, int]:
    """Mostly a yellow smiley tone, sometimes another light colour."""
    if rng.random() < 0.7:
        return (255, rng.randint(195, 235), rng.randint(0, 90))
    return (rng.randint(170, 235), rng.randint(170, 235), rng.randint(170, 235))


def draw_mouth(
    draw: ImageDraw.ImageDraw, mouth: str, cx: float, cy: float, radius: float, width: int
) -> None:
    """A smile (U), frown (upside-down U) or flat line below the face's centre."""
    half_width, depth, mouth_y = 0.5 * radius, 0.3 * radius, cy + 0.4 * radius
    if mouth == "smile":  # lower half of an ellipse whose centre is the mouth's corners
        box = (cx - half_width, mouth_y - 1.5 * depth, cx + half_width, mouth_y + 0.5 * depth)
        draw.arc(box, 0, 180, fill=FACE_FEATURE_COLOUR, width=width)
    elif mouth == "frown":  # upper half of an ellipse
        box = (cx - half_width, mouth_y - 0.5 * depth, cx + half_width, mouth_y + 1.5 * depth)
        draw.arc(box, 180, 360, fill=FACE_FEATURE_COLOUR, width=width)
    elif mouth == "flat":
        line = (cx - 0.9 * half_width, mouth_y, cx + 0.9 * half_width, mouth_y)
        draw.line(line, fill=FACE_FEATURE_COLOUR, width=width)
    else:
        raise ValueError(f"unknown mouth {mouth!r}; expected one of {MOUTHS}")


def draw_face(rng: random.Random, mouth: str, image_size: int = 64) -> Image.Image:
    """A face disc with two eyes and a `mouth` ("smile", "frown" or "flat") of random size and place."""
    if mouth not in MOUTHS:
        raise ValueError(f"unknown mouth {mouth!r}; expected one of {MOUTHS}")
    background = random_background(rng)
    radius = rng.uniform(0.28, 0.45) * image_size
    cx = rng.uniform(radius + 1, image_size - radius - 1)
    cy = rng.uniform(radius + 1, image_size - radius - 1)
    fill = face_colour(rng)
    mouth_px = max(2.0 * image_size / 64, 0.12 * radius)  # never thinner than 2 px at 64 px
    outline_px = max(1.0 * image_size / 64, 0.05 * radius)

    def paint(draw: ImageDraw.ImageDraw, scale: int) -> None:
        x, y, r = cx * scale, cy * scale, radius * scale
        outline = round(outline_px * scale)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=fill, outline=FACE_FEATURE_COLOUR, width=outline)
        eye_r, eye_y = 0.11 * r, y - 0.25 * r
        for eye_x in (x - 0.35 * r, x + 0.35 * r):
            eye_box = (eye_x - eye_r, eye_y - eye_r, eye_x + eye_r, eye_y + eye_r)
            draw.ellipse(eye_box, fill=FACE_FEATURE_COLOUR)
        draw_mouth(draw, mouth, x, y, r, round(mouth_px * scale))

    return render_supersampled(image_size, background, paint)
