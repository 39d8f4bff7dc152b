"""The three training stages over LensQ's corpora (easy-VQA, generated scenes, faces, sentiment posts)."""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .corpus import ImageStore, TokenizedExample, generative_batch, sample_mixture, tokenize_generative
from .data.easyvqa import load_easyvqa, split_train_validation, generate_vqa
from .data.scenes import MOUTHS, caption_for, caption_matches, draw_face, generate_scene, generate_single_shape
from .data.shapes import COLOURS, SHAPES
from .language import words_of
from .phrasings import BOTH_TEMPLATES, COLOUR_TEMPLATES, FACE_PHRASES, SHAPE_DESCRIPTIONS
from .prompts import PROMPTS
from .splice import IGNORE_INDEX, labels_for
from .trainer import LoopCfg, module_device, run_loop

VISION_LR_SCALE = 0.5
FACE_CAPTIONS = {"smile": "a smiling face.", "frown": "a frowning face.", "flat": "a face with a straight mouth."}
IMAGE_SIZE = 64


@dataclass
class Attributes:
    """What is true of a contrastive-stage image: its shape's colour and kind, or its face's mouth."""

    colour: str | None = None
    shape: str | None = None
    mouth: str | None = None


@dataclass
class Corpus:
    images: ImageStore
    vqa_train: list[tuple[int, str, str]]  # (image, question, answer) from easy-VQA's train split (90% of images)
    vqa_val: list[tuple[int, str, str]]  # the held-apart 10% of easy-VQA train images: validation only
    vqa_generated: list[tuple[int, str, str]]
    captions_train: list[tuple[int, str]]
    captions_val: list[tuple[int, object]]  # (image, Scene)
    shapes: list[tuple[int, Attributes]]  # single shapes and faces for the contrastive stage
    shapes_val: list[tuple[int, Attributes]]
    faces: list[tuple[int, str]]  # (image, mouth)
    extra_words: list[str] = field(default_factory=list)

    @classmethod
    def build(cls, seed: int, n_generated: int) -> "Corpus":
        rng = random.Random(seed)
        store = ImageStore(IMAGE_SIZE)
        train, val = split_train_validation(load_easyvqa("train"), val_fraction=0.1, seed=seed)
        vqa_train, vqa_val = _add_vqa(store, train), _add_vqa(store, val)
        vqa_generated = _add_vqa(store, generate_vqa(rng, n_generated // 4))
        captions_train, captions_val = [], []
        for k in tqdm(range(n_generated + 500), desc="scenes", mininterval=5):
            image, scene = generate_scene(rng, IMAGE_SIZE)
            index = store.add(image)
            (captions_train if k < n_generated else captions_val).append((index, caption_for(scene) if k < n_generated else scene))
        shapes, shapes_val = [], []
        for k in range(n_generated // 2 + 400):
            image, scene = generate_single_shape(rng, IMAGE_SIZE)
            obj = scene.objects[0]
            (shapes if k >= 400 else shapes_val).append((store.add(image), Attributes(obj.colour, obj.shape)))
        faces = [(store.add(draw_face(rng, mouth, IMAGE_SIZE)), mouth) for mouth in MOUTHS for _ in range(n_generated // 12)]
        shapes += [(index, Attributes(mouth=mouth)) for index, mouth in faces]
        return cls(store, vqa_train, vqa_val, vqa_generated, captions_train, captions_val, shapes, shapes_val, faces)

    def vocabulary(self) -> list[str]:
        """Every word the word-level tokenizer must know (prompts, questions, answers, captions, posts)."""
        from .data.sentiment import sentiment_vocabulary

        texts = [q + " " + a for _, q, a in self.vqa_train + self.vqa_generated] + [c for _, c in self.captions_train]
        texts += list(PROMPTS.values()) + list(FACE_CAPTIONS.values()) + list(COLOURS) + [s + "s" for s in SHAPES]
        texts += ["one two three four and is left of right above below the a an"]
        return sorted(set(words_of(texts)) | set(sentiment_vocabulary()))


def _add_vqa(store: ImageStore, examples) -> list[tuple[int, str, str]]:
    seen: dict[str, int] = {}
    rows = []
    for example in examples:
        key = example.image_key
        if key not in seen:
            seen[key] = store.add(example.load_image())
        rows.append((seen[key], example.question, example.answer))
    return rows


# ---------------------------------------------------------------- stage 1: contrastive (CLIP loss)

def random_phrase(rng: random.Random, attrs: Attributes) -> tuple[str, Attributes]:
    """A training phrase true of `attrs`, and what the phrase asserts (to find every image it is true of)."""
    if attrs.mouth is not None:
        return rng.choice(FACE_PHRASES[attrs.mouth]), Attributes(mouth=attrs.mouth)
    kind = rng.choice(("colour", "shape", "both"))
    if kind == "colour":
        return rng.choice(COLOUR_TEMPLATES).format(c=attrs.colour), Attributes(colour=attrs.colour)
    if kind == "shape":
        return rng.choice(SHAPE_DESCRIPTIONS[attrs.shape]), Attributes(shape=attrs.shape)
    return rng.choice(BOTH_TEMPLATES).format(c=attrs.colour, s=attrs.shape), Attributes(attrs.colour, attrs.shape)


def phrase_is_true(claim: Attributes, attrs: Attributes) -> bool:
    if claim.mouth is not None or attrs.mouth is not None:
        return claim.mouth == attrs.mouth
    return (claim.colour in (None, attrs.colour)) and (claim.shape in (None, attrs.shape))


def multi_positive_clip_loss(logits: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric cross-entropy where a phrase may be true of several images: soft targets.

    logits (B_images, B_texts); truth (B_images, B_texts) 1 where text j is true of image i.
    """
    to_text = truth / truth.sum(1, keepdim=True)
    to_image = truth.T / truth.T.sum(1, keepdim=True)
    return 0.5 * (F.cross_entropy(logits, to_text) + F.cross_entropy(logits.T, to_image))


def train_contrastive(model, corpus: Corpus, args, resume: Path) -> dict:
    from .pipeline import clip_tokenizer

    _freeze_all(model)
    for param in model.clip.parameters():
        param.requires_grad = True
    tokenizer, rng, mean, std = clip_tokenizer(model), random.Random(args.seed + 1), model.cfg.vision.mean, model.cfg.vision.std

    def loss_fn(step: int) -> torch.Tensor:
        return contrastive_loss(model, corpus, tokenizer, rng, mean, std)

    def validate() -> float:
        return zero_shot_validation(model, corpus, tokenizer)

    cfg = LoopCfg(steps=args.steps_contrastive, lr=5e-4, weight_decay=0.1, warmup=100, eval_every=args.eval_every,
                  patience=args.patience, seed=args.seed)
    return run_loop(model, loss_fn, validate, cfg, resume, desc="stage 1 contrastive")


def train_align(model, corpus: Corpus, args, resume: Path) -> dict:
    """Stage 2b: after stage 2 moved the vision tower, re-align the text tower to it (vision frozen)."""
    from .pipeline import clip_tokenizer

    _freeze_all(model)
    for name, param in model.clip.named_parameters():
        param.requires_grad = not name.startswith("visual.")
    tokenizer, rng, mean, std = clip_tokenizer(model), random.Random(args.seed + 3), model.cfg.vision.mean, model.cfg.vision.std

    def loss_fn(step: int) -> torch.Tensor:
        return contrastive_loss(model, corpus, tokenizer, rng, mean, std)

    cfg = LoopCfg(steps=args.steps_align, lr=3e-4, weight_decay=0.1, warmup=30, eval_every=max(50, args.eval_every // 2),
                  patience=args.patience, seed=args.seed)
    return run_loop(model, loss_fn, lambda: zero_shot_validation(model, corpus, tokenizer), cfg, resume, desc="stage 2b align")


def contrastive_loss(model, corpus: Corpus, tokenizer, rng: random.Random, mean, std, batch_size: int = 128) -> torch.Tensor:
    batch = [rng.choice(corpus.shapes) for _ in range(batch_size)]
    phrases = [random_phrase(rng, attrs) for _, attrs in batch]
    truth = torch.tensor([[float(phrase_is_true(claim, attrs)) for _, claim in phrases] for _, attrs in batch])
    logits = model.clip_similarity(corpus.images.pixels([i for i, _ in batch], mean, std), tokenizer([p for p, _ in phrases]))
    return multi_positive_clip_loss(logits, truth.to(logits.device))


@torch.no_grad()
def zero_shot_validation(model, corpus: Corpus, tokenizer) -> float:
    """Validation: mean of colour and shape top-1 on validation shapes, with training phrasings."""
    indices = [i for i, _ in corpus.shapes_val]
    pixels = corpus.images.pixels(indices, model.cfg.vision.mean, model.cfg.vision.std)
    colours, shapes = list(COLOURS), list(SHAPES)
    colour_picks = model.clip_similarity(pixels, tokenizer([f"a {c} shape" for c in colours])).argmax(1).tolist()
    shape_picks = model.clip_similarity(pixels, tokenizer([f"a {s}" for s in shapes])).argmax(1).tolist()
    colour_acc = sum(colours[k] == a.colour for k, (_, a) in zip(colour_picks, corpus.shapes_val))
    shape_acc = sum(shapes[k] == a.shape for k, (_, a) in zip(shape_picks, corpus.shapes_val))
    return 0.5 * (colour_acc + shape_acc) / len(indices)


# ---------------------------------------------------------------- stage 2: generative (VQA + captions)

def set_generative_trainable(model, train_vision: bool) -> dict[str, int]:
    """Projector always; the LM fully (from scratch) or only its LoRA weights; the vision tower on request."""
    _freeze_all(model)
    for param in model.projector.parameters():
        param.requires_grad = True
    for name, param in model.lm.named_parameters():
        param.requires_grad = model.cfg.lm.finetune == "full" or "lora_" in name
    if train_vision:
        for param in model.clip.visual.parameters():
            param.requires_grad = True
    counts = _trainable_counts(model)
    if model.cfg.lm.finetune == "lora":
        base_trainable = [n for n, p in model.lm.named_parameters() if p.requires_grad and "lora_" not in n]
        assert not base_trainable, f"base LM weights must stay frozen under LoRA: {base_trainable[:3]}"
    assert counts["text_tower"] == 0 and counts["heads"] == 0, counts
    print("trainable parameters:", counts)
    return counts


def tokenized_generative_sets(model, corpus: Corpus):
    tok, k = model.tokenizer, model.n_image_tokens
    vqa = [tokenize_generative(tok, k, i, "vqa", a, question=q) for i, q, a in corpus.vqa_train]
    generated = [tokenize_generative(tok, k, i, "vqa", a, question=q) for i, q, a in corpus.vqa_generated]
    captions = [tokenize_generative(tok, k, i, "caption", c) for i, c in corpus.captions_train]
    faces = [tokenize_generative(tok, k, i, "caption", FACE_CAPTIONS[m]) for i, m in corpus.faces]
    return [(vqa, 0.25), (generated, 0.15), (captions, 0.54), (faces, 0.06)]


def generative_loss(model, corpus: Corpus, examples: list[TokenizedExample]) -> torch.Tensor:
    ids, mask, prompt_lengths, images = generative_batch(examples, model.tokenizer.pad_token_id)
    pixels = corpus.images.pixels(images, model.cfg.vision.mean, model.cfg.vision.std)
    labels = labels_for(ids, prompt_lengths, mask).to(model.device)
    logits = model(ids.to(model.device), mask.to(model.device), model.encode_images(pixels)).logits
    return per_sequence_loss(logits, labels)


def per_sequence_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy averaged within each sequence, then over the batch.

    A token-level mean would let a 30-token caption outweigh a 1-word VQA answer thirty to one.
    logits (B, T, V), labels (B, T) with IGNORE_INDEX where no target.
    """
    shifted_logits, shifted_labels = logits[:, :-1].float(), labels[:, 1:]
    token_loss = F.cross_entropy(shifted_logits.transpose(1, 2), shifted_labels, ignore_index=IGNORE_INDEX, reduction="none")
    counted = (shifted_labels != IGNORE_INDEX).float()
    return ((token_loss * counted).sum(1) / counted.sum(1).clamp(min=1.0)).mean()


def train_generative(model, corpus: Corpus, args, resume: Path) -> dict:
    counts = set_generative_trainable(model, train_vision=args.train_vision or model.cfg.lm.finetune == "full")
    sources, rng = tokenized_generative_sets(model, corpus), random.Random(args.seed + 2)
    lr = args.lr or (1e-3 if model.cfg.lm.finetune == "full" else 3e-4)

    def loss_fn(step: int) -> torch.Tensor:
        return generative_loss(model, corpus, sample_mixture(rng, sources, args.batch_size))

    def validate() -> float:
        return generative_validation(model, corpus)

    cfg = LoopCfg(steps=args.steps_generative, lr=lr, weight_decay=0.05, warmup=150, eval_every=args.eval_every,
                  patience=args.patience, seed=args.seed)
    # the contrastively pretrained tower moves slower than the new projector and LM
    lr_scale = {"clip.visual.": VISION_LR_SCALE}
    return {"trainable": counts, **run_loop(model, loss_fn, validate, cfg, resume, desc="stage 2 generative", lr_scale=lr_scale)}


def generative_validation(model, corpus: Corpus, n_vqa: int = 600, n_captions: int = 200) -> float:
    """Mean of easy-VQA exact match (validation images) and caption set match (validation scenes)."""
    from .pipeline import Pipeline

    pipe = Pipeline(model, "validation")
    mean, std = model.cfg.vision.mean, model.cfg.vision.std
    vqa = corpus.vqa_val[:: max(1, len(corpus.vqa_val) // n_vqa)][:n_vqa]
    answers = []
    for start in range(0, len(vqa), 128):
        chunk = vqa[start : start + 128]
        answers += pipe.generate_from_pixels(corpus.images.pixels([i for i, _, _ in chunk], mean, std), "vqa",
                                             [{"question": q} for _, q, _ in chunk])
    vqa_acc = sum(p == a for p, (_, _, a) in zip(answers, vqa)) / len(vqa)
    scenes = corpus.captions_val[:n_captions]
    captions = pipe.generate_from_pixels(corpus.images.pixels([i for i, _ in scenes], mean, std), "caption", [{}] * len(scenes))
    caption_acc = sum(caption_matches(c, s) for c, (_, s) in zip(captions, scenes)) / len(scenes)
    tqdm.write(f"  validation: easy-VQA {vqa_acc:.4f}, captions {caption_acc:.4f}")
    return 0.5 * (vqa_acc + caption_acc)


# ---------------------------------------------------------------- helpers

def _freeze_all(model) -> None:
    for param in model.parameters():
        param.requires_grad = False


def _trainable_counts(model) -> dict[str, int]:
    text_tower = sum(p.numel() for n, p in model.clip.named_parameters() if p.requires_grad and not n.startswith("visual."))
    return {
        "vision_tower": sum(p.numel() for p in model.clip.visual.parameters() if p.requires_grad),
        "text_tower": text_tower,
        "projector": sum(p.numel() for p in model.projector.parameters() if p.requires_grad),
        "lm": sum(p.numel() for p in model.lm.parameters() if p.requires_grad),
        "heads": sum(p.numel() for p in model.sentiment_head.parameters() if p.requires_grad),
    }


# ---------------------------------------------------------------- stage 3: sentiment head

SENTIMENT_TEST_SEED = 7_000_003  # the held-out test split; training and validation use other seeds


@torch.no_grad()
def sentiment_feature_table(model, examples, variant: str = "fused", batch_size: int = 64) -> torch.Tensor:
    """Pooled LM features (N, 2D) of sentiment examples; 'text_only' blanks the image, 'image_only' the text."""
    from PIL import Image

    from .preprocess import images_to_batch

    blank = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (245, 245, 245))
    vision = model.cfg.vision
    rows = []
    for start in tqdm(range(0, len(examples), batch_size), desc=f"features {variant}", mininterval=10):
        chunk = examples[start : start + batch_size]
        images = [blank if variant == "text_only" else e.image for e in chunk]
        texts = ["" if variant == "image_only" else e.text for e in chunk]
        pixels = images_to_batch(images, IMAGE_SIZE, vision.mean, vision.std)
        rows.append(model.sentiment_features_for(pixels, texts).float().cpu())
    return torch.cat(rows)


def sentiment_report(head, features, labels, subsets, label_names) -> dict:
    from sklearn.metrics import classification_report, f1_score

    with torch.no_grad():
        predicted = head(features.to(module_device(head))).argmax(1).cpu()
    correct = (predicted == labels).float()
    by_subset = {s: float(correct[[k for k, x in enumerate(subsets) if x == s]].mean()) for s in sorted(set(subsets))}
    return {
        "accuracy": float(correct.mean()),
        "macro_f1": float(f1_score(labels, predicted, average="macro")),
        "accuracy_by_subset": by_subset,
        "classification_report": classification_report(labels, predicted, target_names=list(label_names), digits=4, output_dict=True),
        "classification_report_text": classification_report(labels, predicted, target_names=list(label_names), digits=4),
    }


def train_sentiment(model, corpus: Corpus, args, resume: Path) -> dict:
    """Stage 3: only the head trains (with its token adapter, if any); text-only and image-only heads as ablations."""
    import copy

    from .data.sentiment import sentiment_dataset

    _freeze_all(model)
    model.eval()
    if args.token_adapter and not model.cfg.heads.token_adapter:  # a checkpoint given one now (--init-from)
        model.cfg.heads.token_adapter = True
        model.sentiment_head = model.new_sentiment_head().to(model.device)
    names = model.cfg.heads.sentiment_labels
    splits = {"train": sentiment_dataset(args.sentiment_train_size, seed=args.seed + 10),
              "val": sentiment_dataset(500, seed=args.seed + 11),
              "test": sentiment_dataset(1500, seed=SENTIMENT_TEST_SEED)}
    labels = {k: torch.tensor([names.index(e.label) for e in v]) for k, v in splits.items()}
    report = {"sizes": {k: len(v) for k, v in splits.items()}, "test_seed": SENTIMENT_TEST_SEED,
              "token_adapter": model.cfg.heads.token_adapter}
    fresh_head = copy.deepcopy(model.sentiment_head)
    for variant in ("fused", "text_only", "image_only"):
        head = model.sentiment_head if variant == "fused" else copy.deepcopy(fresh_head)
        fit = fit_head if head.token_delta is None else fit_adapter_head
        loop, test_features = fit(model, head, splits, labels, variant, args, resume.with_name(f"{resume.stem}-{variant}.pt"))
        report[variant] = {"loop": {k: loop[k] for k in ("best_metric", "best_step", "step")},
                           "test": sentiment_report(head, test_features, labels["test"], [e.subset for e in splits["test"]], names)}
        tqdm.write(f"sentiment {variant}: test accuracy {report[variant]['test']['accuracy']:.4f}")
    print(report["fused"]["test"]["classification_report_text"])
    return report


def _head_loop_cfg(args) -> LoopCfg:
    return LoopCfg(steps=args.steps_sentiment, lr=2e-3, weight_decay=0.01, warmup=50, eval_every=100,
                   patience=args.patience + 2, seed=args.seed)


def fit_head(model, head, splits, labels, variant, args, resume) -> tuple[dict, torch.Tensor]:
    """The head alone on cached pooled features (the LM path does not depend on it); → loop report, test features."""
    device = module_device(head)
    feats = {k: sentiment_feature_table(model, v, variant).to(device) for k, v in splits.items()}
    targets = {k: v.to(device) for k, v in labels.items()}
    rng = torch.Generator().manual_seed(args.seed)

    def loss_fn(step: int) -> torch.Tensor:
        picks = torch.randint(0, len(feats["train"]), (128,), generator=rng).to(device)
        return F.cross_entropy(head(feats["train"][picks]), targets["train"][picks])

    def validate() -> float:
        with torch.no_grad():
            return float((head(feats["val"]).argmax(1) == targets["val"]).float().mean())

    for param in head.parameters():
        param.requires_grad = True
    return run_loop(head, loss_fn, validate, _head_loop_cfg(args), resume, desc=f"stage 3 sentiment ({variant})"), feats["test"]


@dataclass
class SentimentInputs:
    """A split ready for the LM: image embeddings (N, K, D), computed once, and prompt token ids per example."""

    image_embeds: torch.Tensor
    prompts: list[list[int]]


@torch.no_grad()
def sentiment_inputs(model, examples, variant: str, batch_size: int = 64) -> SentimentInputs:
    from PIL import Image

    from .preprocess import images_to_batch
    from .prompts import encode_prompt

    blank = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (245, 245, 245))
    vision, chunks = model.cfg.vision, []
    for start in range(0, len(examples), batch_size):
        images = [blank if variant == "text_only" else e.image for e in examples[start : start + batch_size]]
        chunks.append(model.encode_images(images_to_batch(images, IMAGE_SIZE, vision.mean, vision.std)))
    texts = ["" if variant == "image_only" else e.text.strip() for e in examples]
    prompts = [encode_prompt(model.tokenizer, "sentiment", model.n_image_tokens, text=t) for t in texts]
    return SentimentInputs(torch.cat(chunks), prompts)


def adapter_features(model, head, inputs: SentimentInputs, picks) -> torch.Tensor:
    """Pooled features (len(picks), 2D) through the frozen LM, differentiable in the head's token adapter."""
    from .generation import right_pad

    ids, mask = right_pad([inputs.prompts[int(i)] for i in picks], model.tokenizer.pad_token_id)
    rows = torch.as_tensor(picks, device=inputs.image_embeds.device)
    return model.sentiment_features(ids.to(model.device), mask.to(model.device), inputs.image_embeds[rows], head)


@torch.no_grad()
def adapter_feature_table(model, head, inputs: SentimentInputs, batch_size: int = 256) -> torch.Tensor:
    n = len(inputs.prompts)
    return torch.cat([adapter_features(model, head, inputs, range(s, min(n, s + batch_size))) for s in range(0, n, batch_size)])


def fit_adapter_head(model, head, splits, labels, variant, args, resume) -> tuple[dict, torch.Tensor]:
    """Head and token adapter together, through the frozen LM; → loop report, test features."""
    inputs = {k: sentiment_inputs(model, v, variant) for k, v in splits.items()}
    targets = {k: v.to(model.device) for k, v in labels.items()}
    rng = torch.Generator().manual_seed(args.seed)

    def loss_fn(step: int) -> torch.Tensor:
        picks = torch.randint(0, len(inputs["train"].prompts), (128,), generator=rng)
        return F.cross_entropy(head(adapter_features(model, head, inputs["train"], picks)),
                               targets["train"][picks.to(model.device)])

    def validate() -> float:
        with torch.no_grad():
            return float((head(adapter_feature_table(model, head, inputs["val"])).argmax(1) == targets["val"]).float().mean())

    for param in head.parameters():
        param.requires_grad = True
    loop = run_loop(head, loss_fn, validate, _head_loop_cfg(args), resume, desc=f"stage 3 sentiment ({variant}, adapter)")
    return loop, adapter_feature_table(model, head, inputs["test"])
