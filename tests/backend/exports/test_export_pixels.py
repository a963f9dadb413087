"""X-ray pixels to 8 bits (hand-checked values) and the CT image grid rule shared with the label maps."""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pydicom
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from annotation import labelmaps
from backend_factories import make_dicom
from exports import pixels


def _stored(data: bytes, **changes: object) -> SimpleNamespace:
    ds = pydicom.dcmread(io.BytesIO(data))
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    buffer = io.BytesIO()
    ds.save_as(buffer)
    name = default_storage.save("xray.dcm", ContentFile(buffer.getvalue()))
    return SimpleNamespace(pk=1, file=SimpleNamespace(name=name))


def test_wide_xrays_are_scaled_to_8_bits_and_monochrome1_inverted():
    data = make_dicom(modality="DX", rows=8, columns=8)  # int16 values -50 .. 13
    image = pixels.xray_uint8(_stored(data))
    expected = np.round((np.arange(64, dtype=np.float32) * (255.0 / 63.0))).reshape(8, 8).astype(np.uint8)
    assert image.dtype == np.uint8 and np.array_equal(image, expected)
    inverted = pixels.xray_uint8(_stored(data, PhotometricInterpretation="MONOCHROME1"))
    assert np.array_equal(inverted, 255 - expected)
    windowed = pixels.xray_uint8(_stored(data, WindowCenter=-34.5, WindowWidth=16))  # -42 .. -27 spread, rest clipped
    assert windowed[0, 0] == 0 and windowed[-1, -1] == 255 and 0 < windowed[2, 1] < 255


def test_ct_images_go_on_the_same_grid_as_their_labels():
    volume = np.arange(3 * 4 * 4, dtype=np.int16).reshape(3, 4, 4)
    geometry = {"grid_depth": 4, "source_slices": [[0, 0.0, 0.0], [1, 0.0, 1.0], [3, 0.0, 0.0]]}
    grid = pixels.to_grid(volume, geometry)
    labels = (volume % 3).astype(np.uint8)
    assert np.array_equal(grid % 3, labelmaps.to_regular_grid(labels, geometry))  # same placement
    assert grid.shape == (4, 4, 4) and grid.dtype == np.int16
    assert np.array_equal(grid[1, :, 1:], volume[1, :, :-1]) and np.all(grid[1, :, 0] == volume.min())
    assert np.array_equal(grid[2], grid[1]) and np.array_equal(grid[3], volume[2])
    assert pixels.to_grid(volume, {}) is volume
