"""What test-time flips and each post-processing step buy (``python -m ml.experiments.ablation``).

The network runs once per image on the image and its mirror; every variant (raw argmax,
post-processing steps, flip TTA with the right/left channels swapped back) is then applied to
the same probabilities, so the comparison is exact and cheap. Tune on ``val`` only; report
``test`` for information.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ml.cxr.data import load_image, load_labels, read_manifest
from ml.cxr.evaluation import case_metrics
from ml.cxr.inference import CXRPredictor, flip_back, labels_from_probs, softmax_np
from ml.metrics import summarize, write_json
from ml.cxr.postprocess import PostprocessConfig
from ml.cxr.preprocessing import prepare_image

logger = logging.getLogger(__name__)

NO_POST = {"keep_largest": False, "remove_specks": False, "fill_holes": False, "smooth": False, "fix_sides": False}
VARIANTS: dict[str, tuple[bool, dict[str, Any]]] = {
    "raw": (False, NO_POST),
    "largest": (False, {**NO_POST, "keep_largest": True}),
    "largest+holes": (False, {**NO_POST, "keep_largest": True, "fill_holes": True}),
    "post (largest+holes+sides)": (False, {}),
    "post+smooth": (False, {"smooth": True}),
    "tta": (True, NO_POST),
    "tta+post": (True, {}),
    "tta+post+smooth": (True, {"smooth": True}),
}


def run(model: str, manifest: Path, split: str, limit: int | None = None) -> dict[str, dict[str, float]]:
    """Evaluate every variant on one split; returns {variant: headline statistics}."""
    predictor = CXRPredictor.from_registry(model, tta_flip=False)
    cases = read_manifest(manifest, [split])
    if limit and len(cases) > limit:
        cases = [cases[int(i * len(cases) / limit)] for i in range(limit)]
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    pre = predictor.card.preprocessing
    for case in cases:
        image, target = load_image(case.image_path), load_labels(case.label_path)
        canvas, geom = prepare_image(image, predictor.size, "MONOCHROME2",
                                     float(pre.get("low_pct", 0.5)), float(pre.get("high_pct", 99.5)))
        batch = np.ascontiguousarray(np.stack([canvas, canvas[:, ::-1]])[:, None].astype(np.float32))
        probs = softmax_np(predictor.backend(batch))
        plain, tta = probs[0], 0.5 * (probs[0] + flip_back(probs[1]))
        for name, (use_tta, post) in VARIANTS.items():
            labels, _ = labels_from_probs(tta if use_tta else plain, geom, PostprocessConfig.from_dict(post))
            rows[name].append(case_metrics(labels, target))
    out: dict[str, dict[str, float]] = {}
    for name, metric_rows in rows.items():
        entry: dict[str, float] = {"n_cases": len(metric_rows)}
        for key in ("dice", "right_lung_dice", "left_lung_dice", "hd95", "sides_correct"):
            s = summarize([r[key] for r in metric_rows], ci=False)
            entry[f"{key}_mean"] = s["mean"]
            if key == "dice":
                entry["dice_p05"], entry["dice_median"] = s["p05"], s["median"]
        out[name] = entry
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: prints and writes a JSON of variant → statistics per split."""
    parser = argparse.ArgumentParser(prog="python -m ml.experiments.ablation", description=__doc__)
    parser.add_argument("--model", default="cxr")
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--splits", nargs="+", default=["val"])
    parser.add_argument("--limit", type=int, default=None, help="evenly spaced subset size per split")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True, help="JSON output file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    results = {split: run(args.model, args.manifest, split, args.limit) for split in args.splits}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, results)
    for split, variants in results.items():
        for name, entry in variants.items():
            print(f"{split:5s} {name:28s} dice {entry['dice_mean']:.4f} p05 {entry['dice_p05']:.4f} "
                  f"left {entry['left_lung_dice_mean']:.4f} hd95 {entry['hd95_mean']:.1f} sides {entry['sides_correct_mean']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
