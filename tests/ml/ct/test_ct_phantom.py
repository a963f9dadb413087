"""Classical pipeline, 3D post-processing and quantification on synthetic volumes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from ml.ct.classical import segment_classical
from ml.ct.io import read_ct, read_label, write_mask
from ml.ct.phantom import make_phantom
from ml.ct.postprocess import (
    airway_mask,
    airway_wall,
    assign_sides,
    below_lung_base,
    body_mask,
    fill_lung_holes,
    join_large_fragments,
    merge_fragments,
    separate_lungs,
    split_off_gas_below_bases,
)
from ml.ct.quantify import quantify_lungs


@pytest.fixture(scope="module")
def phantom():
    return make_phantom()


def test_phantom_volumes_within_two_percent(phantom) -> None:
    labels = segment_classical(phantom.volume_hu.astype(np.float32), phantom.spacing)
    measures = quantify_lungs(labels, phantom.volume_hu, phantom.spacing)
    assert measures["right_volume_ml"] == pytest.approx(phantom.volume_right_ml, rel=0.02)
    assert measures["left_volume_ml"] == pytest.approx(phantom.volume_left_ml, rel=0.02)
    assert measures["total_volume_ml"] == pytest.approx(phantom.volume_right_ml + phantom.volume_left_ml, rel=0.02)
    # the known volumes are those of the ellipsoids (4/3·π·abc) up to voxelisation
    depth, height, width = (n * s for n, s in zip(phantom.volume_hu.shape, phantom.spacing))
    analytic_ml = 4.0 / 3.0 * np.pi * (0.3 * depth) * (0.22 * height) * (0.14 * width) / 1000.0
    assert measures["right_volume_ml"] == pytest.approx(analytic_ml, rel=0.03)


def test_phantom_trachea_removed_and_sides_from_patient_orientation(phantom) -> None:
    labels = segment_classical(phantom.volume_hu.astype(np.float32), phantom.spacing)
    trachea_column = labels[-10:, :, :]
    assert not trachea_column.any(), "trachea above the lungs must not be labelled"
    for value in (1, 2):
        truth, pred = phantom.labels == value, labels == value
        assert 2 * (truth & pred).sum() / (truth.sum() + pred.sum()) > 0.98
    # the right lung (label 1) is at low W in the canonical LPS grid
    assert np.argwhere(labels == 1)[:, 2].mean() < np.argwhere(labels == 2)[:, 2].mean()


def test_sides_follow_patient_orientation_not_image_side(tmp_path: Path, phantom) -> None:
    # store the phantom with x flipped (RAS-like x axis): the right lung is now on the other image side
    stored = phantom.volume_hu[:, :, ::-1]
    image = sitk.GetImageFromArray(np.ascontiguousarray(stored))
    image.SetSpacing(tuple(reversed(phantom.spacing)))
    image.SetDirection((-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    sitk.WriteImage(image, str(tmp_path / "ct.nii.gz"))
    volume, meta = read_ct(tmp_path / "ct.nii.gz")
    labels = segment_classical(volume, meta.spacing_dhw, meta.direction)
    write_mask(labels, meta, tmp_path / "mask.nii.gz")
    written = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "mask.nii.gz")))
    truth_stored = phantom.labels[:, :, ::-1]
    for value in (1, 2):
        overlap = (written == value) & (truth_stored == value)
        assert 2 * overlap.sum() / ((written == value).sum() + (truth_stored == value).sum()) > 0.98
    assert np.array_equal(read_label(tmp_path / "mask.nii.gz", meta), labels)


def test_quantification_hand_checked() -> None:
    labels = np.zeros((2, 2, 4), np.uint8)
    labels[:, :, :2] = 1  # 8 voxels right
    labels[0, 0, 2:] = 2  # 2 voxels left
    hu = np.full(labels.shape, -800.0, np.float32)
    hu[0, 0, 0] = -1000.0  # one right voxel below -950
    hu[0, 0, 2] = -960.0  # one left voxel below -950
    measures = quantify_lungs(labels, hu, spacing=(2.0, 1.0, 0.5))  # 1 mm³ per voxel
    assert measures["right_volume_ml"] == pytest.approx(0.008)
    assert measures["left_volume_ml"] == pytest.approx(0.002)
    assert measures["total_volume_ml"] == pytest.approx(0.010)
    assert measures["right_mean_hu"] == pytest.approx((-1000 - 7 * 800) / 8)
    assert measures["left_mean_hu"] == pytest.approx(-880.0)
    assert measures["right_emphysema_index"] == pytest.approx(1 / 8)
    assert measures["left_emphysema_index"] == pytest.approx(0.5)
    assert measures["total_emphysema_index"] == pytest.approx(0.2)


def test_touching_lungs_are_split_and_fragments_merged() -> None:
    mask = np.zeros((10, 20, 30), bool)
    mask[2:8, 4:16, 3:14] = True
    mask[2:8, 4:16, 16:27] = True
    mask[4:6, 8:10, 14:16] = True  # thin bridge: one component
    parts = separate_lungs(mask, spacing=(1.0, 1.0, 1.0), min_ml=0.1)
    assert set(np.unique(parts)) == {0, 1, 2}
    labels = assign_sides(parts, direction=tuple(np.eye(3).ravel()))
    assert (labels[:, :, :14][mask[:, :, :14]] == 1).all() and (labels[:, :, 16:][mask[:, :, 16:]] == 2).all()
    # a fragment touching the left lung joins it; a distant one is dropped
    candidates = mask.copy()
    candidates[2:8, 16:18, 20:22] = True
    candidates[0, 0, 0] = True
    merged = merge_fragments(labels, candidates)
    assert (merged[2:8, 16:18, 20:22] == 2).all() and merged[0, 0, 0] == 0
    holed = labels.copy()
    holed[5, 8:10, 6:8] = 0
    assert (fill_lung_holes(holed)[5, 8:10, 6:8] == 1).all()


def test_trachea_followed_across_a_slice_raised_by_streaks(phantom) -> None:
    """A streak-brightened trachea slice (partial volume at the shoulders) must not stop airway removal."""
    volume = phantom.volume_hu.astype(np.float32).copy()
    trachea = (phantom.volume_hu < -950) & (phantom.labels == 0)
    trachea &= body_mask(volume)
    z_levels = np.flatnonzero(trachea.any(axis=(1, 2)))
    streak = int(z_levels[-1] - 3)
    volume[streak][trachea[streak]] = -700.0  # brighter than every region-growing threshold
    air = (volume < -400) & body_mask(volume)
    airway = airway_mask(volume, air, phantom.spacing)
    assert airway[streak][trachea[streak]].all()
    assert airway[z_levels[0] : z_levels[-1] + 1][trachea[z_levels[0] : z_levels[-1] + 1]].mean() > 0.9
    lungs = phantom.labels > 0
    assert (airway & lungs).sum() < 0.001 * lungs.sum(), "the airway must not leak into the lungs"


def test_grow_back_leaves_stray_components_out() -> None:
    mask = np.zeros((10, 20, 40), bool)
    mask[2:8, 4:16, 3:14] = True
    mask[2:8, 4:16, 16:27] = True
    mask[4:6, 8:10, 14:16] = True  # bridge: the lungs are one component
    mask[0:2, 0:2, 36:40] = True  # stray air far away (e.g. outside the body)
    parts = separate_lungs(mask, spacing=(1.0, 1.0, 1.0), min_ml=0.1)
    assert set(np.unique(parts[2:8, 4:16, 3:27][mask[2:8, 4:16, 3:27]])) == {1, 2}
    assert not parts[0:2, 0:2, 36:40].any()


def test_large_fragments_join_their_lung_only_when_inside_and_near() -> None:
    parts = np.zeros((30, 20, 40), np.int32)
    parts[2:20, 4:16, 3:14] = 1
    parts[2:20, 4:16, 24:36] = 2
    mask = parts > 0
    mask[23:28, 6:14, 4:12] = True  # apex cut off by a tumour: 3 mm gap above the right lung
    mask[23:28, 6:14, 37:40] = True  # air outside the body
    mask[23:24, 8:10, 26:28] = True  # a speck near the left lung, too small
    body = np.zeros_like(mask)
    body[:, :, :37] = True
    joined = join_large_fragments(parts, mask, (1.0, 1.0, 1.0), min_ml=0.1, body=body, max_gap_mm=5.0)
    assert (joined[23:28, 6:14, 4:12] == 1).all()
    assert not joined[23:28, 6:14, 37:40].any()
    assert not joined[23:24, 8:10, 26:28].any()
    far = join_large_fragments(parts, mask, (1.0, 1.0, 1.0), min_ml=0.1, body=body, max_gap_mm=2.0)
    assert not far[23:28, 6:14, 4:12].any()


def test_stomach_joined_to_a_lung_base_by_a_thin_bridge_is_cut_off_but_a_recess_stays() -> None:
    parts = np.zeros((40, 40, 40), np.int32)
    parts[14:36, 6:34, 4:18] = 1  # right lung
    parts[14:36, 6:34, 22:36] = 2  # left lung
    parts[4:12, 20:32, 22:34] = 2  # stomach bubble under the left dome, 2 mm below the base ...
    parts[12:14, 25:27, 27:29] = 2  # ... joined through the diaphragm by a 2-voxel bridge
    parts[8:14, 6:34, 4:6] = 1  # a thin lateral recess of the right lung, 2 voxels wide
    cut, removed = split_off_gas_below_bases(parts, (1.0, 1.0, 1.0), min_ml=0.05)
    assert removed[4:12, 20:32, 22:34].all() and not cut[4:12, 20:32, 22:34].any()
    assert (cut[14:36] == parts[14:36]).all(), "the lungs above the domes are untouched"
    assert (cut[8:14, 6:34, 4:6] == 1).all(), "the recess is thin: no core of its own, kept"


def test_gas_below_a_lung_base_is_not_joined_but_lung_beside_a_tumour_is() -> None:
    parts = np.zeros((30, 20, 40), np.int32)
    parts[8:26, 4:16, 3:14] = 1
    parts[8:26, 4:16, 24:36] = 2
    mask = parts > 0
    mask[1:5, 6:14, 26:34] = True  # stomach gas under the left dome: 3 mm below the lung base
    mask[12:20, 6:14, 16:20] = True  # a segment cut off beside a mediastinal tumour, mid-height
    under = below_lung_base(parts > 0)
    assert under[1:5, 6:14, 26:34].all() and not under[8:].any()
    joined = join_large_fragments(parts, mask, (1.0, 1.0, 1.0), min_ml=0.1, body=np.ones_like(mask), max_gap_mm=5.0)
    assert not joined[1:5, 6:14, 26:34].any()
    assert set(np.unique(joined[12:20, 6:14, 16:20])) <= {1, 2} and joined[12:20, 6:14, 16:20].all()


def test_airway_wall_is_one_voxel_or_the_given_width_in_plane() -> None:
    """A 1-voxel tube: one voxel of wall by default; with 4.2 mm on a 1.5 mm grid, 3 voxels in-plane, 1 in z."""
    airway = np.zeros((9, 21, 21), dtype=bool)
    airway[2:7, 10, 10] = True
    spacing = (4.0, 1.5, 1.5)

    default = airway_wall(airway, spacing)
    assert default[4, 10, 9:12].all() and not default[4, 10, 8]
    assert default[1, 10, 10] and not default[0, 10, 10]

    wide = airway_wall(airway, spacing, margin_mm=4.2)  # round(4.2 / 1.5) = 3 voxels of wall in-plane
    assert wide[4, 10, 7:14].all() and not wide[4, 10, 6] and not wide[4, 10, 14]
    assert wide[1, 10, 8:13].all() and not wide[0].any(), "the extra width is in-plane only"
    assert np.array_equal(airway_wall(airway, spacing, margin_mm=1.0), default), "a finer input keeps one voxel"
    assert not airway_wall(np.zeros_like(airway), spacing, margin_mm=4.2).any()
