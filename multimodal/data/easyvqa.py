"""The easy-VQA data set (PyPI `easy-vqa==1.0`, MIT) and generated questions in its style.

easy-VQA holds 4,000 train and 1,000 test 64x64 images of one shape each, 38,575 train and
9,673 test questions, 13 answers. Its questions follow 24 templates; `question_templates`
recovers them from the train questions and `QuestionTemplate.answer` is the answer rule,
checked against every train answer by `answer_rule_agreement`.
"""

from __future__ import annotations

import functools
import random
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from multimodal.data.scenes import generate_single_shape
from multimodal.data.shapes import COLOURS, SHAPES

# easy-VQA's answers.txt, in its order (class index = position); a test checks it against the package.
EASYVQA_ANSWERS: tuple[str, ...] = (
    "circle", "green", "red", "gray", "yes", "teal", "black",
    "rectangle", "yellow", "triangle", "brown", "blue", "no",
)  # fmt: skip

COLOUR_SLOT = "{colour}"
SHAPE_SLOT = "{shape}"
QUESTIONS_PER_IMAGE = 10


@dataclass
class VQAExample:
    """One question about one image, given either as a file path or as a PIL image."""

    image_path: str | None
    image: Image.Image | None
    question: str
    answer: str

    def __post_init__(self) -> None:
        if (self.image_path is None) == (self.image is None):
            raise ValueError("set exactly one of image_path and image")

    def load_image(self) -> Image.Image:
        """The image as RGB."""
        if self.image is not None:
            return self.image.convert("RGB")
        with Image.open(self.image_path) as image:
            return image.convert("RGB")

    @property
    def image_key(self) -> str:
        """Identifies the image: its path, or the identity of its in-memory object."""
        return self.image_path if self.image_path is not None else f"memory:{id(self.image)}"


@dataclass(frozen=True)
class QuestionTemplate:
    """A question pattern with at most one slot, and what its answer reports.

    `asks` is "colour" or "shape" for what-questions, "presence" for yes/no questions, which
    answer "yes" when the slot value matches the image -- flipped when `negated`.
    """

    pattern: str
    slot: str | None  # "colour", "shape" or None
    asks: str
    negated: bool

    def fill(self, value: str | None) -> str:
        """The question with the slot filled by `value`."""
        if self.slot is None:
            return self.pattern
        return self.pattern.replace("{" + self.slot + "}", value)

    def answer(self, colour: str, shape: str, value: str | None) -> str:
        """The answer for an image of one `colour` `shape`, asked with slot `value`."""
        if self.asks == "colour":
            return colour
        if self.asks == "shape":
            return shape
        present = value == (colour if self.slot == "colour" else shape)
        return "yes" if present != self.negated else "no"


def load_easyvqa(split: str) -> list[VQAExample]:
    """All easy-VQA questions of `split` ("train" or "test") with their image paths."""
    import easy_vqa  # optional dependency: the `data` extra

    if split == "train":
        questions, answers, image_ids = easy_vqa.get_train_questions()
        paths = easy_vqa.get_train_image_paths()
    elif split == "test":
        questions, answers, image_ids = easy_vqa.get_test_questions()
        paths = easy_vqa.get_test_image_paths()
    else:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return [VQAExample(paths[i], None, q, a) for q, a, i in zip(questions, answers, image_ids)]


def split_train_validation(
    examples: Sequence[VQAExample], val_fraction: float = 0.1, seed: int = 0
) -> tuple[list[VQAExample], list[VQAExample]]:
    """(train, validation) split by image: every question of an image lands on the same side."""
    keys = list(dict.fromkeys(example.image_key for example in examples))  # first-seen order
    random.Random(seed).shuffle(keys)
    validation_keys = set(keys[: round(len(keys) * val_fraction)])
    train = [e for e in examples if e.image_key not in validation_keys]
    validation = [e for e in examples if e.image_key in validation_keys]
    return train, validation


def template_of(question: str) -> tuple[str, str | None, str | None]:
    """(pattern, slot, value): the question with its colour or shape word replaced by a slot."""
    for slot, words in (("colour", COLOURS), ("shape", SHAPES)):
        for word in words:
            pattern, replaced = re.subn(rf"\b{word}\b", "{" + slot + "}", question)
            if replaced:
                return pattern, slot, word
    return question, None, None


def classify_template(pattern: str, slot: str | None) -> QuestionTemplate:
    """How a pattern's answer is determined: what-colour, what-shape, or (negated) presence."""
    words = f" {pattern.rstrip('?')} "
    if pattern.startswith("what"):
        asks = "colour" if " color " in words or " colour " in words else "shape"
        return QuestionTemplate(pattern, slot, asks, negated=False)
    if slot is None:
        raise ValueError(f"yes/no question without a colour or shape: {pattern!r}")
    negated = " not " in words or " no " in words
    return QuestionTemplate(pattern, slot, "presence", negated)


def question_templates(examples: Iterable[VQAExample]) -> list[QuestionTemplate]:
    """The distinct templates of the questions, sorted by pattern."""
    patterns = {template_of(example.question)[:2] for example in examples}
    return [classify_template(pattern, slot) for pattern, slot in sorted(patterns, key=str)]


@functools.lru_cache(maxsize=1)
def easyvqa_templates() -> tuple[QuestionTemplate, ...]:
    """The templates of easy-VQA's train questions (loaded once)."""
    return tuple(question_templates(load_easyvqa("train")))


def slot_value(rng: random.Random, template: QuestionTemplate, colour: str, shape: str) -> str | None:
    """What fills the slot: the true attribute for what-questions, true or false half the time otherwise."""
    if template.slot is None:
        return None
    truth, choices = (colour, tuple(COLOURS)) if template.slot == "colour" else (shape, SHAPES)
    if template.asks != "presence" or rng.random() < 0.5:
        return truth
    return rng.choice([word for word in choices if word != truth])


def generate_vqa(
    rng: random.Random,
    n_images: int,
    image_size: int = 64,
    templates: Sequence[QuestionTemplate] | None = None,
    questions_per_image: int = QUESTIONS_PER_IMAGE,
) -> list[VQAExample]:
    """Generated single-shape images with `questions_per_image` distinct-template questions each.

    `templates` defaults to those of easy-VQA's train questions.
    """
    templates = list(easyvqa_templates() if templates is None else templates)
    examples = []
    for _ in range(n_images):
        image, scene = generate_single_shape(rng, image_size)
        obj = scene.objects[0]
        for template in rng.sample(templates, min(questions_per_image, len(templates))):
            value = slot_value(rng, template, obj.colour, obj.shape)
            answer = template.answer(obj.colour, obj.shape, value)
            examples.append(VQAExample(None, image, template.fill(value), answer))
    return examples


def attributes_from_answers(examples: Iterable[VQAExample]) -> dict[str, dict[str, str]]:
    """image_key -> {"colour": ..., "shape": ...} read from answers that name a colour or a shape."""
    attributes: dict[str, dict[str, str]] = {}
    for example in examples:
        if example.answer in COLOURS:
            attributes.setdefault(example.image_key, {})["colour"] = example.answer
        elif example.answer in SHAPES:
            attributes.setdefault(example.image_key, {})["shape"] = example.answer
    return attributes


def measure_shape_attributes(image: Image.Image) -> tuple[str, str]:
    """(colour, shape) of a single-shape image, measured from its pixels.

    The background is the border's most common colour; the colour is the palette entry nearest
    the most common clearly-foreground pixel. Each pixel's coverage (0..1, antialiased edges
    partly) gives the shape's area and its bounding box; the area fills a triangle's box about
    0.5, a circle's about 0.79 and a rectangle's all of it.
    """
    pixels = np.asarray(image.convert("RGB"), dtype=np.int32)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    values, counts = np.unique(border, axis=0, return_counts=True)
    background = values[counts.argmax()]
    distance = np.abs(pixels - background).sum(axis=-1)
    values, counts = np.unique(pixels[distance > 60], axis=0, return_counts=True)
    shape_rgb = values[counts.argmax()]
    colour = min(COLOURS, key=lambda name: np.abs(np.array(COLOURS[name]) - shape_rgb).sum())
    coverage = np.clip(distance / max(1, np.abs(shape_rgb - background).sum()), 0.0, 1.0)
    box_area = coverage.max(axis=1).sum() * coverage.max(axis=0).sum()
    fill = coverage.sum() / box_area
    return colour, "triangle" if fill < 0.7 else "circle" if fill < 0.93 else "rectangle"


@dataclass(frozen=True)
class RuleAgreement:
    """How many answers the template answer rule reproduces."""

    agreeing: int
    total: int
    attributes_measured: int  # images whose colour or shape came from pixels, not answers

    @property
    def fraction(self) -> float:
        return self.agreeing / self.total if self.total else 0.0


def image_attributes(examples: Sequence[VQAExample]) -> tuple[dict[str, tuple[str, str]], int]:
    """image_key -> (colour, shape) from the answers, measured from pixels where no answer tells."""
    from_answers = attributes_from_answers(examples)
    attributes, measured = {}, 0
    for key, example in {e.image_key: e for e in examples}.items():
        known = from_answers.get(key, {})
        if "colour" not in known or "shape" not in known:
            colour, shape = measure_shape_attributes(example.load_image())
            known = {"colour": colour, "shape": shape, **known}
            measured += 1
        attributes[key] = (known["colour"], known["shape"])
    return attributes, measured


def answer_rule_agreement(
    examples: Sequence[VQAExample], templates: Sequence[QuestionTemplate] | None = None
) -> RuleAgreement:
    """How many of the examples' answers the templates' answer rule reproduces."""
    templates = question_templates(examples) if templates is None else templates
    by_pattern = {template.pattern: template for template in templates}
    attributes, measured = image_attributes(examples)
    agreeing = Counter()
    for example in examples:
        pattern, _, value = template_of(example.question)
        colour, shape = attributes[example.image_key]
        agreeing[by_pattern[pattern].answer(colour, shape, value) == example.answer] += 1
    return RuleAgreement(agreeing[True], len(examples), measured)
