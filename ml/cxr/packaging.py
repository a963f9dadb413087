"""Turn a training checkpoint into a shipped weights file + model card under ``ml/weights/``.

Usage: ``python -m ml.cxr.packaging runs/cxr_default/best.pt --name cxr_resunet_256 --alias cxr``
(then fill the card's ``metrics`` with ``--metrics val=DIR test=DIR`` evaluation folders).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ml import LABELS
from ml.networks import build_network, count_parameters
from ml.cxr.postprocess import PostprocessConfig
from ml.packaging import headline, update_card
from ml.registry import WEIGHTS_DIR, ModelCard, RegistryError, load_model, write_card

logger = logging.getLogger(__name__)

CXR_DATA_LICENCES: list[dict[str, str]] = [
    {"dataset": "covidqu", "use": "train/val",
     "terms": "COVID-QU-Ex (Tahir et al., Qatar University 2021): research use; cite the COVID-QU-Ex paper"},
    {"dataset": "radiography_vp", "use": "train/val",
     "terms": "COVID-19 Radiography Database viral-pneumonia class, images from the Kermany pediatric set: CC BY 4.0"},
    {"dataset": "shenzhen", "use": "external test only",
     "terms": "Shenzhen No.3 People's Hospital TB set, masks by Stirenko et al.: CC BY-NC-SA 4.0 (non-commercial)"},
    {"dataset": "montgomery", "use": "external test only",
     "terms": "Montgomery County (NLM) TB set: NLM terms, research use, cite Jaeger et al. 2014"},
]

LICENCE_NOTE = (
    "Weights trained on COVID-QU-Ex (research use) and the Kermany-derived viral-pneumonia images "
    "(CC BY 4.0); evaluated on Shenzhen (CC BY-NC-SA 4.0) and Montgomery (NLM research terms). "
    "For research and development only; not a medical device; no commercial use."
)


def _state_dict(checkpoint: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], int | None]:
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    state = ckpt["model"] if isinstance(ckpt, dict) and "model" in ckpt else ckpt
    extra = ckpt.get("extra", {}) if isinstance(ckpt, dict) else {}
    epoch = ckpt.get("epoch") if isinstance(ckpt, dict) else None
    return {k: v.float().contiguous() for k, v in state.items()}, extra, epoch


def package_checkpoint(
    checkpoint: Path,
    name: str,
    aliases: Sequence[str] = (),
    metrics: dict[str, Any] | None = None,
    inference: dict[str, Any] | None = None,
    postprocessing: dict[str, Any] | None = None,
    description: str = "",
    weights_dir: Path = WEIGHTS_DIR,
) -> ModelCard:
    """Save ``checkpoint``'s weights as ``<weights_dir>/<name>.pt`` and write its card.

    The architecture, input size, preprocessing and training description are read from the
    run config stored inside the checkpoint by :class:`ml.training.Trainer`.
    """
    state, extra, epoch = _state_dict(Path(checkpoint))
    cfg = extra.get("config")
    if not cfg:
        raise ValueError(f"{checkpoint} carries no run config; was it written by ml.training?")
    model_cfg, data_cfg = cfg["model"], cfg["data"]
    model = build_network(model_cfg["architecture"], int(model_cfg.get("in_channels", 1)),
                          int(model_cfg.get("num_classes", 3)), **model_cfg.get("network_kwargs", {}))
    model.load_state_dict(state)
    weights_dir.mkdir(parents=True, exist_ok=True)
    weights_path = weights_dir / f"{name}.pt"
    torch.save(model.state_dict(), weights_path)
    size = int(data_cfg.get("size", 256))
    card = {
        "name": name,
        "aliases": list(aliases),
        "modality": cfg.get("modality", "cxr"),
        "description": description,
        "architecture": model_cfg["architecture"],
        "network_kwargs": model_cfg.get("network_kwargs", {}),
        "in_channels": int(model_cfg.get("in_channels", 1)),
        "num_classes": int(model_cfg.get("num_classes", 3)),
        "input_size": [size, size],
        "labels": dict(LABELS),
        "preprocessing": {
            "grayscale": "RGB -> luminance (0.299, 0.587, 0.114); 8/16-bit and float accepted",
            "photometric": "MONOCHROME1 inverted so that air is dark",
            "intensity": "robust percentile scaling to [0, 1]",
            "low_pct": float(data_cfg.get("low_pct", 0.5)),
            "high_pct": float(data_cfg.get("high_pct", 99.5)),
            "geometry": f"aspect-preserving resize (box filter) and centred zero padding to {size}x{size}; "
                        "probabilities cropped and resized bilinearly back to the original size",
        },
        "postprocessing": postprocessing or PostprocessConfig().to_dict(),
        "inference": inference or {"tta_flip": False},
        "parameters": count_parameters(model),
        "training": {
            "data": f"{data_cfg['manifest']} split={data_cfg.get('train_split', 'train')} "
                    f"(selection on split={data_cfg.get('val_split', 'val')})",
            "licences": CXR_DATA_LICENCES,
            "licence_note": LICENCE_NOTE,
            "command": extra.get("command", ""),
            "config": cfg,
            "checkpoint_epoch": epoch,
        },
        "metrics": metrics or {},
        "weights_file": weights_path.name,
        "sha256": "",
    }
    return write_card(card, weights_path)


def package_ensemble(
    members: Sequence[str],
    name: str,
    aliases: Sequence[str] = (),
    description: str = "",
    weights_dir: Path = WEIGHTS_DIR,
) -> ModelCard:
    """Ship a probability-averaging ensemble of packaged models as one weights file + card.

    Each member is a model name, alias or weights path with a card (package a training
    checkpoint first with :func:`package_checkpoint`). The members must share the input size,
    preprocessing and labels; the ensemble card takes them, with the post-processing and
    inference settings, from the first member, and lists every member's training.

    Raises:
        ValueError: fewer than 2 members, or members that disagree on modality, input or labels.
    """
    if len(members) < 2:  # checked before loading anything
        raise ValueError("an ensemble needs at least 2 members")
    loaded = [load_model(member) for member in members]
    first = loaded[0][1]
    for _, card in loaded[1:]:
        for field in ("modality", "input_size", "labels", "in_channels", "num_classes"):
            if getattr(card, field) != getattr(first, field):
                raise ValueError(f"ensemble members disagree on {field}: {first.name} vs {card.name}")
    specs = [{"architecture": card.architecture, "network_kwargs": card.network_kwargs, "member": card.name}
             for _, card in loaded]
    model = build_network("ensemble", first.in_channels, first.num_classes, members=specs)
    state = {f"members.{i}.{key}": value.float().contiguous().cpu()
             for i, (member, _) in enumerate(loaded) for key, value in member.state_dict().items()}
    model.load_state_dict(state)
    weights_dir.mkdir(parents=True, exist_ok=True)
    weights_path = weights_dir / f"{name}.pt"
    torch.save(model.state_dict(), weights_path)
    card = first.to_dict()
    card.update({
        "name": name,
        "aliases": list(aliases),
        "description": description,
        "architecture": "ensemble",
        "network_kwargs": {"members": specs},
        "parameters": count_parameters(model),
        "training": {
            "ensemble": "mean of the members' softmax probabilities",
            "command": "python -m ml.cxr.packaging --ensemble " + " ".join(members) + f" --name {name}",
            "members": {member_card.name: member_card.training for _, member_card in loaded},
            # every case any member saw (CT evaluation flags these rows as trained on)
            "cases": sorted({case for _, member_card in loaded for case in member_card.training.get("cases", [])}),
            "licences": first.training.get("licences", CXR_DATA_LICENCES),
            "licence_note": first.training.get("licence_note", LICENCE_NOTE),
        },
        "metrics": {},
        "weights_file": weights_path.name,
        "sha256": "",
    })
    return write_card(card, weights_path)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: package a checkpoint and optionally attach evaluation summaries as metrics."""
    parser = argparse.ArgumentParser(prog="python -m ml.cxr.packaging", description=__doc__)
    parser.add_argument("checkpoint", type=Path, nargs="?", help="training checkpoint (best.pt) to package")
    parser.add_argument("--ensemble", nargs="+", metavar="MODEL", default=None,
                        help="instead of a checkpoint: packaged models (names or weights paths) whose "
                             "probabilities are averaged into one shipped model")
    parser.add_argument("--name", required=True)
    parser.add_argument("--alias", action="append", default=[])
    parser.add_argument("--description", default="")
    parser.add_argument("--metrics", nargs="*", default=[], metavar="SPLIT=DIR",
                        help="evaluation folders holding summary.json, e.g. val=runs/eval_val")
    parser.add_argument("--inference-json", default=None, help='e.g. {"tta_flip": true}')
    parser.add_argument("--postprocessing-json", default=None, help='e.g. {"keep_largest": true}')
    parser.add_argument("--weights-dir", type=Path, default=WEIGHTS_DIR,
                        help="where the weights and card go (default: the shipped ml/weights); a scratch "
                             "folder for candidates (evaluate them with --model DIR/NAME.pt)")
    args = parser.parse_args(argv)
    if (args.checkpoint is None) == (args.ensemble is None):
        parser.error("give either a checkpoint or --ensemble MODEL MODEL ...")
    logging.basicConfig(level=logging.INFO)
    metrics: dict[str, Any] = {}
    for item in args.metrics:
        split, folder = item.split("=", 1)
        metrics[split] = headline(json.loads((Path(folder) / "summary.json").read_text()))
    if args.ensemble:
        try:
            card = package_ensemble(args.ensemble, args.name, args.alias, args.description, args.weights_dir)
        except (ValueError, RegistryError) as exc:
            print(f"python -m ml.cxr.packaging: error: {exc}", file=sys.stderr)
            return 2
        if metrics:
            card = update_card(str(card.weights_path), metrics=metrics)
    else:
        card = package_checkpoint(
            args.checkpoint, args.name, args.alias, metrics,
            json.loads(args.inference_json) if args.inference_json else None,
            json.loads(args.postprocessing_json) if args.postprocessing_json else None,
            args.description, args.weights_dir,
        )
    print(json.dumps({"name": card.name, "sha256": card.sha256, "weights": str(card.weights_path)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
