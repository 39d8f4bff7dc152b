"""Checkpoint folders: save/load round-trips bit-exactly; real weights load from local files, hub off."""
import random

import open_clip
import pytest
import torch
from safetensors.torch import load_file

from multimodal import build_model, get_preset, load_model, load_pipeline, save_pretrained
from multimodal.checkpoint import checkpoint_version
from multimodal.config import ModelCfg, VisionCfg
from multimodal.data.scenes import generate_scene
from multimodal.vision import build_clip



def _outputs(pipe, images):
    return (pipe.caption(images), pipe.answer(images, ["what color is the shape?"] * len(images)),
            pipe.sentiment(images, ["what a lovely day"] * len(images)), pipe.classify(images, [["a red shape", "a circle"]] * len(images)))


def test_save_then_load_gives_identical_weights_and_outputs(tiny_pipeline, tmp_path):
    save_pretrained(tiny_pipeline.model, tmp_path / "copy")
    for part in ("vision_tower", "text_tower", "projector", "heads"):
        original = load_file(tiny_pipeline_path() / f"{part}.safetensors")
        copied = load_file(tmp_path / "copy" / f"{part}.safetensors")
        assert original.keys() == copied.keys() and all(torch.equal(original[k], copied[k]) for k in original)
    images = [generate_scene(random.Random(k))[0] for k in range(4)]
    assert _outputs(load_pipeline(tmp_path / "copy", device="cpu"), images) == _outputs(tiny_pipeline, images)
    assert checkpoint_version(tmp_path / "copy") == tiny_pipeline.model_version


def tiny_pipeline_path():
    from multimodal.config import CHECKPOINT_DIR

    return CHECKPOINT_DIR / "lensq-tiny"


def test_random_model_round_trips_with_its_word_tokenizer(random_tiny, tmp_path):
    save_pretrained(random_tiny, tmp_path / "ckpt", eval_report={"note": "random"})
    loaded = load_model(tmp_path / "ckpt")
    assert loaded.tokenizer.get_vocab() == random_tiny.tokenizer.get_vocab()
    for (name, a), (_, b) in zip(random_tiny.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name


def _small_open_clip_config():
    return {"embed_dim": 64, "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 2, "head_width": 32},
            "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1}}


def test_open_clip_weights_load_from_a_local_pretrained_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(1)
    source = open_clip.CLIP(**_small_open_clip_config())
    torch.save(source.state_dict(), tmp_path / "clip.pt")
    clip = build_clip(VisionCfg(open_clip_config=_small_open_clip_config(), pretrained=str(tmp_path / "clip.pt")))
    assert clip.visual.output_tokens
    for key, value in source.state_dict().items():
        assert torch.equal(value, clip.state_dict()[key]), key
    pooled, tokens = clip.visual(torch.zeros(1, 3, 32, 32))
    assert tokens.shape == (1, 16, 64)


def test_a_bundled_open_clip_architecture_with_a_local_file(tmp_path):
    torch.manual_seed(2)
    reference = open_clip.create_model("ViT-S-32", pretrained=None)
    torch.save(reference.state_dict(), tmp_path / "vits32.pt")
    clip = build_clip(VisionCfg(arch="ViT-S-32", pretrained=str(tmp_path / "vits32.pt")))
    key = "visual.conv1.weight"
    assert torch.equal(clip.state_dict()[key], reference.state_dict()[key])
    with pytest.raises(FileNotFoundError):
        build_clip(VisionCfg(arch="ViT-S-32", pretrained="laion2b_s34b_b79k"))  # a hub tag is refused, not fetched


def test_lm_loads_from_a_local_hf_folder_with_the_hub_off(tmp_path, monkeypatch, words):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(3)
    scratch = build_model(get_preset("lensq-tiny"), vocabulary=words)
    scratch.lm.save_pretrained(tmp_path / "lm")
    scratch.tokenizer.save_pretrained(tmp_path / "lm")
    raw = get_preset("lensq-tiny").to_dict()
    raw["lm"] = {"source": "hf", "path": str(tmp_path / "lm"), "tokenizer": "hf", "finetune": "lora",
                 "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}}
    model = build_model(ModelCfg.from_dict(raw))
    base = model.lm.get_base_model()
    assert torch.equal(base.model.embed_tokens.weight, scratch.lm.model.embed_tokens.weight)
    assert any("lora_" in n for n, _ in model.lm.named_parameters())
