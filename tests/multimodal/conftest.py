"""Fixtures for the model tests: a small random model and the shipped checkpoints."""
from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from multimodal import build_model, get_preset, load_pipeline  # noqa: E402
from multimodal.config import CHECKPOINT_DIR  # noqa: E402

WORDS = "caption question answer post what color is the shape red blue green circle triangle rectangle yes no a two and".split()


@pytest.fixture()
def words() -> list[str]:
    return list(WORDS)


@pytest.fixture()
def random_tiny():
    """lensq-tiny's architecture with random weights and a small vocabulary (seeded)."""
    torch.manual_seed(0)
    return build_model(get_preset("lensq-tiny"), vocabulary=WORDS).eval()


def shipped(name: str):
    if not (CHECKPOINT_DIR / name / "config.json").exists():
        pytest.fail(f"shipped checkpoint {name} is missing from multimodal/checkpoints/")
    return load_pipeline(name, device="cpu")


@pytest.fixture(scope="session")
def tiny_pipeline():
    return shipped("lensq-tiny")


@pytest.fixture(scope="session")
def smol_pipeline():
    return shipped("lensq-smol")
