"""Architecture comparison at an equal training budget (``python -m ml.experiments.compare``).

For each config: train (``ml/configs/compare_*.yaml``: same data, augmentation, loss, optimiser,
wall-clock budget), package the best checkpoint under ``<out>/weights/`` (not shipped), evaluate
on the given splits at native resolution, and time single-image CPU inference at the model size.
The classical baseline is evaluated on the same splits. Results go to ``<out>/results.json`` and
a Markdown table ``<out>/results.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from ml.cxr.classical import ClassicalPredictor
from ml.cxr.bench import _time_ms
from ml.config import load_config, resolve_path
from ml.cxr.data import read_manifest
from ml.cxr.evaluation import evaluate_predictor
from ml.cxr.inference import CXRPredictor
from ml.metrics import write_json
from ml.cxr.packaging import package_checkpoint
from ml.registry import load_model
from ml.cxr.train import train_from_config

logger = logging.getLogger(__name__)

COLUMNS = ("dice_mean", "dice_p05", "left_lung_dice_mean", "iou_mean", "pixel_accuracy_mean", "hd95_mean")


def latency_ms(weights: Path, threads: int = 1) -> float:
    """Median single-image model latency (ms) at the model's input size on CPU."""
    torch.set_num_threads(threads)
    model, card = load_model(str(weights))
    x = torch.rand(1, card.in_channels, *card.input_size)
    with torch.inference_mode():
        return _time_ms(lambda: model(x), repeats=10)["median_ms"]


def with_budget(config: Path, out: Path, max_minutes: float | None = None, epochs: int | None = None) -> Path:
    """A copy of ``config`` with another budget, training into ``out/runs/<name>``.

    ``max_minutes`` sets a wall-clock budget; ``epochs`` sets a number of epochs and drops the
    wall-clock budget, so that runs on machines of different or varying speed see the same
    number of images. The copy is written to ``out/configs/`` (and into the run folder by the
    training), so the comparison stays reproducible without editing the committed configs.
    """
    if (max_minutes is None) == (epochs is None):
        raise ValueError("with_budget needs exactly one of max_minutes and epochs")
    cfg = load_config(config)
    if epochs is not None:
        cfg["train"]["epochs"], cfg["train"]["max_minutes"] = int(epochs), None
    else:
        cfg["train"]["max_minutes"] = float(max_minutes)
    cfg["output_dir"] = str(out / "runs" / cfg["name"])
    path = out / "configs" / f"{cfg['name']}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def run(configs: Sequence[Path], manifest: Path, splits: Sequence[str], out: Path, train: bool = True,
        max_minutes: float | None = None, epochs: int | None = None) -> dict[str, Any]:
    """Train/evaluate every config plus the classical baseline; returns all results.

    ``max_minutes`` or ``epochs`` overrides every config's training budget (see :func:`with_budget`).
    """
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    for config in configs:
        if max_minutes is not None or epochs is not None:
            config = with_budget(config, out, max_minutes=max_minutes, epochs=epochs)
        cfg = load_config(config)
        run_dir = resolve_path(cfg["output_dir"])
        if train:
            train_from_config(config)
        card = package_checkpoint(run_dir / "best.pt", cfg["name"], weights_dir=out / "weights",
                                  postprocessing={}, inference={"tta_flip": False})
        history = json.loads((run_dir / "summary.json").read_text())
        entry: dict[str, Any] = {"architecture": cfg["model"]["architecture"], "parameters": card.parameters,
                                 "input_size": card.input_size, "training": history,
                                 "cpu_latency_ms_1thread": latency_ms(card.weights_path)}
        predictor = CXRPredictor.from_registry(str(card.weights_path), device="cpu")
        for split in splits:
            summary = evaluate_predictor(predictor, read_manifest(manifest, [split]), out / cfg["name"] / split)
            entry[split] = {k: summary[k] for k in COLUMNS}
        results[cfg["name"]] = entry
    baseline = ClassicalPredictor()
    entry = {"architecture": "threshold + morphology", "parameters": 0}
    image = np.random.default_rng(0).integers(0, 255, (256, 256), dtype=np.uint8)
    entry["cpu_latency_ms_1thread"] = _time_ms(lambda: baseline.predict(image), repeats=10)["median_ms"]
    for split in splits:
        summary = evaluate_predictor(baseline, read_manifest(manifest, [split]), out / "classical" / split)
        entry[split] = {k: summary[k] for k in COLUMNS}
    results["classical_threshold"] = entry
    write_json(out / "results.json", results)
    (out / "results.md").write_text(markdown_table(results, splits))
    return results


def markdown_table(results: dict[str, Any], splits: Sequence[str]) -> str:
    """One row per model and split: Dice mean / p05 / left lung, IoU, pixel accuracy, HD95, params, latency."""
    lines = ["| model | split | Dice mean | Dice p05 | left-lung Dice | IoU | pixel acc. | HD95 (px) | params | CPU ms/img |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, entry in results.items():
        for split in splits:
            m = entry[split]
            lines.append(
                f"| {name} | {split} | {m['dice_mean']:.4f} | {m['dice_p05']:.4f} | {m['left_lung_dice_mean']:.4f} | "
                f"{m['iou_mean']:.4f} | {m['pixel_accuracy_mean']:.4f} | {m['hd95_mean']:.1f} | "
                f"{entry['parameters']:,} | {entry['cpu_latency_ms_1thread']:.1f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(prog="python -m ml.experiments.compare", description=__doc__)
    parser.add_argument("--configs", nargs="+", type=Path,
                        default=[Path(f"ml/configs/compare_{a}.yaml") for a in ("unet", "resunet", "attention_unet")])
    parser.add_argument("--manifest", type=Path, default=resolve_path("../shared/data/cxr/manifest.csv"))
    parser.add_argument("--splits", nargs="+", default=["test"])
    parser.add_argument("--out", type=Path, default=resolve_path("runs/compare"))
    parser.add_argument("--no-train", action="store_true", help="reuse existing run folders")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="train every config for this wall-clock budget instead of its own (runs go under OUT/runs)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="train every config for this many epochs, without a wall-clock budget (runs go under OUT/runs)")
    args = parser.parse_args(argv)
    if args.max_minutes is not None and args.epochs is not None:
        parser.error("give --max-minutes or --epochs, not both")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    results = run(args.configs, args.manifest, args.splits, args.out, train=not args.no_train,
                  max_minutes=args.max_minutes, epochs=args.epochs)
    print(markdown_table(results, args.splits))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
