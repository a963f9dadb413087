"""Chest X-ray manifests, datasets, and reading one input file (PNG/JPEG/TIFF or DICOM).

A manifest is a CSV with at least the columns ``dataset, case, split`` (see
``../shared/data/cxr/manifest.csv``). The data root is the manifest's folder; the image of a
case is ``<root>/<dataset>/images/<case>.png`` and its label map
``<root>/<dataset>/labels/<case>.png`` (uint8: 0 background, 1 right lung, 2 left lung).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ml.cxr.preprocessing import ImageFormatError, letterbox_labels, prepare_image
from ml.formats import VOLUME_SUFFIXES

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
REQUIRED_COLUMNS = ("dataset", "case", "split")


class ManifestError(ValueError):
    """The manifest file is missing, malformed, or refers to missing files."""


@dataclass(frozen=True)
class Case:
    """One manifest row with resolved file paths."""

    dataset: str
    case: str
    split: str
    image_path: Path
    label_path: Path
    category: str = ""
    lr_labels: bool = True
    spacing_mm: tuple[float, float] | None = None


def _find_file(folder: Path, stem: str) -> Path:
    for suffix in IMAGE_SUFFIXES:
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return folder / f"{stem}.png"


def _spacing(value: str | None, where: str) -> tuple[float, float] | None:
    """``pixel_spacing_mm``: empty (unknown), one number (square pixels) or ``row col``."""
    text = (value or "").replace(",", " ").replace(";", " ").split()
    if not text:
        return None
    try:
        numbers = [float(v) for v in text]
    except ValueError:
        numbers = []
    if len(numbers) not in (1, 2) or not all(v > 0 for v in numbers):
        raise ManifestError(f"{where}: pixel_spacing_mm must be one or two positive numbers (row col), got {value!r}")
    return (numbers[0], numbers[-1])


def evenly_spaced(cases: Sequence[Case], limit: int) -> list[Case]:
    """At most ``limit`` cases spread evenly over ``cases`` (all of them when there are no more).

    This is the validation subset that training selects checkpoints on (``val_max_cases``).
    """
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    if len(cases) <= limit:
        return list(cases)
    stride = len(cases) / limit
    return [cases[int(i * stride)] for i in range(limit)]


def read_manifest(manifest: Path, splits: Iterable[str] | None = None) -> list[Case]:
    """Read a manifest CSV and return the cases of the requested splits.

    An optional ``pixel_spacing_mm`` column (one number, or ``row col``) gives the pixel size;
    evaluation then adds surface distances in mm.

    Args:
        manifest: path to ``manifest.csv``; its folder is the data root.
        splits: split names to keep (e.g. ``["train"]``); ``None`` keeps all.

    Returns:
        Cases in file order.

    Raises:
        ManifestError: file missing, required column missing, or no case selected.
    """
    manifest = Path(manifest)
    if not manifest.is_file():
        raise ManifestError(f"manifest not found: {manifest}")
    wanted = None if splits is None else set(splits)
    root = manifest.parent
    cases: list[Case] = []
    with manifest.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ManifestError(f"{manifest}: missing column(s) {missing}; need {REQUIRED_COLUMNS}")
        for row in reader:
            if wanted is not None and row["split"] not in wanted:
                continue
            ds_dir = root / row["dataset"]
            cases.append(
                Case(
                    dataset=row["dataset"],
                    case=row["case"],
                    split=row["split"],
                    image_path=_find_file(ds_dir / "images", row["case"]),
                    label_path=_find_file(ds_dir / "labels", row["case"]),
                    category=row.get("category", "") or "",
                    lr_labels=str(row.get("lr_labels", "1")).strip() not in {"0", "false", "False"},
                    spacing_mm=_spacing(row.get("pixel_spacing_mm"), f"{manifest}: case {row['case']}"),
                )
            )
    if not cases:
        raise ManifestError(f"{manifest}: no cases for split(s) {sorted(wanted or [])}")
    return cases


def load_image(path: Path) -> np.ndarray:
    """Read an image file as an array (8/16-bit grayscale or RGB kept as stored).

    Raises:
        FileNotFoundError: the file does not exist.
        ImageFormatError: the file is not a readable image (unknown format, truncated, corrupt).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as img:
            if img.mode in ("I;16", "I;16B", "I;16L"):  # 16-bit: read as stored, native byte order
                return np.asarray(img).astype(np.uint16, copy=False)
            if img.mode == "I":
                return np.asarray(img, dtype=np.int32)
            if img.mode not in ("L", "RGB", "RGBA", "F"):
                img = img.convert("RGB")
            return np.asarray(img)
    except (OSError, SyntaxError, ValueError) as error:  # PIL: unidentified (an OSError), truncated, corrupt
        raise ImageFormatError(f"{path}: not a readable image ({error})") from error


def load_labels(path: Path) -> np.ndarray:
    """Read a label PNG as (H, W) uint8."""
    arr = load_image(path)
    if arr.ndim == 3:
        arr = arr[..., 0]
    return arr.astype(np.uint8)


class CXRSegmentationDataset(Dataset):
    """Chest X-ray images + label maps, preprocessed once and held in memory at model size.

    Items are ``{"image": (1, S, S) float32 tensor in [0, 1], "label": (S, S) int64 tensor,
    "index": int}``. Images are stored as uint8 (normalised × 255) to keep memory small
    (2,400 images at 256² ≈ 160 MB).
    """

    def __init__(
        self,
        cases: Sequence[Case],
        size: int = 256,
        low_pct: float = 0.5,
        high_pct: float = 99.5,
        show_progress: bool = False,
    ) -> None:
        self.cases = list(cases)
        self.size = size
        self.low_pct, self.high_pct = low_pct, high_pct
        self.images = np.zeros((len(self.cases), size, size), dtype=np.uint8)
        self.labels = np.zeros((len(self.cases), size, size), dtype=np.uint8)
        iterator: Iterable[int] = range(len(self.cases))
        if show_progress:
            from tqdm import tqdm

            iterator = tqdm(iterator, desc="loading", unit="img")
        for i in iterator:
            case = self.cases[i]
            try:
                canvas, _ = prepare_image(load_image(case.image_path), size, "MONOCHROME2", low_pct, high_pct)
            except ImageFormatError as error:  # a blank or unusable training image: name it
                raise ManifestError(f"{case.dataset}/{case.case} ({case.image_path}): {error}") from error
            self.images[i] = np.round(canvas * 255.0).astype(np.uint8)
            self.labels[i] = letterbox_labels(load_labels(case.label_path), size)
        logger.info("loaded %d cases at %d²", len(self.cases), size)

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        image = torch.from_numpy(self.images[index].astype(np.float32) / 255.0)[None]
        label = torch.from_numpy(self.labels[index].astype(np.int64))
        return {"image": image, "label": label, "index": index}


NOT_XRAY_MODALITIES = frozenset({"CT", "MR", "PT", "NM", "US", "SEG", "RTSTRUCT", "RTDOSE", "RTPLAN", "SR"})
"""DICOM modalities the X-ray model must not be given (cross-sectional images, non-images)."""


def read_input_image(path: Path) -> tuple[np.ndarray, str, tuple[float, float] | None]:
    """Read a PNG/JPEG/TIFF or DICOM chest X-ray: (array, photometric, pixel spacing in mm or None).

    Raises:
        FileNotFoundError: no such file.
        ImageFormatError: a folder or CT volume (use a CT model), or a file that is not a
            readable image or DICOM.
    """
    if path.is_dir() or path.name.lower().endswith(VOLUME_SUFFIXES):
        raise ImageFormatError(f"{path} is a folder or a volume file, not a chest X-ray image: "
                               "for a CT series or volume use --model ct")
    if not path.exists():
        raise FileNotFoundError(f"image not found: {path}")
    if path.suffix.lower() in {".dcm", ".dicom"} or path.suffix == "":
        import pydicom

        try:
            ds = pydicom.dcmread(path)
            pixels = ds.pixel_array
        except (pydicom.errors.InvalidDicomError, AttributeError, RuntimeError, ValueError) as error:
            raise ImageFormatError(f"{path}: not a readable DICOM image ({error})") from error
        modality = str(getattr(ds, "Modality", "")).upper()
        if modality in NOT_XRAY_MODALITIES:
            raise ImageFormatError(f"{path} is a {modality} image, not a chest X-ray: "
                                   + ("for a CT series use --model ct with its folder" if modality == "CT"
                                      else "no model here segments it"))
        spacing = getattr(ds, "PixelSpacing", None) or getattr(ds, "ImagerPixelSpacing", None)
        return (pixels, str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")),
                (float(spacing[0]), float(spacing[1])) if spacing else None)
    return load_image(path), "MONOCHROME2", None
