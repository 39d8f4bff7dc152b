"""Tests for multimodal.data: scenes and captions, faces, easy-VQA, sentiment pairs, the JSONL loader."""

from __future__ import annotations

import itertools
import json
import random
import re
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from multimodal.data import (
    COLOURS,
    EASYVQA_ANSWERS,
    MOUTHS,
    SENTIMENT_LABELS,
    SHAPES,
    JsonlError,
    Scene,
    SceneObject,
    answer_rule_agreement,
    caption_for,
    caption_matches,
    combined_label,
    draw_face,
    generate_sentence,
    generate_single_shape,
    generate_vqa,
    load_easyvqa,
    load_jsonl,
    measure_shape_attributes,
    parse_caption,
    question_templates,
    scene_dataset,
    sentiment_dataset,
    sentiment_vocabulary,
    split_train_validation,
)
from multimodal.data.scenes import boxes_overlap, layout_scene
from multimodal.data.sentiment import SLOT_WORDS, TEMPLATES


def random_scenes(count: int, seed: int) -> list[Scene]:
    rng = random.Random(seed)
    return [layout_scene(rng) for _ in range(count)]


@pytest.fixture(scope="module")
def easyvqa_train():
    pytest.importorskip("easy_vqa")  # the optional `data` extra
    return load_easyvqa("train")


# --- shapes and scenes -------------------------------------------------------------------------


def test_palette_is_easyvqas_eight_colours_measured_from_its_pixels(easyvqa_train):
    assert sorted(COLOURS) == sorted(["red", "green", "blue", "black", "gray", "teal", "brown", "yellow"])
    assert set(COLOURS) | set(SHAPES) | {"yes", "no"} == set(EASYVQA_ANSWERS)
    colour_answers = {e.image_path: e.answer for e in easyvqa_train if e.answer in COLOURS}
    for image_path, colour in itertools.islice(colour_answers.items(), 60):
        pixels = np.asarray(Image.open(image_path).convert("RGB")).reshape(-1, 3)
        values, counts = np.unique(pixels, axis=0, return_counts=True)
        shape_rgb = [tuple(int(c) for c in v) for v in values[np.argsort(-counts)][:2]]
        assert COLOURS[colour] in shape_rgb  # background and shape are the two commonest colours


def test_scenes_hold_one_to_four_objects_inside_the_image_without_overlap():
    scenes = random_scenes(400, seed=1)
    assert Counter(len(s.objects) for s in scenes).keys() == {1, 2, 3, 4}
    assert min(Counter(len(s.objects) for s in scenes).values()) > 60  # uniform, roughly
    for scene in scenes:
        for obj in scene.objects:
            x0, y0, x1, y1 = obj.box
            assert 0 <= x0 and 0 <= y0 and x1 <= 64 and y1 <= 64
            assert min(obj.width, obj.height) >= 12 - 1e-9
        for first, second in itertools.combinations(scene.objects, 2):
            assert not boxes_overlap(first.box, second.box)


def test_generated_scene_image_is_rgb_of_requested_size():
    for size in (64, 96):
        image, scene = scene_dataset(1, seed=size, image_size=size)[0][:2]
        assert image.mode == "RGB" and image.size == (size, size) and scene.image_size == size
        assert min(min(o.width, o.height) for o in scene.objects) >= 12 * size / 64 - 1e-9


def test_caption_round_trips_the_true_counts_for_300_scenes():
    for scene in random_scenes(300, seed=2):
        caption = caption_for(scene)
        assert parse_caption(caption) == scene.counts(), caption
        assert caption_matches(caption, scene)


def test_caption_format_on_hand_built_scenes():
    one = Scene((SceneObject("rectangle", "green", 20, 30, 30),), 64)
    assert caption_for(one) == "one green rectangle."
    three = Scene(
        (
            SceneObject("circle", "red", 12, 10, 30),
            SceneObject("triangle", "blue", 12, 30, 34),
            SceneObject("circle", "red", 12, 50, 10),
        ),
        64,
    )
    assert caption_for(three) == "two red circles and a blue triangle. a red circle is left of the blue triangle."
    stacked = Scene(
        (
            SceneObject("triangle", "gray", 14, 20, 10),
            SceneObject("circle", "teal", 14, 22, 40),
            SceneObject("rectangle", "yellow", 14, 50, 25),
        ),
        64,
    )
    assert caption_for(stacked) == (
        "a gray triangle, a teal circle and a yellow rectangle. the gray triangle is above the teal circle."
    )
    below = Scene((SceneObject("circle", "black", 14, 10, 50), SceneObject("circle", "brown", 14, 12, 10)), 64)
    assert caption_for(below).endswith("the black circle is below the brown circle.")


def test_caption_matches_rejects_wrong_captions():
    scene = Scene((SceneObject("circle", "red", 12, 10, 30), SceneObject("circle", "red", 12, 40, 30)), 64)
    assert caption_matches("two red circles. a red circle is left of a red circle.", scene)
    for wrong in ("a red circle.", "two blue circles.", "two red triangles.", "two red circles and a red circle.",
                  "one red circle. a red circle and a red circle.", "", "red circles"):  # fmt: skip
        assert not caption_matches(wrong, scene), wrong


def test_parse_caption_reads_what_it_can_from_junk():
    assert parse_caption(None) == Counter()
    assert parse_caption("!!! ?? 42") == Counter()
    assert parse_caption("Two RED circles, blah, and 3 grey triangles") == Counter(
        {("red", "circle"): 2, ("gray", "triangle"): 3}
    )
    assert parse_caption("a green circle and a purple square. two red circles.") == Counter({("green", "circle"): 1})


def test_datasets_are_deterministic_by_seed():
    first, again, other = scene_dataset(6, seed=3), scene_dataset(6, seed=3), scene_dataset(6, seed=4)
    assert [c for _, _, c in first] == [c for _, _, c in again]
    assert all(a.tobytes() == b.tobytes() for (a, _, _), (b, _, _) in zip(first, again))
    assert [s for _, s, _ in first] != [s for _, s, _ in other]
    texts = [e.text for e in sentiment_dataset(30, seed=5)]
    assert texts == [e.text for e in sentiment_dataset(30, seed=5)]
    assert texts != [e.text for e in sentiment_dataset(30, seed=6)]


def test_single_shapes_are_64px_rgb_easyvqa_sized_and_recognisable():
    rng = random.Random(7)
    for _ in range(60):
        image, scene = generate_single_shape(rng)
        (obj,) = scene.objects
        assert image.mode == "RGB" and image.size == (64, 64)
        assert 0.2 * 64 <= obj.size <= 0.55 * 64
        assert measure_shape_attributes(image) == (obj.colour, obj.shape)


def test_faces_render_for_each_mouth_and_differ_only_below_the_centre():
    images = {mouth: draw_face(random.Random(11), mouth) for mouth in MOUTHS}
    for image in images.values():
        assert image.mode == "RGB" and image.size == (64, 64)
    pixels = {mouth: np.asarray(image, dtype=np.int32) for mouth, image in images.items()}
    background = pixels["flat"][0, 0]
    face_rows = np.nonzero((np.abs(pixels["flat"] - background).sum(-1) > 40).any(axis=1))[0]
    face_centre = (face_rows.min() + face_rows.max()) / 2
    for first, second in itertools.combinations(MOUTHS, 2):
        changed_rows = np.nonzero((np.abs(pixels[first] - pixels[second]).sum(-1) > 60).any(axis=1))[0]
        assert len(changed_rows) >= 2, (first, second)
        assert changed_rows.min() > face_centre  # the mouths are the only difference
    with pytest.raises(ValueError):
        draw_face(random.Random(0), "grin")


# --- easy-VQA ---------------------------------------------------------------------------------


def test_easyvqa_loads_with_its_published_sizes_and_answers(easyvqa_train):
    assert len(easyvqa_train) == 38_575
    assert len({e.image_path for e in easyvqa_train}) == 4_000
    assert len(load_easyvqa("test")) == 9_673
    from easy_vqa import get_answers

    assert list(EASYVQA_ANSWERS) == get_answers()
    assert easyvqa_train[0].load_image().mode == "RGB"


def test_answer_rule_reproduces_the_train_answers(easyvqa_train):
    templates = question_templates(easyvqa_train)
    assert len(templates) == 24
    assert {t.asks for t in templates} == {"colour", "shape", "presence"}
    agreement = answer_rule_agreement(easyvqa_train, templates)
    print(
        f"easy-VQA answer rule: {agreement.agreeing}/{agreement.total} train answers = {agreement.fraction:.4%} "
        f"({agreement.attributes_measured} images measured from pixels)"
    )
    assert agreement.total == 38_575
    assert agreement.fraction >= 0.999


def test_split_train_validation_shares_no_image(easyvqa_train):
    train, validation = split_train_validation(easyvqa_train, val_fraction=0.1, seed=0)
    train_images, validation_images = {e.image_path for e in train}, {e.image_path for e in validation}
    assert not train_images & validation_images
    assert len(validation_images) == 400 and len(train) + len(validation) == len(easyvqa_train)
    again = split_train_validation(easyvqa_train, val_fraction=0.1, seed=0)[1]
    assert [e.question for e in again] == [e.question for e in validation]


def test_generated_vqa_follows_the_easyvqa_templates_and_rule(easyvqa_train):
    templates = question_templates(easyvqa_train)
    examples = generate_vqa(random.Random(8), 40, templates=templates)
    assert len(examples) == 400
    assert {e.answer for e in examples} <= set(EASYVQA_ANSWERS)
    assert {t.pattern for t in question_templates(examples)} <= {t.pattern for t in templates}
    assert answer_rule_agreement(examples, templates).fraction == 1.0
    train, validation = split_train_validation(examples, val_fraction=0.25, seed=1)
    assert not {id(e.image) for e in train} & {id(e.image) for e in validation}
    assert len({id(e.image) for e in validation}) == 10


# --- sentiment --------------------------------------------------------------------------------


def test_combined_label_rule():
    assert combined_label("neutral", "neutral") == "neutral"
    assert combined_label("positive", "neutral") == "positive"
    assert combined_label("neutral", "negative") == "negative"
    assert combined_label("negative", "negative") == "negative"
    assert combined_label("positive", "negative") == "neutral"  # conflict is mixed -> neutral
    assert combined_label("negative", "positive") == "neutral"


def test_sentiment_subsets_follow_the_rule_and_are_balanced():
    examples = sentiment_dataset(200, seed=9)
    assert Counter(e.subset for e in examples) == {
        "image_decides": 50, "text_decides": 50, "agree": 40, "neutral": 30, "conflict": 30,
    }  # fmt: skip
    assert Counter(e.label for e in examples) == {"positive": 70, "negative": 70, "neutral": 60}
    for e in examples:
        assert e.label in SENTIMENT_LABELS and e.image.size == (64, 64) and e.image.mode == "RGB"
        pair = (e.image_sentiment, e.text_sentiment)
        if e.subset == "image_decides":
            assert e.text_sentiment == "neutral" and e.label == e.image_sentiment != "neutral"
        elif e.subset == "text_decides":
            assert e.image_sentiment == "neutral" and e.label == e.text_sentiment != "neutral"
        elif e.subset == "agree":
            assert e.image_sentiment == e.text_sentiment == e.label != "neutral"
        elif e.subset == "neutral":
            assert pair == ("neutral", "neutral") and e.label == "neutral"
        else:
            assert set(pair) == {"positive", "negative"} and e.label == "neutral"


def test_neutral_sentences_carry_no_sentiment_words():
    sentiment_words = {w for slot, words in SLOT_WORDS.items() if slot[:4] in ("pos_", "neg_") for w in words}
    sentiment_words |= {"best", "worst", "love", "hate", "hated", "loving", "recommend", "ruined", "avoid"}
    rng = random.Random(10)
    for _ in range(500):
        assert not set(generate_sentence(rng, "neutral").split()) & sentiment_words


def test_sentiment_vocabulary_covers_every_generated_word():
    assert all(len(TEMPLATES[polarity]) >= 40 for polarity in ("positive", "negative", "neutral"))
    vocabulary = set(sentiment_vocabulary())
    rng = random.Random(12)
    for polarity in ("positive", "negative", "neutral") * 300:
        sentence = generate_sentence(rng, polarity)
        assert re.fullmatch(r"[a-z0-9' ]+", sentence), sentence
        assert set(sentence.split()) <= vocabulary, sentence


# --- JSONL ------------------------------------------------------------------------------------


@pytest.fixture
def image_folder(tmp_path):
    (tmp_path / "photos").mkdir()
    for name in ("cat.png", "dog.png"):
        Image.new("RGB", (8, 8), (200, 100, 50)).save(tmp_path / "photos" / name)
    return tmp_path


def write_jsonl(path, lines: list[str]):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_load_jsonl_reads_a_good_file(image_folder):
    absolute = str(image_folder / "photos" / "dog.png")
    path = write_jsonl(image_folder / "data.jsonl", [
        json.dumps({"image": "photos/cat.png", "text": "so happy", "label": "positive"}),
        "",
        json.dumps({"image": absolute, "question": "what color is the dog?", "answer": "brown"}),
        json.dumps({"image": "photos/dog.png", "caption": "a dog."}),
    ])  # fmt: skip
    records = load_jsonl(path)
    assert [(r.text, r.target, r.target_kind) for r in records] == [
        ("so happy", "positive", "label"),
        ("what color is the dog?", "brown", "answer"),
        (None, "a dog.", "caption"),
    ]
    assert records[0].image_path == image_folder / "photos" / "cat.png"
    assert all(r.image_path.is_file() for r in records)
    both = write_jsonl(image_folder / "both.jsonl", [json.dumps({"image": absolute, "label": "x", "caption": "y"})])
    assert load_jsonl(both, task="caption")[0].target == "y"


@pytest.mark.parametrize(
    ("bad_line", "field", "reason"),
    [
        ('{"image": "photos/cat.png", "label": ', None, "invalid JSON"),
        ('["photos/cat.png"]', None, "JSON object"),
        ('{"text": "hello", "label": "positive"}', "image", "missing"),
        ('{"image": "photos/missing.png", "label": "positive"}', "image", "no such file"),
        ('{"image": "photos/cat.png", "text": "hello"}', None, "no target"),
        ('{"image": 7, "label": "positive"}', "image", "string"),
        ('{"image": "photos/cat.png", "text": ["a"], "label": "positive"}', "text", "string"),
        ('{"image": "photos/cat.png", "label": 1}', "label", "string"),
        ('{"image": "photos/cat.png", "label": "a", "answer": "b"}', "answer", "more than one target"),
    ],
)
def test_load_jsonl_names_the_line_and_field_of_each_error(image_folder, bad_line, field, reason):
    good = json.dumps({"image": "photos/cat.png", "label": "positive"})
    path = write_jsonl(image_folder / "bad.jsonl", [good, "", good, bad_line, good])
    with pytest.raises(JsonlError) as caught:
        load_jsonl(path)
    assert caught.value.line == 4 and caught.value.field == field
    assert reason in str(caught.value) and "bad.jsonl:4" in str(caught.value)


def test_load_jsonl_requires_the_tasks_target(image_folder):
    path = write_jsonl(image_folder / "task.jsonl", [json.dumps({"image": "photos/cat.png", "caption": "a cat."})])
    with pytest.raises(JsonlError) as caught:
        load_jsonl(path, task="sentiment")
    assert caught.value.line == 1 and caught.value.field == "label"
    with pytest.raises(ValueError):
        load_jsonl(path, task="dance")
