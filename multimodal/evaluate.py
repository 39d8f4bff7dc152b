"""Held-out evaluation of a checkpoint, written to its eval.json.

    python -m multimodal.evaluate multimodal/checkpoints/lensq-tiny
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from pathlib import Path

import torch
from tqdm import tqdm

from .data.easyvqa import load_easyvqa
from .data.scenes import caption_matches, generate_scene, generate_single_shape
from .data.shapes import COLOURS, SHAPES
from .phrasings import held_out_phrases
from .pipeline import Pipeline, load_pipeline

CAPTION_TEST_SEED = 9_000_001
ZERO_SHOT_TEST_SEED = 9_000_002
YES_NO = {"yes", "no"}


def batched(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


def easyvqa_accuracy(pipe: Pipeline, examples, batch_size: int = 128) -> dict:
    """Exact match on easy-VQA questions; also split by answer kind (shape, colour, yes/no)."""
    predictions: list[str] = []
    image_cache: dict[str, object] = {}
    for chunk in tqdm(list(batched(examples, batch_size)), desc="easy-VQA", mininterval=10):
        images = [image_cache.setdefault(e.image_key, e.load_image()) for e in chunk]
        predictions += pipe.answer(images, [e.question for e in chunk])
    kinds = {"shape": set(SHAPES), "colour": set(COLOURS), "yes/no": YES_NO}
    result = {"n": len(examples), "exact_match": _mean(p == e.answer for p, e in zip(predictions, examples))}
    for kind, answers in kinds.items():
        pairs = [(p, e.answer) for p, e in zip(predictions, examples) if e.answer in answers]
        result[f"exact_match_{kind}"] = _mean(p == a for p, a in pairs)
    return result


def caption_accuracy(pipe: Pipeline, n: int = 1000, batch_size: int = 128) -> dict:
    rng = random.Random(CAPTION_TEST_SEED)
    scenes = [generate_scene(rng) for _ in range(n)]
    captions: list[str] = []
    for chunk in batched(scenes, batch_size):
        captions += pipe.caption([image for image, _ in chunk])
    matches = [caption_matches(c, scene) for c, (_, scene) in zip(captions, scenes)]
    examples = [{"caption": c, "truth": dict((f"{k[0]} {k[1]}", v) for k, v in s.counts().items())} for c, (_, s) in list(zip(captions, scenes))[:5]]
    return {"n": n, "seed": CAPTION_TEST_SEED, "set_match": _mean(matches), "examples": examples}


def zero_shot_accuracy(pipe: Pipeline, n: int = 1000) -> dict:
    rng = random.Random(ZERO_SHOT_TEST_SEED)
    colour_phrases, shape_phrases = held_out_phrases(list(COLOURS), list(SHAPES))
    samples = [generate_single_shape(rng) for _ in range(n)]
    images = [image for image, _ in samples]
    truth = [scene.objects[0] for _, scene in samples]
    colour_labels, shape_labels = list(colour_phrases.values()), list(shape_phrases.values())
    colour_pred = [r["label"] for r in pipe.classify(images, [colour_labels] * n)]
    shape_pred = [r["label"] for r in pipe.classify(images, [shape_labels] * n)]
    return {
        "n": n, "seed": ZERO_SHOT_TEST_SEED, "colour_phrasings": colour_labels, "shape_phrasings": shape_labels,
        "colour_top1": _mean(p == colour_phrases[o.colour] for p, o in zip(colour_pred, truth)),
        "shape_top1": _mean(p == shape_phrases[o.shape] for p, o in zip(shape_pred, truth)),
    }


def real_photos() -> dict:
    """scikit-image's and scikit-learn's bundled photos (public domain / CC0)."""
    from PIL import Image
    from skimage import data as skdata
    from sklearn.datasets import load_sample_images

    photos = {name: Image.fromarray(getattr(skdata, name)()) for name in ("astronaut", "chelsea", "coffee", "rocket", "camera")}
    samples = load_sample_images()
    for name, array in zip(("china", "flower"), samples.images):
        photos[name] = Image.fromarray(array)
    return photos


def real_photo_check(pipe: Pipeline) -> dict:
    photos = real_photos()
    names, images = list(photos), list(photos.values())
    captions = pipe.caption(images)
    answers = pipe.answer(images, ["what color is the shape?"] * len(images))
    moods = pipe.sentiment(images, ["a photo i took today"] * len(images))
    classes = pipe.classify(images, [["a person", "a cat", "a cup", "a rocket"]] * len(images))
    well_formed = all(isinstance(c, str) for c in captions + answers) and all(
        abs(sum(m["probabilities"].values()) - 1) < 1e-3 and abs(sum(c["scores"].values()) - 1) < 1e-3 for m, c in zip(moods, classes)
    )
    return {"well_formed": well_formed, "outputs": {n: {"caption": c, "answer": a, "sentiment": m["label"], "classify": k["label"]}
                                                    for n, c, a, m, k in zip(names, captions, answers, moods, classes)},
            "note": "no quality claim: the model was trained on synthetic shapes only"}


def int8_comparison(folder: Path, fp32: Pipeline, examples, fp32_accuracy: float, repeats: int = 5) -> dict:
    """Speed (median of `repeats` side-by-side runs on 256 questions) and accuracy of int8 vs float32 on CPU."""
    int8 = load_pipeline(folder, device="cpu", quantize="int8")
    timing_set = examples[:256]
    images = [e.load_image() for e in timing_set]
    questions = [e.question for e in timing_set]
    times = {"float32": [], "int8": []}
    for _ in range(repeats):
        for name, pipe in (("float32", fp32), ("int8", int8)):
            started = time.perf_counter()
            for start in range(0, len(images), 64):
                pipe.answer(images[start : start + 64], questions[start : start + 64])
            times[name].append(time.perf_counter() - started)
    accuracy = easyvqa_accuracy(int8, examples)["exact_match"]
    speedup = statistics.median(times["float32"]) / statistics.median(times["int8"])
    return {"speedup_median": round(speedup, 3), "seconds_float32": times["float32"], "seconds_int8": times["int8"],
            "easyvqa_exact_match_int8": accuracy, "easyvqa_exact_match_float32": fp32_accuracy,
            "accuracy_change": accuracy - fp32_accuracy, "timing_questions": len(timing_set), "batch_size": 64}


def evaluate_checkpoint(folder: Path, sentiment: dict | None = None, vqa_limit: int | None = None, int8: bool = True) -> dict:
    folder = Path(folder)
    torch.manual_seed(0)
    pipe = load_pipeline(folder, device="cpu")
    test = load_easyvqa("test")[:vqa_limit] if vqa_limit else load_easyvqa("test")
    previous = json.loads((folder / "eval.json").read_text()) if (folder / "eval.json").exists() else {}
    metrics = {"easyvqa_test": easyvqa_accuracy(pipe, test)}
    metrics["captions_heldout"] = caption_accuracy(pipe)
    metrics["zero_shot_heldout"] = zero_shot_accuracy(pipe)
    metrics["real_photos"] = real_photo_check(pipe)
    train_report = folder / "train_report.json"
    trained = json.loads(train_report.read_text()) if train_report.exists() else {}
    sentiment = sentiment or trained.get("stages", {}).get("sentiment")
    if sentiment is not None:
        metrics["sentiment_heldout"] = {k: sentiment[k] for k in ("sizes", "test_seed")} | {
            v: sentiment[v]["test"] for v in ("fused", "text_only", "image_only")}
    elif "sentiment_heldout" in previous.get("metrics", {}):
        metrics["sentiment_heldout"] = previous["metrics"]["sentiment_heldout"]
    if int8:
        metrics["int8_cpu"] = int8_comparison(folder, pipe, test, metrics["easyvqa_test"]["exact_match"])
    commands = {
        "train": trained.get("command") or previous.get("commands", {}).get("train"),
        "evaluate": f"python -m multimodal.evaluate {folder.as_posix()}",
    }
    note = trained.get("command_note") or previous.get("commands", {}).get("train_note")
    if note:
        commands["train_note"] = note
    report = {
        "model_version": pipe.model_version,
        "metrics": metrics,
        "commands": commands,
        "machine": {"cpu_threads": torch.get_num_threads(), "platform": platform.platform(), "torch": torch.__version__},
    }
    (folder / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: _headline(v) for k, v in metrics.items()}, indent=2))
    return report


def _headline(section: dict) -> dict:
    return {k: v for k, v in section.items() if isinstance(v, (int, float, bool))}


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m multimodal.evaluate", description="held-out evaluation → eval.json")
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--no-int8", action="store_true")
    args = parser.parse_args(argv)
    evaluate_checkpoint(args.checkpoint, int8=not args.no_int8)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
