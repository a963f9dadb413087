"""CT manifests and the 2D slice dataset used to train the CT lung model.

A manifest is a CSV with columns ``case, ct, labels, lr_labels, split`` (paths relative to the
manifest's folder), like ``../shared/data/ct/manifest.csv``.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ml.ct.io import read_ct, read_label
from ml.ct.preprocessing import crop, resize_slices, stack_neighbours, to_model_grid

logger = logging.getLogger(__name__)

_REQUIRED_COLUMNS = {"case", "ct", "labels", "split"}


class ManifestError(ValueError):
    """A CT manifest is missing, malformed, or names no case for the requested split."""


@dataclass(frozen=True)
class CaseRecord:
    """One row of a CT manifest.

    Attributes:
        case: case identifier.
        ct: path of the CT volume (file or DICOM folder).
        labels: path of the label volume, or None for an unlabelled case.
        lr_labels: True when labels split right (1) and left (2); False when 1 means lung.
        split: train, val or test.
    """

    case: str
    ct: Path
    labels: Path | None
    lr_labels: bool
    split: str


def read_manifest(path: str | Path, split: str | None = None) -> list[CaseRecord]:
    """Read a CT manifest, optionally keeping one split (``"all"`` keeps every row).

    Raises:
        ManifestError: missing file, missing columns, or no case in the split.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found (expected a CSV with {sorted(_REQUIRED_COLUMNS)})")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = _REQUIRED_COLUMNS - set(reader.fieldnames or [])
        if missing:
            raise ManifestError(f"{path}: missing columns {sorted(missing)}")
        rows = list(reader)
    records = [
        CaseRecord(
            case=row["case"],
            ct=path.parent / row["ct"],
            labels=(path.parent / row["labels"]) if row.get("labels") else None,
            lr_labels=str(row.get("lr_labels", "1")).strip() not in ("0", "false", "False", ""),
            split=row["split"],
        )
        for row in rows
    ]
    if split not in (None, "all"):
        records = [r for r in records if r.split == split]
    if not records:
        raise ManifestError(f"{path}: no case with split {split!r}")
    return records


@dataclass
class PreparedCase:
    """A CT case on the model grid.

    Attributes:
        case: identifier.
        image: ``(D, S, S)`` float32 windowed HU in [-1, 1].
        lung: ``(D, S, S)`` uint8 lung (1) / background (0).
    """

    case: str
    image: np.ndarray
    lung: np.ndarray


def prepare_case(ct: Path, labels: Path, size: int, case: str) -> PreparedCase:
    """Read a CT and its labels and bring both to the model grid (body crop, resize)."""
    volume, meta = read_ct(ct)
    label = read_label(labels, meta)
    return prepare_arrays(volume, label, size, case)


def prepare_arrays(volume: np.ndarray, label: np.ndarray, size: int, case: str) -> PreparedCase:
    """Like :func:`prepare_case` for arrays already read: ``(D, H, W)`` HU and labels."""
    image, _, box = to_model_grid(volume, size)
    lung = resize_slices(crop((label > 0).astype(np.float32), box, fill=0.0), size, mode="bilinear")
    return PreparedCase(case, image, (lung > 0.5).astype(np.uint8))


def load_prepared(path: Path, ct: Path, labels: Path, size: int, case: str) -> PreparedCase:
    """Cached :func:`prepare_case`: reads ``path`` (npz) when present, writes it otherwise."""
    if path.is_file():
        data = np.load(path)
        return PreparedCase(case, data["image"], data["lung"])
    prepared = prepare_case(ct, labels, size, case)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, image=prepared.image, lung=prepared.lung)
    return prepared


class SliceDataset(Dataset):
    """Axial slices with neighbouring slices as channels.

    Returns ``(image, target)``: ``image`` ``(2·context+1, S, S)`` float32, ``target``
    ``(1, S, S)`` int64 (1 = lung). Slices without lung are kept at ``empty_fraction`` of the
    lung-bearing ones so the model also sees the neck and abdomen.
    """

    def __init__(self, cases: list[PreparedCase], context: int = 1, empty_fraction: float = 0.2, seed: int = 0):
        self.cases = cases
        self.context = context
        rng = np.random.default_rng(seed)
        index: list[tuple[int, int]] = []
        for c, prepared in enumerate(cases):
            has_lung = prepared.lung.reshape(prepared.lung.shape[0], -1).any(axis=1)
            full = np.flatnonzero(has_lung)
            empty = np.flatnonzero(~has_lung)
            keep = rng.permutation(empty)[: int(np.ceil(empty_fraction * max(len(full), 1)))]
            index += [(c, int(z)) for z in np.concatenate([full, keep])]
        self.index = index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, item: int) -> tuple[torch.Tensor, torch.Tensor]:
        c, z = self.index[item]
        prepared = self.cases[c]
        image = stack_neighbours(prepared.image, z, self.context)
        target = prepared.lung[z][None].astype(np.int64)
        return torch.from_numpy(np.ascontiguousarray(image)), torch.from_numpy(target)


def case_weights(dataset: SliceDataset, per_case: dict[str, float]) -> np.ndarray:
    """Sampling weight of each slice so every case contributes ``per_case[case]`` in total."""
    counts: dict[int, int] = {}
    for c, _ in dataset.index:
        counts[c] = counts.get(c, 0) + 1
    return np.array(
        [per_case.get(dataset.cases[c].case, 1.0) / counts[c] for c, _ in dataset.index], dtype=np.float64
    )

