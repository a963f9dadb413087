"""Fixtures for the ml/ tests: tiny synthetic chest-X-ray-like images and a tiny registered model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

torch.set_num_threads(1)


def synthetic_case(size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A (size, size) uint8 image with two dark 'lungs' on a bright body and its label map.

    The patient's right lung (label 1) is on the image's LEFT half.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    labels = np.zeros((size, size), np.uint8)
    cy = 0.5 + rng.uniform(-0.05, 0.05)
    for value, cx in ((1, 0.3), (2, 0.7)):
        cx += rng.uniform(-0.04, 0.04)
        inside = ((xx - cx) / rng.uniform(0.12, 0.16)) ** 2 + ((yy - cy) / rng.uniform(0.25, 0.32)) ** 2 < 1
        labels[inside] = value
    img = 0.75 - 0.5 * (labels > 0) + 0.05 * rng.standard_normal((size, size))
    return (np.clip(img, 0, 1) * 255).astype(np.uint8), labels


@pytest.fixture()
def make_case():  # noqa: ANN201
    """The :func:`synthetic_case` factory."""
    return synthetic_case


@pytest.fixture()
def synthetic_manifest(tmp_path: Path) -> Path:
    """A manifest with 12 train, 4 val and 3 test synthetic cases (non-square test images)."""
    rows = ["dataset,case,split,category,width,height,lr_labels"]
    for ds in ("synth",):
        (tmp_path / ds / "images").mkdir(parents=True)
        (tmp_path / ds / "labels").mkdir(parents=True)
    for i in range(19):
        split = "train" if i < 12 else "val" if i < 16 else "test"
        img, lab = synthetic_case(64, seed=i)
        if split == "test":
            img = np.asarray(Image.fromarray(img).resize((80, 96)))
            lab = np.asarray(Image.fromarray(lab).resize((80, 96), Image.Resampling.NEAREST))
        Image.fromarray(img).save(tmp_path / "synth" / "images" / f"c{i}.png")
        Image.fromarray(lab).save(tmp_path / "synth" / "labels" / f"c{i}.png")
        rows.append(f"synth,c{i},{split},Normal,{img.shape[1]},{img.shape[0]},1")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest


@pytest.fixture()
def tiny_model(tmp_path: Path) -> Path:
    """A small random-weight U-Net registered by a card in tmp_path; returns the .pt path."""
    from ml import LABELS
    from ml.networks import build_network
    from ml.registry import write_card

    torch.manual_seed(0)
    kwargs = {"channels": [4, 8, 16], "strides": [2, 2]}
    model = build_network("unet", 1, 3, **kwargs)
    weights = tmp_path / "weights" / "tiny_cxr.pt"
    weights.parent.mkdir()
    torch.save(model.state_dict(), weights)
    write_card(
        {"name": "tiny_cxr", "aliases": [], "modality": "cxr", "architecture": "unet", "network_kwargs": kwargs,
         "in_channels": 1, "num_classes": 3, "input_size": [64, 64], "labels": dict(LABELS),
         "preprocessing": {"low_pct": 0.5, "high_pct": 99.5}, "postprocessing": {}, "inference": {"tta_flip": True}},
        weights,
    )
    return weights
