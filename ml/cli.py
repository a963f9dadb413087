"""Command line: ``python -m ml train|evaluate|predict|export|bench``.

Dispatches by modality: a config (train) or model card (evaluate/predict/bench) whose
modality is ``ct`` is handed to ``ml.ct.api``; chest X-ray work is done here.
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


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _print_json(data: dict[str, Any]) -> None:
    print(json.dumps(data, indent=2, default=str))


def cmd_train(args: argparse.Namespace) -> int:
    """Train a model from a YAML config."""
    from ml.config import load_config

    cfg = load_config(args.config)
    if cfg["modality"] == "ct":
        from ml.ct import api

        run_dir = api.train(Path(args.config))
    else:
        from ml.training.cxr import train_from_config

        run_dir = train_from_config(Path(args.config), args.output_dir, resume=not args.no_resume)
    print(run_dir)
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
    p.add_argument("--output-dir", type=Path, default=None, help="run folder (default: config's output_dir)")
    p.add_argument("--no-resume", action="store_true", help="start from scratch even if last.pt exists")
    p.set_defaults(func=cmd_train)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    return int(args.func(args))
