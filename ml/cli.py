"""Command line: ``python -m ml train|evaluate|predict|export|bench``.

Dispatches by modality: a config (train) or model card (evaluate/predict/bench) whose
modality is ``ct`` is handed to :mod:`ml.ct.api`, chest X-ray work to :mod:`ml.cxr.api`. This
module only parses arguments, refuses options that do not apply, and prints JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


class UsageError(ValueError):
    """A combination of options the command cannot honour (reported, exit status 2)."""


LOSSLESS_MASK_SUFFIXES = (".png", ".tif", ".tiff")
"""X-ray label maps are written losslessly: JPEG would blur the labels into other values."""


def _positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _refuse_for_ct(args: argparse.Namespace, options: dict[str, str]) -> None:
    """Refuse X-ray-only options given with a CT model rather than ignore them.

    Args:
        options: attribute name → option as typed (e.g. ``{"tta": "--tta"}``); an option counts
            as given when its value is not ``None``/``False``.
    """
    given = [flag for name, flag in options.items() if getattr(args, name, None) not in (None, False)]
    if given:
        raise UsageError(f"{', '.join(given)} {'does' if len(given) == 1 else 'do'} not apply to CT models")


def _check_output(input_path: Path, output_path: Path, suffixes: tuple[str, ...], what: str) -> None:
    """Refuse an output that would overwrite the input or that cannot hold the result."""
    if output_path.exists() and input_path.exists() and output_path.resolve() == input_path.resolve():
        raise UsageError(f"--output {output_path} is the input itself: choose another file")
    if output_path.suffix and not output_path.name.lower().endswith(suffixes):
        raise UsageError(f"--output {output_path}: {what} are written as {', '.join(suffixes)}")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _print_json(data: dict[str, Any]) -> None:
    from ml.metrics import json_safe

    print(json.dumps(json_safe(data), indent=2, default=str, allow_nan=False))


def cmd_train(args: argparse.Namespace) -> int:
    """Train a model from a YAML config."""
    from ml.config import load_config

    cfg = load_config(args.config)
    if cfg["modality"] == "ct":
        from ml.ct import api as ct_api

        _refuse_for_ct(args, {"output_dir": "--output-dir (a CT config names its out_dir)"})
        run_dir = ct_api.train(Path(args.config), resume=not args.no_resume)
    else:
        from ml.cxr import api as cxr_api

        run_dir = cxr_api.train(Path(args.config), args.output_dir, resume=not args.no_resume)
    print(run_dir)
    return 0


def _modality(model: str) -> str:
    """The modality a ``--model`` argument names; ``classical`` is the CT classical baseline."""
    from ml import modality_of

    return modality_of(model)


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Evaluate a model on one split of a manifest."""
    if _modality(args.model) == "ct":
        from ml.ct import api as ct_api

        _refuse_for_ct(args, {"tta": "--tta/--no-tta", "no_postprocess": "--no-postprocess", "threads": "--threads"})
        summary = ct_api.evaluate(args.model, Path(args.manifest), args.split, Path(args.out))
    else:
        from ml.cxr import api as cxr_api

        summary = cxr_api.evaluate(args.model, Path(args.manifest), args.split, Path(args.out), tta=args.tta,
                                   postprocess=not args.no_postprocess, threads=args.threads,
                                   progress=not args.no_progress)
    keys = ("n_cases", "dice_mean", "dice_median", "dice_p05", "iou_mean", "pixel_accuracy_mean", "hd95_mean",
            "right_lung_dice_mean", "left_lung_dice_mean", "sides_correct_fraction",
            "dice_right_mean", "dice_left_mean", "hd95_mm_mean", "volume_error_pct_mean")
    _print_json({k: summary[k] for k in keys if k in summary})
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """Segment one image and write the label map."""
    from ml.formats import VOLUME_SUFFIXES

    if args.model is None:  # a folder or a volume file is a CT; anything else an X-ray
        is_volume = Path(args.input).is_dir() or Path(args.input).name.lower().endswith(VOLUME_SUFFIXES)
        args.model = "ct" if is_volume else "cxr"
    if _modality(args.model) == "ct":
        from ml.ct import api as ct_api

        _refuse_for_ct(args, {"tta": "--tta/--no-tta", "photometric": "--photometric", "threads": "--threads"})
        _check_output(Path(args.input), Path(args.output), VOLUME_SUFFIXES, "CT label volumes")
        _print_json(ct_api.predict(args.model, Path(args.input), Path(args.output)))
        return 0
    from ml.cxr import api as cxr_api

    if not Path(args.output).suffix:
        raise UsageError(f"--output {args.output}: give the label file's name, e.g. mask.png")
    _check_output(Path(args.input), Path(args.output), LOSSLESS_MASK_SUFFIXES, "X-ray label maps")
    _print_json(cxr_api.predict(args.model, Path(args.input), Path(args.output), photometric=args.photometric,
                                tta=args.tta, threads=args.threads))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Export a model to ONNX and/or TorchScript."""
    from ml.export import export_model

    formats = ("onnx", "torchscript") if args.format == "all" else (args.format,)
    _print_json(export_model(args.model, args.out_dir, formats))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Benchmark speed and print JSON (also written to --out)."""
    if _modality(args.model) == "ct":
        from ml.ct import api as ct_api

        _refuse_for_ct(args, {"repeats": "--repeats", "batch": "--batch"})
        results = ct_api.bench(args.model, Path(args.out) if args.out else None, input_path=args.image,
                            threads=args.threads)
    else:
        from ml.cxr import api as cxr_api

        results = cxr_api.bench(args.model, Path(args.out) if args.out else None, input_path=args.image,
                                threads=args.threads, repeats=args.repeats, batch=args.batch)
    _print_json(results)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Argument parser with one sub-command per task."""
    parser = argparse.ArgumentParser(
        prog="python -m ml",
        description="Pleura lung segmentation: train, evaluate, predict, export and benchmark models.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a model from a YAML config",
                       description="Train a model described by a YAML config under ml/configs/. "
                       "Resumes from <output_dir>/last.pt when present.")
    p.add_argument("--config", type=Path, required=True, help="YAML config, e.g. ml/configs/cxr_default.yaml")
    p.add_argument("--output-dir", type=Path, default=None, help="run folder (X-ray; default: the config's output_dir)")
    p.add_argument("--no-resume", action="store_true", help="start from scratch even if last.pt exists")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="score a model on a manifest split (per_case.csv + summary.json)",
                       description="Run a model on every case of one split at native resolution and write "
                       "OUT/per_case.csv and OUT/summary.json. X-ray: dice_mean, dice_median, dice_p05, iou_mean, "
                       "pixel_accuracy_mean, hd95_mean (pixels), n_cases, per-lung values, bootstrap CIs; case "
                       "Dice = mean of right- and left-lung Dice. CT (--model ct or classical, split train/val/"
                       "test/all): dice_right_mean, dice_left_mean, dice_lung_mean, dice_mean, hd95_mm_mean, "
                       "volume_error_pct_mean, n_cases; cases a model was trained on are scored by its "
                       "leave-one-case-out fold where one is shipped.")
    p.add_argument("--model", required=True, help="model name, alias (cxr, ct) or weights .pt path")
    p.add_argument("--manifest", required=True, type=Path, help="manifest.csv (its folder is the data root)")
    p.add_argument("--split", required=True, help="split to evaluate, e.g. val or test")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="horizontal-flip test-time augmentation (default: the model card's setting)")
    p.add_argument("--no-postprocess", action="store_true", help="disable all post-processing steps")
    p.add_argument("--threads", type=_positive_int, default=None, help="CPU threads for torch (X-ray models)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="segment one image or CT and write its label map",
                       description="Chest X-ray (PNG/JPEG/TIFF/DICOM file, --model cxr): write a uint8 label PNG "
                       "at the input's size. CT (DICOM series folder or NIfTI/NRRD/MHA file, --model ct or "
                       "classical): write a label volume (e.g. mask.nii.gz) in the input's geometry and print "
                       "the volumes per lung in mL, mean HU and emphysema index. Labels: 0 background, "
                       "1 right lung, 2 left lung.")
    p.add_argument("--model", default=None,
                   help="model name, alias or weights path (default: ct for a folder or a volume file, else cxr)")
    p.add_argument("--input", required=True, type=Path, help="input image, CT series folder or CT volume file")
    p.add_argument("--output", required=True, type=Path,
                   help="output label file: .png/.tif (X-ray), or .nii.gz/.nii/.nrrd/.mha/.mhd or a folder (CT)")
    p.add_argument("--photometric", default=None, choices=["MONOCHROME1", "MONOCHROME2"],
                   help="override the Photometric Interpretation (X-ray)")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None, help="flip TTA override (X-ray)")
    p.add_argument("--threads", type=_positive_int, default=None, help="CPU threads for torch (X-ray)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="export a model to ONNX / TorchScript",
                       description="Export a registered model to ONNX (opset 17, dynamic batch) and TorchScript "
                       "and check their outputs against PyTorch.")
    p.add_argument("--model", default="cxr", help="model name, alias or weights path (default: cxr)")
    p.add_argument("--out-dir", type=Path, default=None, help="destination (default: beside the weights)")
    p.add_argument("--format", choices=["onnx", "torchscript", "all"], default="all",
                   help="what to export (default: all)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("bench", help="speed benchmark (JSON)",
                       description="X-ray (--model cxr): CPU latency of one image at model size, batched "
                       "images/s, torch vs onnxruntime, and end to end from a 2048x2048 file (16-bit PNG and "
                       "uncompressed DICOM) to the full-size mask. CT (--model ct or classical): end to end from a 512x512x300 volume file (or --image) "
                       "to the mask file and volumes, with peak memory. Prints JSON.")
    p.add_argument("--model", default="cxr", help="model name or alias (default: cxr; ct for CT)")
    p.add_argument("--threads", type=_positive_int, default=2, help="CPU threads (default 2)")
    p.add_argument("--repeats", type=_positive_int, default=None, help="timed repetitions (X-ray; default 20)")
    p.add_argument("--batch", type=_positive_int, default=None, help="batch size for throughput (X-ray; default 16)")
    p.add_argument("--image", type=Path, default=None, help="end-to-end input file, PNG or DICOM (default: synthetic 2048x2048 16-bit PNG and DICOM; CT: synthetic 512x512x300 NIfTI)")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON here, e.g. bench/results/cxr.json")
    p.set_defaults(func=cmd_bench)
    return parser


def _domain_errors() -> tuple[type[BaseException], ...]:
    """Errors about the user's input: printed as ``error: ...`` with exit status 2.

    Imported only when something failed, so that ``--help`` and X-ray commands do not pay for
    the CT stack (SimpleITK, pydicom) at start-up.
    """
    from ml.config import ConfigError
    from ml.ct.data import ManifestError as CTManifestError
    from ml.ct.io import CTReadError
    from ml.ct.train import TrainConfigError as CTTrainConfigError
    from ml.cxr.data import ManifestError
    from ml.metrics import ShapeMismatchError
    from ml.cxr.preprocessing import ImageFormatError
    from ml.registry import RegistryError
    from ml.training import TrainingConfigError

    return (RegistryError, ManifestError, CTManifestError, ImageFormatError, CTReadError, ConfigError,
            ShapeMismatchError, UsageError, TrainingConfigError, CTTrainConfigError,
            FileNotFoundError, IsADirectoryError, NotADirectoryError, FileExistsError)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return int(args.func(args))
    except Exception as exc:  # noqa: BLE001 - domain errors become a message, anything else propagates
        if not isinstance(exc, _domain_errors()):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
