"""load_pipeline: names and folders, devices, int8 quantization, versions, and errors."""
import random

import pytest
import torch

from multimodal import load_pipeline
from multimodal.data.scenes import generate_scene


def test_int8_pipeline_quantizes_linear_layers_and_still_answers(tiny_pipeline):
    int8 = load_pipeline("lensq-tiny", device="cpu", quantize="int8")
    from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

    lm_modules = list(int8.model.lm.modules())
    assert not any(type(m) is torch.nn.Linear for m in lm_modules)
    assert sum(isinstance(m, DynamicInt8Linear) for m in lm_modules) > 0
    images = [generate_scene(random.Random(k))[0] for k in range(3)]
    assert all(isinstance(c, str) and c for c in int8.caption(images))
    assert int8.model_version == tiny_pipeline.model_version + "+int8"


def test_unknown_names_and_options_are_refused():
    with pytest.raises(FileNotFoundError, match="lensq-tiny"):
        load_pipeline("no-such-model")
    with pytest.raises(ValueError, match="quantize"):
        load_pipeline("lensq-tiny", quantize="int4")


def test_auto_device_is_cpu_float32_without_cuda(tiny_pipeline):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the CPU default is what is tested here")
    param = next(tiny_pipeline.model.parameters())
    assert param.device.type == "cpu" and param.dtype == torch.float32


def test_version_names_the_checkpoint_and_its_weights(tiny_pipeline):
    name, digest = tiny_pipeline.model_version.split("@")
    assert name == "lensq-tiny" and len(digest) == 8


def test_a_bf16_model_serves_every_method(tiny_pipeline):
    """load_pipeline casts the whole model to bf16 on CUDA; the same cast on the CPU runs every method, so a
    dtype mismatch (a float32 input against bf16 weights) shows up without a GPU."""
    bf16 = load_pipeline("lensq-tiny", device="cpu")
    bf16.model.to(torch.bfloat16)
    images = [generate_scene(random.Random(k))[0] for k in range(3)]
    assert all(isinstance(c, str) and c for c in bf16.caption(images))
    assert all(isinstance(a, str) and a for a in bf16.answer(images, ["what color is the shape?"] * 3))
    for result in bf16.sentiment(images, ["what a lovely day", "awful", "a shape"]):
        assert result["label"] in result["probabilities"]
        assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    for result in bf16.classify(images, [["circle", "triangle", "rectangle"]] * 3):
        assert sum(result["scores"].values()) == pytest.approx(1.0, abs=1e-2)
