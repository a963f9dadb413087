"""Markdown results table from two CT evaluation folders (model and classical baseline).

Usage::

    python -m ml.ct.report --model runs/ct_eval/ct --baseline runs/ct_eval/classical
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ml.metrics import read_csv_rows


def read_per_case(folder: Path) -> dict[str, dict[str, str]]:
    """The rows of an evaluation folder's ``per_case.csv`` by case (values as written)."""
    return {row["case"]: row for row in read_csv_rows(Path(folder) / "per_case.csv")}


def _fmt(value: str, digits: int = 3) -> str:
    number = float(value) if value not in ("", None) else math.nan
    return "–" if not math.isfinite(number) else f"{number:.{digits}f}"


def _case_cells(row: dict[str, str]) -> list[str]:
    sided = row["lr_labels"] == "1"
    if sided:
        return [_fmt(row["dice_right"]), _fmt(row["dice_left"]),
                f"{_fmt(row['hd95_right_mm'], 1)} / {_fmt(row['hd95_left_mm'], 1)}",
                f"{_fmt(row['volume_error_right_pct'], 1)} / {_fmt(row['volume_error_left_pct'], 1)}"]
    return [f"{_fmt(row['dice_lung'])} (lung)", "", _fmt(row["hd95_lung_mm"], 1), _fmt(row["volume_error_lung_pct"], 1)]


def markdown_table(model_dir: Path, baseline_dir: Path) -> str:
    """One line per case: model and baseline Dice right/left, HD95 (mm), volume error (%)."""
    model, baseline = read_per_case(model_dir), read_per_case(baseline_dir)
    header = ("| case | split | evaluated with | Dice R | Dice L | HD95 R / L (mm) | vol. err. R / L (%) "
              "| classical Dice R | classical Dice L | classical HD95 R / L (mm) | classical vol. err. R / L (%) |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for case, row in model.items():
        base = baseline.get(case)
        cells = [case, row["split"], row["evaluated_with"], *_case_cells(row)]
        cells += _case_cells(base) if base else ["", "", "", ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """CLI: print the table."""
    parser = argparse.ArgumentParser(prog="python -m ml.ct.report", description=__doc__)
    parser.add_argument("--model", type=Path, required=True, help="evaluation folder of the model")
    parser.add_argument("--baseline", type=Path, required=True, help="evaluation folder of the classical method")
    args = parser.parse_args(argv)
    print(markdown_table(args.model, args.baseline), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
