"""Export a CT training checkpoint to shipped weights plus a model card in ``ml/weights``.

Usage::

    python -m ml.ct.packaging --checkpoint runs/ct_loco_nsclc002/best.pt --name ct_unet192_a --alias ct
    python -m ml.ct.packaging --refresh-postprocessing --name ct_unet192   # after a post-processing change
    python -m ml.ct.packaging --attach-metrics runs/train_ct/eval --name runs/candidates/ct_unet192.pt
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from ml.config import resolve_path
from ml.ct.data import read_manifest
from ml.ct.inference import HU_REFINEMENT, KEEP_FRAGMENTS_ML, RIM_THRESHOLD_RANGE_HU, HURefinement
from ml.ct.network import ARCHITECTURE, network_kwargs
from ml.ct.preprocessing import HU_WINDOW
from ml.ct.report import read_per_case
from ml.packaging import headline, update_card
from ml.registry import WEIGHTS_DIR, ModelCard, RegistryError, write_card

logger = logging.getLogger(__name__)

LICENCES = {
    "nsclc_lung1": "TCIA NSCLC-Radiomics, CC BY-NC 3.0 (non-commercial; weights inherit this term)",
    "imlab_uiip": "UIIP Minsk demo volumes, research demo use",
    "pseudo_lungdx": "TCIA Lung-PET-CT-Dx A0001 (unlabelled; classical pseudo-labels), TCIA terms",
}


class ExportError(ValueError):
    """The checkpoint cannot be exported (missing file or keys)."""


def postprocessing_steps() -> list[str]:
    """The post-processing of the shipped CT model, in words, for the model card."""
    refine = HU_REFINEMENT
    return [
        "threshold 0.5 on the model grid",
        "airway (trachea, main bronchi) removal by leak-controlled region growing from the darkest voxel of the trachea, "
        "with its wall: one model-grid voxel, widened in-plane to the input's in-plane spacing when the input is coarser "
        "than the model grid",
        "3D components, two lungs kept (eroded apart if touching)",
        f"further network components of at least {KEEP_FRAGMENTS_ML:g} mL (e.g. an apex cut off by a tumour) "
        "joined to the nearest lung",
        "fragments below a lung base (gas under the diaphragm) never joined",
        f"fragments of the network mask and air below {refine.merge_air_hu:g} HU touching a lung merged into "
        "the nearest lung",
        "gas under a diaphragm dome joined to a lung base by a thin bridge (a core of its own after 1-3 "
        "erosions, below the lung's base) cut off",
        "holes filled per slice",
        "right/left from patient x of each lung centroid",
        "bilinear resize of the probability (made to agree with the labels) back to the input grid; voxels with "
        f"probability within {refine.margin:g} of 0.5 are lung only below {_threshold_words(refine)}; holes filled",
        "each voxel takes the side of the lung it borders (the side indicator carried as far out as the probability)",
        f"pieces of lung holding no voxel above {0.5 + refine.margin:g} (partial-volume specks only the HU rule made) "
        "cleared",
    ]


def _threshold_words(refine: HURefinement) -> str:
    if refine.threshold_hu is not None:
        return f"{refine.threshold_hu:g} HU"
    low, high = RIM_THRESHOLD_RANGE_HU
    return (f"-1000 x (0.5 - {refine.rim_offset_mm:g} mm / in-plane spacing) HU, clipped to [{low:g}, {high:g}] "
            f"(the surface {refine.rim_offset_mm:g} mm outside the 50 % air boundary: about "
            f"{refine.threshold_for((1.0, 1.0, 1.0)):.0f} HU at 1 mm, {refine.threshold_for((1.0, 4.0, 4.0)):.0f} HU at 4 mm)")


def postprocessing_section() -> dict[str, Any]:
    """The card's ``postprocessing`` for the current code (what :class:`CTPredictor` reads)."""
    return {
        "network_output": {"0": "background", "1": "lung"},
        "hu_refinement": asdict(HU_REFINEMENT),
        "keep_fragments_ml": KEEP_FRAGMENTS_ML,
        "steps": postprocessing_steps(),
    }


def augmentation_words(config: dict[str, Any]) -> str:
    """The training augmentation of a CT config, in words, for the model card."""
    words = ("rotation ±15°, scale 0.8–1.2, aspect, shear, shift, left-right flip, HU gain/offset, noise, blur, "
             "low-resolution simulation")
    consolidation = float(config.get("consolidation", 0.0))
    if consolidation > 0:
        words += f", synthetic consolidation on {consolidation:.0%} of the slices"
    return words


def training_cases(config: dict[str, Any]) -> list[str]:
    """Labelled cases a CT config trains on (train splits minus exclusions), plus pseudo-labelled ones."""
    exclude = set(config.get("exclude_cases", []))
    splits = set(config.get("train_splits", ["train"]))
    cases = [r.case for r in read_manifest(resolve_path(config["manifest"]), "all")
             if r.split in splits and r.case not in exclude and r.labels is not None]
    return cases + [f"pseudo_{Path(p).name}" for p in config.get("pseudo_label", [])]


def build_card(checkpoint: dict[str, Any], name: str, aliases: list[str], loco_of: str | None,
               config_path: str) -> dict[str, Any]:
    """The model card dict for a CT checkpoint (``sha256`` is filled in when written)."""
    config = checkpoint["config"]
    context = int(config.get("context", 1))
    size = int(config.get("size", 192))
    cases = training_cases(config)
    licences = sorted({text for prefix, text in LICENCES.items() if any(c.startswith(prefix) for c in cases)})
    return {
        "name": name,
        "aliases": aliases,
        "modality": "ct",
        "description": "2D residual U-Net over axial CT slices (lung vs background) with 3D post-processing "
                       "that removes airways, keeps two lungs and assigns right/left from patient orientation.",
        "architecture": ARCHITECTURE,
        "network_kwargs": network_kwargs(config.get("network")),
        "in_channels": 2 * context + 1,
        "num_classes": 2,
        "input_size": [size, size],
        "labels": {"0": "background", "1": "right_lung", "2": "left_lung"},
        "preprocessing": {
            "orientation": "reoriented to LPS (W toward patient left, H posterior, D superior)",
            "crop": "one square in-plane box around the body (HU > -500) for the volume, 4% margin",
            "resize": f"area resampling of each slice to {size}x{size}",
            "hu_window": list(HU_WINDOW),
            "intensity": "HU clipped to the window and scaled to [-1, 1]",
            "context_slices": context,
            "channels": "slices z-1, z, z+1 (edge slices repeated)" if context == 1 else f"±{context} slices",
            "thin_slices": "slices thinner than ~2.25 mm are averaged in groups to ~3 mm and the output interpolated back",
        },
        "postprocessing": postprocessing_section(),
        "inference": {"batch_size": 16, "threads": 2},
        "training": {
            "data": "../shared/data/ct (manifest.csv)",
            "cases": cases,
            "excluded_cases": list(config.get("exclude_cases", [])),
            "loco_of": loco_of,
            "pseudo_labels": "classical method on " + ", ".join(config.get("pseudo_label", [])),
            "selection": "best mean 3D lung Dice on the val split (" + ", ".join(config.get("val_splits", ["val"])) + ")",
            "licences": licences,
            "command": f"python -m ml train --config {config_path}",
            "config": config,
            "epochs_run": int(checkpoint.get("epoch", 0)),
            "val_dice": round(float(checkpoint.get("val_dice", float("nan"))), 4),
            "schedule": (f"{config.get('max_minutes', 25)} min wall-clock budget, {config.get('threads', 1)} thread(s), "
                         f"cosine LR by elapsed time, {config.get('samples_per_epoch', 512)} slices per epoch; "
                         f"checkpoint of epoch {int(checkpoint.get('epoch', 0))}"),
            "augmentation": augmentation_words(config),
            "not_used": "kmader64 (no HU: slices rescaled to 0..1)",
        },
        "metrics": {},
    }


def export_checkpoint(checkpoint_path: Path, name: str, aliases: list[str], loco_of: str | None = None,
                      config_path: str | None = None, weights_dir: Path = WEIGHTS_DIR) -> ModelCard:
    """Write ``<weights_dir>/<name>.pt`` (float32 state_dict) and its card ``<name>.json``.

    Raises:
        ExportError: the checkpoint is missing, lacks ``state_dict``/``config``, or records no
            config file and ``config_path`` is not given.
    """
    if not Path(checkpoint_path).is_file():
        raise ExportError(f"{checkpoint_path}: checkpoint not found")
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    if "state_dict" not in checkpoint or "config" not in checkpoint:
        raise ExportError(f"{checkpoint_path}: expected a CT training checkpoint with state_dict and config")
    config_path = config_path or checkpoint.get("config_path")
    if not config_path:
        raise ExportError(f"{checkpoint_path} does not record its config file (trained before 30 Nov): "
                          "give it with --config so that the card's training command is right")
    weights_dir.mkdir(parents=True, exist_ok=True)
    weights_path = weights_dir / f"{name}.pt"
    torch.save({k: v.float() for k, v in checkpoint["state_dict"].items()}, weights_path)
    card = write_card(build_card(checkpoint, name, aliases, loco_of, config_path), weights_path)
    logger.info("exported %s (%.1f MB)", weights_path, weights_path.stat().st_size / 1e6)
    return card


def refresh_postprocessing(name: str) -> ModelCard:
    """Rewrite the ``postprocessing`` of a shipped card from the current code (weights unchanged).

    Raises:
        ml.registry.RegistryError: no such model, or its weights fail the hash check.
    """
    return update_card(name, postprocessing=postprocessing_section())


def evaluation_metrics(eval_dir: Path) -> dict[str, Any]:
    """The card's ``metrics`` from a CT evaluation folder (``python -m ml evaluate --model ct``).

    Raises:
        ExportError: the folder lacks ``summary.json`` or ``per_case.csv``.
    """
    folder = Path(eval_dir)
    if not (folder / "summary.json").is_file() or not (folder / "per_case.csv").is_file():
        raise ExportError(f"{folder}: expected summary.json and per_case.csv from python -m ml evaluate")
    summary = json.loads((folder / "summary.json").read_text())
    per_case: dict[str, dict[str, Any]] = {}
    for row in read_per_case(folder).values():
        if row["lr_labels"] == "1":
            entry = {"right": round(float(row["dice_right"]), 4), "left": round(float(row["dice_left"]), 4),
                     "volume_error_right_pct": round(float(row["volume_error_right_pct"]), 1),
                     "volume_error_left_pct": round(float(row["volume_error_left_pct"]), 1)}
        else:
            entry = {"lung": round(float(row["dice_lung"]), 4),
                     "volume_error_pct": round(float(row["volume_error_lung_pct"]), 1)}
        per_case[row["case"]] = {**entry, "evaluated_with": row["evaluated_with"],
                                 "trained_on_case": row["trained_on_case"] == "1"}
    command = (f"python -m ml evaluate --model {summary.get('model', 'ct')} --manifest {summary.get('manifest', 'CSV')} "
               f"--split {summary.get('split', 'all')} --out DIR")
    return {"evaluation": command, "all_cases": headline(summary), "per_case_dice": per_case}


def attach_metrics(name: str, eval_dir: Path) -> ModelCard:
    """Write an evaluation's results into the card of ``name`` (a name or a weights path).

    Raises:
        ExportError: the folder is not an evaluation folder.
        ml.registry.RegistryError: no such model, or its weights fail the hash check.
    """
    return update_card(name, metrics=evaluation_metrics(eval_dir))


def main(argv: list[str] | None = None) -> int:
    """CLI: export a checkpoint, refresh a card's post-processing, or attach an evaluation to it."""
    parser = argparse.ArgumentParser(prog="python -m ml.ct.packaging", description=__doc__)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--checkpoint", type=Path, help="training checkpoint to export as NAME")
    action.add_argument("--refresh-postprocessing", action="store_true",
                        help="rewrite the post-processing section of the shipped card NAME from the current code")
    action.add_argument("--attach-metrics", type=Path, metavar="EVAL_DIR",
                        help="write the results of `python -m ml evaluate` in EVAL_DIR into the card of NAME "
                             "(a name or a weights path)")
    parser.add_argument("--name", required=True)
    parser.add_argument("--alias", action="append", default=[])
    parser.add_argument("--loco-of", default=None, help="the model this leave-one-case-out fold belongs to")
    parser.add_argument("--config", default=None,
                        help="config recorded in the card (default: the one the checkpoint was trained from)")
    parser.add_argument("--weights-dir", type=Path, default=WEIGHTS_DIR,
                        help="where to write NAME.pt and its card (default ml/weights; a scratch folder for "
                        "candidates that are not shipped: evaluate them with --model DIR/NAME.pt)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    try:
        if args.refresh_postprocessing:
            card_path = refresh_postprocessing(args.name).card_path
        elif args.attach_metrics:
            card_path = attach_metrics(args.name, args.attach_metrics).card_path
        else:
            card = export_checkpoint(args.checkpoint, args.name, args.alias, args.loco_of, args.config, args.weights_dir)
            print(card.weights_path)
            return 0
    except (RegistryError, ExportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(card_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
