"""Post-processing steps on small hand-made label maps."""

from __future__ import annotations

import numpy as np

from ml.cxr.postprocess import PostprocessConfig, fix_sides, largest_component, postprocess


def two_lungs() -> np.ndarray:
    lab = np.zeros((40, 40), np.uint8)
    lab[5:35, 4:16] = 1
    lab[5:35, 24:36] = 2
    return lab


def test_keep_largest_removes_speck_and_fills_hole() -> None:
    lab = two_lungs()
    lab[1:3, 37:39] = 1  # speck of right lung far away
    lab[15:18, 8:11] = 0  # hole inside right lung
    out = postprocess(lab)
    assert out[1:3, 37:39].sum() == 0
    assert (out[15:18, 8:11] == 1).all()
    assert (out == 2).sum() == (two_lungs() == 2).sum()


def test_steps_are_switchable() -> None:
    lab = two_lungs()
    lab[1:3, 37:39] = 1
    lab[15:18, 8:11] = 0
    cfg = PostprocessConfig(keep_largest=False, remove_specks=False, fill_holes=False, fix_sides=False)
    assert np.array_equal(postprocess(lab, cfg), lab)


def test_remove_specks_keeps_large_second_component() -> None:
    lab = np.zeros((40, 40), np.uint8)
    lab[5:20, 5:15] = 1  # 150 px
    lab[25:35, 5:15] = 1  # 100 px: kept (not a speck)
    lab[38, 38] = 1  # 1 px speck
    cfg = PostprocessConfig(keep_largest=False, remove_specks=True, min_component_frac=0.05, fix_sides=False)
    out = postprocess(lab, cfg)
    assert out[38, 38] == 0 and (out == 1).sum() == 250


def test_fix_sides_swaps_wrong_order() -> None:
    lab = two_lungs()
    wrong = lab.copy()
    wrong[lab == 1], wrong[lab == 2] = 2, 1
    assert np.array_equal(fix_sides(wrong), lab)
    assert np.array_equal(fix_sides(lab), lab)


def test_smoothing_rounds_jagged_border() -> None:
    lab = two_lungs()
    lab[20, 16] = 1  # one-pixel spur
    out = postprocess(lab, PostprocessConfig(smooth=True, smooth_sigma_frac=0.03))
    assert out[20, 16] == 0
    assert abs(int((out == 1).sum()) - int((two_lungs() == 1).sum())) < 40


def test_largest_component_3d() -> None:
    vol = np.zeros((5, 10, 10), bool)
    vol[1:4, 1:5, 1:5] = True
    vol[4, 8, 8] = True
    assert largest_component(vol).sum() == 48


def test_each_step_alone_does_only_its_own_job() -> None:
    lab = two_lungs()
    lab[1:3, 37:39] = 1  # speck (4 px)
    lab[5:35, 17:20] = 1  # second right-lung component, 90 px: more than 5 % of the label
    lab[5:35, 16] = 0
    lab[15:18, 8:11] = 0  # hole
    off = {"keep_largest": False, "remove_specks": False, "fill_holes": False, "smooth": False, "fix_sides": False}

    def only(step: str) -> np.ndarray:
        return postprocess(lab, PostprocessConfig(**{**off, step: True}))

    specks = only("remove_specks")
    assert specks[1:3, 37:39].sum() == 0 and (specks[5:35, 17:20] == 1).all() and (specks[15:18, 8:11] == 0).all()
    largest = only("keep_largest")
    assert largest[1:3, 37:39].sum() == 0 and not largest[5:35, 17:20].any()
    holes = only("fill_holes")
    assert (holes[15:18, 8:11] == 1).all() and (holes[1:3, 37:39] == 1).all()
    swapped = lab.copy()
    swapped[lab == 1], swapped[lab == 2] = 2, 1
    assert np.array_equal(postprocess(swapped, PostprocessConfig(**{**off, "fix_sides": True})), lab)


def test_a_lung_in_many_small_pieces_is_not_removed_as_specks() -> None:
    lab = np.zeros((60, 60), np.uint8)
    for y in range(0, 50, 10):
        for x in range(0, 50, 10):
            lab[y : y + 4, x : x + 4] = 1  # 25 equal pieces, 4 % of the label each
    lab[0:4, 0:5] = 1  # the first one a little larger
    out = postprocess(lab, PostprocessConfig(fix_sides=False))  # shipped defaults: specks + largest
    assert (out == 1).sum() == 20
    only_specks = postprocess(lab, PostprocessConfig(keep_largest=False, fix_sides=False))
    assert (only_specks == 1).sum() == 20


def test_blank_images_in_the_baseline_and_in_training_data(synthetic_manifest) -> None:  # noqa: ANN001
    import pytest
    from PIL import Image

    from ml.cxr.classical import ClassicalPredictor
    from ml.cxr.data import CXRSegmentationDataset, ManifestError, read_manifest

    assert not ClassicalPredictor().predict(np.zeros((70, 50), np.uint8)).labels.any()
    Image.fromarray(np.full((64, 64), 9, np.uint8)).save(synthetic_manifest.parent / "synth" / "images" / "c3.png")
    with pytest.raises(ManifestError, match="synth/c3 .*blank image"):
        CXRSegmentationDataset(read_manifest(synthetic_manifest, ["train"]), size=32)
