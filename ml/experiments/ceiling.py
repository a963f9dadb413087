"""What the model's input size alone costs: references sent through the letterbox and back.

A perfect model at input size ``S`` would output the reference as it looks on the ``S × S``
canvas. This module letterboxes each reference's one-hot map to the canvas (area-averaged, as
the image is), brings it back to the original size the way predictions are brought back
(bilinear probabilities, argmax) and scores it against the original reference. The mean Dice
is the ceiling that input size puts on any model; the gap between it and a model's Dice is
what the model itself gets wrong.

Usage::

    python -m ml.experiments.ceiling --manifest ../shared/data/cxr/manifest.csv --split test --sizes 256 384
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ml.cxr.data import load_labels, read_manifest
from ml.cxr.evaluation import case_metrics
from ml.metrics import summarize
from ml.cxr.preprocessing import letterbox, unletterbox_probs

logger = logging.getLogger(__name__)

CLASSES = 3


def round_trip(labels: np.ndarray, size: int) -> np.ndarray:
    """``labels`` (H, W) as a perfect model at input ``size`` would return them.

    Args:
        labels: (H, W) integer labels 0 background, 1 right lung, 2 left lung.
        size: model input side.

    Returns:
        (H, W) uint8 labels after letterbox → canvas → original size.

    Raises:
        ValueError: a label outside 0..2 or a non-positive size.
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    if labels.size and int(labels.max()) >= CLASSES:
        raise ValueError(f"labels must be 0 (background), 1 (right lung) or 2 (left lung); found {int(labels.max())}")
    channels = []
    for value in range(CLASSES):
        canvas, geom = letterbox((labels == value).astype(np.float32), size)
        channels.append(canvas)
    probs = unletterbox_probs(np.stack(channels), geom)
    return np.argmax(probs, axis=0).astype(np.uint8)


def resolution_ceiling(manifest: Path, split: str, sizes: Sequence[int], limit: int | None = None) -> dict[str, Any]:
    """Mean / p05 Dice and left-lung Dice of the round trip for each size, over a manifest split.

    Args:
        manifest: CXR manifest CSV.
        split: the split to read.
        sizes: input sides to try.
        limit: evenly spaced subset of at most this many cases.

    Returns:
        ``{size: {"dice_mean", "dice_p05", "left_lung_dice_mean", "right_lung_dice_mean", "n_cases"}}``.
    """
    cases = read_manifest(manifest, [split])
    if limit is not None and limit < len(cases):
        cases = [cases[i] for i in np.linspace(0, len(cases) - 1, limit).round().astype(int)]
    out: dict[str, Any] = {}
    for size in sizes:
        rows = []
        for case in cases:
            labels = load_labels(case.label_path)
            rows.append(case_metrics(round_trip(labels, size), labels, lr_labels=case.lr_labels))
        stats = {key: summarize([row.get(key, math.nan) for row in rows], ci=False)
                 for key in ("dice", "right_lung_dice", "left_lung_dice")}
        out[str(size)] = {
            "n_cases": len(rows),
            "dice_mean": round(stats["dice"]["mean"], 4),
            "dice_p05": round(stats["dice"]["p05"], 4),
            "right_lung_dice_mean": round(stats["right_lung_dice"]["mean"], 4),
            "left_lung_dice_mean": round(stats["left_lung_dice"]["mean"], 4),
        }
        logger.info("size %d: %s", size, out[str(size)])
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: print the ceiling per size as JSON."""
    parser = argparse.ArgumentParser(prog="python -m ml.experiments.ceiling", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", type=Path, required=True, help="CXR manifest CSV")
    parser.add_argument("--split", default="test", help="split to read (default test)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256], help="model input sides (default 256)")
    parser.add_argument("--limit", type=int, default=None, help="evenly spaced subset of at most N cases")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    print(json.dumps(resolution_ceiling(args.manifest, args.split, args.sizes, args.limit), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
