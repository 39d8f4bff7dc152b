"""Training mechanics: a tiny batch is overfit; LoRA trains only the adapter; the loop stops early and resumes."""
import random

import torch

from multimodal import build_model, get_preset
from multimodal.checkpoint import attach_lora
from multimodal.corpus import ImageStore, generative_batch, tokenize_generative
from multimodal.data.scenes import caption_for, generate_scene
from multimodal.language import words_of
from multimodal.pipeline import Pipeline
from multimodal.splice import labels_for
from multimodal.stages import multi_positive_clip_loss, set_generative_trainable
from multimodal.trainer import LoopCfg, run_loop



def _tiny_corpus(model, n=4):
    rng, store = random.Random(0), ImageStore(64)
    examples = []
    for _ in range(n):
        image, scene = generate_scene(rng)
        examples.append(tokenize_generative(model.tokenizer, model.n_image_tokens, store.add(image), "caption", caption_for(scene)))
    return store, examples


def _loss(model, store, examples):
    ids, mask, prompt_lengths, images = generative_batch(examples, model.tokenizer.pad_token_id)
    pixels = store.pixels(images, model.cfg.vision.mean, model.cfg.vision.std)
    return model(ids, mask, model.encode_images(pixels), labels=labels_for(ids, prompt_lengths, mask)).loss


def test_overfitting_four_captions_drives_the_loss_down_and_reproduces_them(words):
    torch.manual_seed(0)
    rng = random.Random(0)
    scenes = [generate_scene(rng) for _ in range(4)]
    words = words + words_of(caption_for(s) for _, s in scenes)
    model = build_model(get_preset("lensq-tiny"), vocabulary=words)
    store, examples = ImageStore(64), []
    for image, scene in scenes:
        examples.append(tokenize_generative(model.tokenizer, model.n_image_tokens, store.add(image), "caption", caption_for(scene)))
    set_generative_trainable(model, train_vision=True)
    first = _loss(model, store, examples).item()
    cfg = LoopCfg(steps=150, lr=3e-3, warmup=10, eval_every=1000, patience=100)
    run_loop(model, lambda step: _loss(model, store, examples), lambda: 0.0, cfg, desc="overfit")
    model.eval()
    last = _loss(model, store, examples).item()
    assert last < 0.1 * first, (first, last)
    assert Pipeline(model, "test").caption([image for image, _ in scenes]) == [caption_for(s) for _, s in scenes]


def test_lora_trains_the_adapter_and_leaves_the_base_weights_untouched(words):
    torch.manual_seed(0)
    model = build_model(get_preset("lensq-tiny"), vocabulary=words)
    model.cfg.lm.finetune = "lora"
    model.lm = attach_lora(model.lm, model.cfg)
    base_before = {n: p.detach().clone() for n, p in model.lm.named_parameters() if "lora_" not in n}
    counts = set_generative_trainable(model, train_vision=False)
    assert counts["vision_tower"] == 0 and counts["lm"] > 0 and counts["projector"] > 0
    store, examples = _tiny_corpus(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    lora_before = {n: p.detach().clone() for n, p in model.lm.named_parameters() if "lora_B" in n}
    for _ in range(3):
        optimizer.zero_grad()
        _loss(model, store, examples).backward()
        optimizer.step()
    for name, param in model.lm.named_parameters():
        if "lora_" not in name:
            assert torch.equal(param, base_before[name]), name
    assert any(not torch.equal(p, lora_before[n]) for n, p in model.lm.named_parameters() if "lora_B" in n)


def test_loop_keeps_the_best_state_and_stops_early(tmp_path):
    layer = torch.nn.Linear(2, 1)
    metrics = iter([0.5, 0.9, 0.4, 0.3, 0.2, 0.1])
    seen = {}

    def validate():
        value = next(metrics)
        seen[value] = layer.weight.detach().clone()
        return value

    cfg = LoopCfg(steps=100, lr=0.1, warmup=1, eval_every=2, patience=3)
    state = run_loop(layer, lambda s: (layer(torch.ones(1, 2)) - 5).pow(2).sum(), validate, cfg, tmp_path / "resume.pt")
    assert state["best_metric"] == 0.9 and state["best_step"] == 4 and state["step"] == 10  # 3 worse evals: 6, 8, 10
    assert torch.equal(layer.weight, seen[0.9])


def test_loop_resumes_after_a_crash_from_its_last_validation(tmp_path):
    torch.manual_seed(0)
    layer = torch.nn.Linear(2, 1)
    cfg = LoopCfg(steps=10, lr=0.1, warmup=1, eval_every=4, patience=10)
    calls: list[int] = []

    def loss(step: int, crash_at: int | None = None):
        if step == crash_at:
            raise KeyboardInterrupt("worker died")
        calls.append(step)
        return (layer(torch.ones(1, 2)) - 5).pow(2).sum()

    try:
        run_loop(layer, lambda s: loss(s, crash_at=6), lambda: -float(loss(-1)), cfg, tmp_path / "r.pt")
    except KeyboardInterrupt:
        pass
    calls.clear()
    state = run_loop(layer, loss, lambda: -float(loss(-1)), cfg, tmp_path / "r.pt")
    assert [c for c in calls if c >= 0] == [4, 5, 6, 7, 8, 9]  # restarted after the step-4 validation
    assert state["step"] == 10


def test_multi_positive_clip_loss_prefers_true_pairs():
    truth = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    good = multi_positive_clip_loss(10 * (2 * truth - 1), truth)
    bad = multi_positive_clip_loss(10 * (1 - 2 * truth), truth)
    assert good < 0.8 < bad


def test_per_sequence_loss_weighs_each_sequence_equally():
    from multimodal.splice import IGNORE_INDEX
    from multimodal.stages import per_sequence_loss

    logits = torch.zeros(2, 5, 3)
    logits[0, :, 0] = 5.0  # row 0 predicts token 0 everywhere: right on its targets
    labels = torch.full((2, 5), IGNORE_INDEX)
    labels[0, 1:] = 0  # four targets, all right
    labels[1, 4] = 1  # one target, uniform prediction
    right = torch.nn.functional.cross_entropy(logits[0, 0:1], torch.tensor([0]))
    expected = 0.5 * (right + torch.log(torch.tensor(3.0)))
    assert torch.allclose(per_sequence_loss(logits, labels), expected, atol=1e-6)


def test_the_token_adapter_learns_text_classes_through_the_frozen_lm_and_leaves_generation_alone(random_tiny):
    model = random_tiny
    assert model.sentiment_head.token_delta is not None, "the lensq-tiny preset has a token adapter"
    for param in model.parameters():
        param.requires_grad = False
    lm_before = {n: p.detach().clone() for n, p in model.lm.named_parameters()}
    rng, store = random.Random(0), ImageStore(64)
    images = [generate_scene(rng)[0] for _ in range(6)]
    pixels = store.pixels([store.add(image) for image in images], model.cfg.vision.mean, model.cfg.vision.std)
    captions_before = Pipeline(model, "test").caption(images)
    # the class is carried by the text alone; one image for all, so only the adapter's words can tell them apart
    texts, labels = ["red circle", "blue circle", "green circle"] * 2, torch.tensor([0, 2, 1] * 2)
    head = model.sentiment_head
    for param in head.parameters():
        param.requires_grad = True
    same_image = pixels[:1].expand(len(texts), -1, -1, -1)

    def loss(step: int) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(head(model.sentiment_features_for(same_image, texts)), labels)

    run_loop(head, loss, lambda: 0.0, LoopCfg(steps=80, lr=1e-2, warmup=5, eval_every=1000, patience=100), desc="adapter")
    with torch.no_grad():
        predicted = head(model.sentiment_features_for(same_image, texts)).argmax(1)
    assert predicted.tolist() == labels.tolist()
    assert head.token_delta.weight.abs().sum() > 0
    assert all(torch.equal(p, lm_before[n]) for n, p in model.lm.named_parameters()), "the LM stays frozen"
    assert Pipeline(model, "test").caption(images) == captions_before, "generation never sees the adapter"
