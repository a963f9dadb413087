"""Helpers for proposal tests: a tiny real (untrained) X-ray model with a card, synthetic CT and X-ray files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from pydicom.uid import generate_uid

TINY_CXR = "tiny-cxr-test"


def write_tiny_cxr_model(folder: Path, name: str = TINY_CXR, seed: int = 0) -> Path:
    """A real network with random weights and a valid card (64×64 input); returns the card path."""
    import torch

    from ml.networks import build_network
    from ml.registry import write_card

    torch.manual_seed(seed)
    kwargs = {"channels": [4, 8, 16], "strides": [2, 2]}
    model = build_network("unet", 1, 3, **kwargs)
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / f"{name}.pt"
    torch.save(model.state_dict(), weights)
    card = write_card({
        "name": name, "modality": "cxr", "architecture": "unet", "network_kwargs": kwargs, "in_channels": 1,
        "num_classes": 3, "input_size": [1, 64, 64], "aliases": [],
        "labels": {"0": "background", "1": "right_lung", "2": "left_lung"},
        "weights_file": weights.name, "sha256": "", "metrics": {"val_dice": 0.0},
        "description": "untrained test network",
    }, weights)
    return Path(card.card_path or weights.with_suffix(".json"))


def chest_phantom(depth: int, size: int) -> np.ndarray:
    """A synthetic chest CT ``(D, H, W)`` in HU: air outside, soft-tissue body, two air-filled lungs."""
    z, y, x = np.mgrid[0:depth, 0:size, 0:size].astype(np.float32)
    c = (size - 1) / 2
    volume = np.full((depth, size, size), -1000.0, np.float32)
    body = ((x - c) / (0.45 * size)) ** 2 + ((y - c) / (0.35 * size)) ** 2 <= 1
    volume[body] = 40.0
    for cx in (0.3 * size, 0.7 * size):
        lung = ((x - cx) / (0.14 * size)) ** 2 + ((y - c) / (0.22 * size)) ** 2 + ((z - depth / 2) / (0.45 * depth)) ** 2 <= 1
        volume[lung & body] = -850.0
    return volume


def ct_series_files(depth: int = 24, size: int = 64, spacing: float = 5.0,
                    orientation: tuple[float, ...] = (1, 0, 0, 0, 1, 0),
                    drift_y: float = 0.0) -> list[tuple[str, bytes]]:
    """DICOM files ``(name, bytes)`` of a synthetic chest CT series (:func:`chest_phantom`).

    The pixel data are the phantom's slices as they are; ``orientation`` (ImageOrientationPatient)
    only changes where the patient is, e.g. ``(-1, 0, 0, 0, 1, 0)`` puts the patient's right on
    the high column indices. ``drift_y`` moves each slice's position that many mm further along
    y than the one before (a gantry-tilted series: ``spacing * tan(tilt)``).
    """
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

    volume = chest_phantom(depth, size)
    study, series = generate_uid(), generate_uid()
    pixel = 350.0 / size
    files = []
    for k in range(depth):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, ds.file_meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, study + ".1"
        ds.Modality, ds.PatientID, ds.PatientName, ds.StudyDate = "CT", "PHANTOM-1", "Phantom^Chest", "20200101"
        ds.SeriesNumber, ds.InstanceNumber = 1, k + 1
        ds.ImagePositionPatient = [-175.0 * orientation[0], -175.0 + k * drift_y, k * spacing]
        ds.ImageOrientationPatient = list(orientation)
        ds.PixelSpacing, ds.SliceThickness = [pixel, pixel], spacing
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows = ds.Columns = size
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
        ds.PixelData = volume[k].astype("<i2").tobytes()
        buffer = io.BytesIO()
        pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
        files.append((f"slice{k:03d}.dcm", buffer.getvalue()))
    return files


def xray_png(size: tuple[int, int] = (96, 80), seed: int = 0) -> bytes:
    """A grayscale chest-like PNG ``(width, height)``: bright body, two dark lung fields."""
    from PIL import Image

    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    image = np.full((height, width), 200, np.uint8)
    for cx in (0.3 * width, 0.7 * width):
        image[((x - cx) / (0.16 * width)) ** 2 + ((y - 0.5 * height) / (0.3 * height)) ** 2 <= 1] = 50
    image = (image + np.random.default_rng(seed).integers(0, 10, image.shape)).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()
