"""multimodal.finetune: a tenant's fine-tune beats the base, resumes exactly, stops, and never disturbs the base."""
import json
import random
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from safetensors.torch import load as load_safetensors

from multimodal.data.scenes import generate_single_shape
from multimodal.data.tenant_sentiment import tenant_sentiment_dataset
from multimodal.finetune import TunedParts, TuneExample, TuneSettings, apply_tuned, evaluate_tuned, fine_tune

# an ironic tenant: its posts mean the opposite of what the base model learnt they mean
SENTIMENT = TuneSettings("sentiment", max_steps=24, batch_size=16, learning_rate=4e-3, warmup_steps=4, eval_every=8,
                         checkpoint_every=8, patience=3)
COLOUR_WORDS = {"red": "cherry", "green": "grass", "blue": "sky"}  # a label set the base never saw


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These small models train fastest on one thread when the cores are shared (two threads then wait on each other)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def sentiment_examples(n: int, seed: int, rule: str = "ironic") -> list[TuneExample]:
    return [TuneExample(e.image, e.text, e.label) for e in tenant_sentiment_dataset(n, seed, rule)]


def shape_examples(n: int, seed: int, target) -> list[TuneExample]:
    rng, examples = random.Random(seed), []
    while len(examples) < n:
        image, scene = generate_single_shape(rng)
        shape = scene.objects[0]
        if shape.colour in COLOUR_WORDS:
            examples.append(TuneExample(image, "", target(shape)))
    return examples


def probe_outputs(pipeline, probe: list[TuneExample]) -> dict:
    """Every task's answers on a few images: what 'unchanged' compares."""
    images = [e.image for e in probe]
    return {"caption": pipeline.caption(images), "answer": pipeline.answer(images, ["what color is the shape?"] * len(images)),
            "sentiment": pipeline.sentiment(images, [e.text for e in probe]),
            "classify": pipeline.classify(images, [["cherry", "grass", "sky", "a circle"]] * len(images))}


@pytest.fixture(scope="module")
def splits():
    return {"train": sentiment_examples(128, 1), "validation": sentiment_examples(40, 2), "test": sentiment_examples(60, 3)}


def colour_and_shape(shape) -> str:
    return f"{shape.colour} {shape.shape}"


@pytest.fixture(scope="module")
def probe(splits):
    """Two posts with faces, two shapes (what the caption versions learnt)."""
    return splits["test"][:2] + shape_examples(2, 9, colour_and_shape)


@pytest.fixture(scope="module")
def base_before(tiny_pipeline, probe):
    return probe_outputs(tiny_pipeline, probe)


@pytest.fixture(scope="module")
def requires_grad_before(tiny_pipeline):
    return [p.requires_grad for p in tiny_pipeline.model.parameters()]


@pytest.fixture(scope="module")
def sentiment_run(tiny_pipeline, splits, base_before, requires_grad_before):
    """One uninterrupted sentiment fine-tune, keeping its checkpoints and progress."""
    checkpoints, progress = {}, []
    parts = fine_tune(tiny_pipeline, SENTIMENT, splits["train"], splits["validation"], on_progress=progress.append,
                      on_checkpoint=lambda state, step: checkpoints.__setitem__(step, state))
    return {"parts": parts, "checkpoints": checkpoints, "progress": progress}


@pytest.fixture(scope="module")
def caption_parts(tiny_pipeline, base_before, requires_grad_before):
    """Two LoRA versions (a plain and an AdaLoRA one) of a tenant whose captions are '<colour> <shape>'."""
    train, validation = shape_examples(32, 4, colour_and_shape), shape_examples(8, 5, colour_and_shape)
    versions = {}
    for method, steps in (("lora", 16), ("adalora", 6)):
        settings = TuneSettings("caption", max_steps=steps, batch_size=8, learning_rate=5e-3, warmup_steps=2,
                                eval_every=8, method=method, lora_r=4)
        versions[method] = fine_tune(tiny_pipeline, settings, train, validation)
    return versions


def test_a_sentiment_fine_tune_beats_the_base_on_held_out_examples(tiny_pipeline, splits, sentiment_run):
    parts = sentiment_run["parts"]
    base = evaluate_tuned(tiny_pipeline, "sentiment", splits["test"])
    tuned = evaluate_tuned(tiny_pipeline, "sentiment", splits["test"], parts)
    assert tuned["metric"] == tuned["macro_f1"] and tuned["n"] == base["n"] == 60
    assert {"negative", "neutral", "positive", "accuracy", "macro avg"} <= set(tuned)
    assert tuned["metric"] > base["metric"] + 0.1, (base["metric"], tuned["metric"])
    json.dumps(tuned)  # stored as JSON by the worker
    report = parts.report
    assert [point["step"] for point in report["validation_curve"]] == [8, 16, 24]
    assert report["best_step"] in (8, 16, 24) and report["steps"] == 24
    assert set(load_safetensors(parts.weights)) == {"head.net.0.weight", "head.net.0.bias", "head.net.1.weight",
                                                    "head.net.1.bias", "head.net.3.weight", "head.net.3.bias",
                                                    "head.token_delta.weight"}


def test_progress_and_checkpoints_arrive_as_documented(sentiment_run):
    progress = sentiment_run["progress"]
    assert [p.step for p in progress] == list(range(1, 25)) and all(p.max_steps == 24 for p in progress)
    assert [p.step for p in progress if p.validation_metric is not None] == [8, 16, 24]
    assert progress[0].best_metric is None and progress[-1].best_metric is not None
    assert sorted(sentiment_run["checkpoints"]) == [8, 16, 24]


def test_resuming_from_a_checkpoint_ends_with_the_uninterrupted_runs_weights(tiny_pipeline, splits, sentiment_run):
    steps = []
    resumed = fine_tune(tiny_pipeline, SENTIMENT, splits["train"], splits["validation"],
                        resume_state=sentiment_run["checkpoints"][16], on_progress=lambda p: steps.append(p.step))
    assert steps == list(range(17, 25))  # continued, not restarted
    assert resumed.report["validation_curve"] == sentiment_run["parts"].report["validation_curve"]
    expected = load_safetensors(sentiment_run["parts"].weights)
    got = load_safetensors(resumed.weights)
    assert all(torch.equal(got[name], expected[name]) for name in expected)


def test_a_resume_state_from_other_settings_is_refused(tiny_pipeline, splits, sentiment_run):
    other = TuneSettings("sentiment", max_steps=40, eval_every=8, checkpoint_every=8)
    with pytest.raises(ValueError, match="other settings"):
        fine_tune(tiny_pipeline, other, splits["train"], splits["validation"], resume_state=sentiment_run["checkpoints"][8])


def test_should_stop_ends_the_run_with_none(tiny_pipeline, splits):
    calls = []

    def stop_at_third_step() -> bool:
        calls.append(1)
        return len(calls) > 3

    settings = TuneSettings("sentiment", max_steps=50, eval_every=10, checkpoint_every=0)
    train, validation = splits["train"][:32], splits["validation"][:8]
    assert fine_tune(tiny_pipeline, settings, train, validation, should_stop=stop_at_third_step) is None
    assert len(calls) == 4  # checked before every step, the run ended at the first True


def test_the_base_pipeline_is_unchanged_after_fine_tunes_and_beside_tuned_versions(
        tiny_pipeline, probe, base_before, requires_grad_before, sentiment_run, caption_parts):
    tuned = [apply_tuned(tiny_pipeline, parts) for parts in (sentiment_run["parts"], *caption_parts.values())]
    images = [e.image for e in probe]
    for version in tuned:  # use each, then ask the base again
        version.caption(images)
        version.sentiment(images, [e.text for e in probe])
    assert probe_outputs(tiny_pipeline, probe) == base_before
    assert [p.requires_grad for p in tiny_pipeline.model.parameters()] == requires_grad_before  # frozen only while training
    # a version changes only its own task: the rest is the base's
    sentiment_version = tuned[0]
    assert sentiment_version.caption(images) == base_before["caption"]
    assert sentiment_version.sentiment(images, [e.text for e in probe]) != base_before["sentiment"]


def test_two_versions_over_one_base_answer_as_each_does_alone(tiny_pipeline, probe, caption_parts, sentiment_run):
    images, texts = [e.image for e in probe], [e.text for e in probe]
    alone = {}
    for key, parts in [*caption_parts.items(), ("sentiment", sentiment_run["parts"])]:
        version = apply_tuned(tiny_pipeline, parts)
        alone[key] = (version.caption(images), version.sentiment(images, texts))
        del version
    together = {key: apply_tuned(tiny_pipeline, parts)
                for key, parts in [*caption_parts.items(), ("sentiment", sentiment_run["parts"])]}
    for _ in range(2):  # interleaved calls
        for key, version in together.items():
            assert (version.caption(images), version.sentiment(images, texts)) == alone[key], key
    assert alone["lora"][0][2:] != alone["sentiment"][0][2:]  # on the shapes the LoRA version captions differently


def test_versions_used_from_two_threads_at_once_do_not_see_each_others_overlay(tiny_pipeline, probe, caption_parts):
    images = [e.image for e in probe[2:]]
    versions = {key: apply_tuned(tiny_pipeline, parts) for key, parts in caption_parts.items()}
    versions["base"] = tiny_pipeline
    alone = {key: version.caption(images) for key, version in versions.items()}
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = [(key, pool.submit(version.caption, images)) for _ in range(4) for key, version in versions.items()]
        assert all(future.result() == alone[key] for key, future in futures)


def test_tuned_parts_round_trip_through_their_stored_columns(tiny_pipeline, probe, sentiment_run, caption_parts):
    images, texts = [e.image for e in probe], [e.text for e in probe]
    for parts in (sentiment_run["parts"], caption_parts["lora"]):
        config = json.loads(json.dumps(parts.config))  # a JSON column
        stored = TunedParts.from_stored(parts.task, bytes(parts.weights), config)
        assert stored.weights == parts.weights and stored.task == parts.task
        original, rebuilt = apply_tuned(tiny_pipeline, parts), apply_tuned(tiny_pipeline, stored)
        assert rebuilt.sentiment(images, texts) == original.sentiment(images, texts)
        assert rebuilt.caption(images) == original.caption(images)
    with pytest.raises(ValueError, match="config"):
        TunedParts.from_stored("vqa", parts.weights, config)


def test_lora_trains_only_its_overlay_and_the_projector(tiny_pipeline, probe, caption_parts):
    lm_before = {name: param.detach().clone() for name, param in tiny_pipeline.model.lm.named_parameters()}
    for method, parts in caption_parts.items():
        names = set(load_safetensors(parts.weights))
        assert names and all(n.startswith(("projector.", "lora.a.", "lora.b.", "lora.e.")) for n in names), names
        assert any(n.startswith("lora.b.model__layers__0__self_attn__q_proj") for n in names)
        assert any(n.startswith("lora.e.") for n in names) == (method == "adalora")
        assert parts.config["method"] == method and parts.config["lora"]["r"] == 4
    ranks = caption_parts["adalora"].report["ranks"]  # AdaLoRA's budget: 2/3 of the 4 x layers ranks kept
    assert len(ranks) == 12 and sum(ranks.values()) == 32 and set(ranks.values()) <= set(range(5))
    stored = load_safetensors(caption_parts["adalora"].weights)
    assert sum(int((t != 0).sum()) for n, t in stored.items() if n.startswith("lora.e.")) == 32
    assert all(torch.equal(p, lm_before[n]) for n, p in tiny_pipeline.model.lm.named_parameters())
    shapes = probe[2:]
    tuned = apply_tuned(tiny_pipeline, caption_parts["lora"]).caption([e.image for e in shapes])
    assert tuned == [e.target for e in shapes]  # learnt the tenant's "<colour> <shape>" form


def test_classify_tunes_small_adapters_that_learn_a_new_label_set(tiny_pipeline):
    def word(shape):
        return COLOUR_WORDS[shape.colour]

    train, validation, test = shape_examples(90, 6, word), shape_examples(30, 7, word), shape_examples(60, 8, word)
    settings = TuneSettings("classify", max_steps=40, eval_every=20, learning_rate=1e-2)
    parts = fine_tune(tiny_pipeline, settings, train, validation)
    assert parts.config["labels"] == ["cherry", "grass", "sky"]
    text_tower_bytes = sum(p.numel() * 4 for n, p in tiny_pipeline.model.clip.named_parameters() if not n.startswith("visual."))
    assert len(parts.weights) < text_tower_bytes / 50
    base = evaluate_tuned(tiny_pipeline, "classify", test, labels=("cherry", "grass", "sky"))
    tuned = evaluate_tuned(tiny_pipeline, "classify", test, parts)
    assert tuned["metric"] > max(0.8, base["metric"] + 0.2), (base["metric"], tuned["metric"])
    result = apply_tuned(tiny_pipeline, parts).classify([test[0].image], [["sky", "cherry"]])[0]
    assert set(result["scores"]) == {"sky", "cherry"} and result["label"] in result["scores"]


@pytest.mark.parametrize("hyperparameters, field", [
    ({"learning_rate": 0.01, "epochs": 3}, "epochs"),
    ({"max_steps": "many"}, "max_steps"),
    ({"batch_size": True}, "batch_size"),
    ({"method": "lora"}, "method"),
    ({"max_steps": 0}, "max_steps"),
])
def test_bad_hyperparameters_are_refused_by_name(hyperparameters, field):
    with pytest.raises(ValueError, match=field):
        TuneSettings.from_hyperparameters("sentiment", hyperparameters)


def test_hyperparameters_build_settings():
    settings = TuneSettings.from_hyperparameters("classify", {"max_steps": 5, "learning_rate": 1, "labels": ["a", "b"]})
    assert settings == TuneSettings("classify", max_steps=5, learning_rate=1.0, labels=("a", "b"))
    assert settings.resolved_method == "contrastive" and TuneSettings("vqa").resolved_method == "lora"


def test_unknown_labels_and_empty_splits_are_refused(tiny_pipeline, splits):
    bad = [TuneExample(splits["train"][0].image, "a post", "ecstatic")]
    with pytest.raises(ValueError, match="ecstatic"):
        fine_tune(tiny_pipeline, SENTIMENT, bad, splits["validation"])
    with pytest.raises(ValueError, match="validation"):
        fine_tune(tiny_pipeline, SENTIMENT, splits["train"], [])
