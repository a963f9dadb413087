"""Label-map codecs (hand-checked geometry) and the append-only revision lineage."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from django.db import IntegrityError, connection, transaction

from annotation import labelmaps, services
from annotation.models import MaskRevision, RevisionImmutableError, RevisionSource, RevisionStatus
from imaging.models import Series
from imaging.services import ingest
from imaging.sources import SourceFile
from proposal_helpers import xray_png


def test_png_round_trip_and_checks():
    labels = np.zeros((5, 7), np.uint8)
    labels[1:3, 1:3], labels[2:4, 4:6] = 1, 2
    assert np.array_equal(labelmaps.decode(*labelmaps.encode(labels, {}, None)), labels)
    assert labelmaps.checksum(labels) != labelmaps.checksum(labels.reshape(7, 5))
    with pytest.raises(labelmaps.LabelMapError):
        labelmaps.validate(np.full((3, 3), 3))
    with pytest.raises(labelmaps.LabelMapError):
        labelmaps.validate(np.zeros((3, 3), np.float32))
    assert labelmaps.side_sizes(labels, (0.5, 2.0)) == (4.0, 4.0, "mm2")


def test_nifti_round_trip_places_voxels_in_ras_space():
    labels = np.zeros((4, 5, 6), np.uint8)  # (D, H, W) canonical LPS
    labels[3, 1, 2] = 1
    geometry = {"spacing_xyz": [0.5, 0.8, 3.0], "origin": [10.0, 20.0, -30.0], "direction": [1, 0, 0, 0, 1, 0, 0, 0, 1]}
    data = labelmaps.encode_nifti(labels, geometry, (3.0, 0.8, 0.5))
    assert np.array_equal(labelmaps.decode_nifti(data), labels)
    image = nib.Nifti1Image.from_bytes(gzip.decompress(data))
    i, j, k = np.argwhere(np.asarray(image.dataobj) == 1)[0]
    assert (i, j, k) == (2, 1, 3)  # (x=W, y=H, z=D)
    # LPS (10 + 2*0.5, 20 + 1*0.8, -30 + 3*3) → RAS (-11, -20.8, -21)
    assert np.allclose(image.affine @ [i, j, k, 1], [-11.0, -20.8, -21.0, 1.0])


def test_instances_of_an_irregular_series_go_back_onto_its_regular_grid():
    """Inverse of the CT reader's per-file slices: a gap takes its nearest instance, shears are undone."""
    labels = np.zeros((3, 6, 6), np.uint8)  # three instances
    labels[0, 1, 1] = 1
    labels[1, 2, 2] = 2
    labels[2, 3, 3] = 1
    # de-shearing moved instance 1 by (-1, +1) px (one row up, one column right): its stored pixel (2, 2)
    # is (1, 3) on the grid; grid slice 2 is a gap
    geometry = {"grid_depth": 5, "source_slices": [[0, 0.0, 0.0], [1, -1.0, 1.0], [3, 0.0, 0.0]]}
    grid = labelmaps.to_regular_grid(labels, geometry)
    assert grid.shape == (5, 6, 6)
    assert np.array_equal(grid[0], labels[0]) and np.array_equal(grid[3], labels[2])
    assert grid[1, 1, 3] == 2 and np.count_nonzero(grid[1]) == 1  # the shift undone
    assert np.array_equal(grid[2], grid[1])  # the gap takes its nearer neighbour (the lower on a tie)
    assert np.array_equal(grid[4], labels[2])  # beyond the last instance: the last instance
    # volumes count the gap: 5 grid slices of 2 mm, 1 mm² pixels
    right, left, unit = labelmaps.side_sizes(labels, (2.0, 1.0, 1.0), geometry)
    assert (right, left, unit) == (pytest.approx(3 * 2.0 / 1000), pytest.approx(2 * 2.0 / 1000), "mL")
    assert labelmaps.side_sizes(labels, (2.0, 1.0, 1.0)) == (pytest.approx(0.004), pytest.approx(0.002), "mL")
    # regular series and 2D maps are left alone
    assert labelmaps.to_regular_grid(labels, {"spacing_xyz": [1, 1, 2]}) is labels
    with pytest.raises(labelmaps.LabelMapError, match="3 instances on a grid of 2 slices"):
        labelmaps.to_regular_grid(labels, {**geometry, "grid_depth": 2})
    with pytest.raises(labelmaps.LabelMapError, match="label map has 2 slices"):
        labelmaps.to_regular_grid(labels[:2], geometry)


def test_regular_grid_inverts_the_readers_per_instance_slices():
    """``to_regular_grid`` undoes :func:`ml.ct.io.to_source_slices` on every held grid slice."""
    import SimpleITK as sitk

    from ml.ct.io import CTMeta, to_source_slices

    reference = sitk.Image((12, 10, 6), sitk.sitkUInt8)  # (x, y, z): 6 grid slices of 10 x 12
    placed = ((0, 0.0, 0.0), (1, 1.0, -1.0), (3, 2.0, -2.0), (5, 3.0, -3.0))  # slices 2 and 4 missing
    meta = CTMeta(source=Path("series"), shape=(6, 10, 12), spacing=(1.0, 1.0, 2.0), origin=(0.0, 0.0, 0.0),
                  direction=(1, 0, 0, 0, 1, 0, 0, 0, 1), original_direction=(1, 0, 0, 0, 1, 0, 0, 0, 1),
                  original_orientation="LPS", reference=reference, source_slices=placed)
    grid = np.zeros((6, 10, 12), np.uint8)
    grid[:, 4:7, 5:8] = 1  # away from the edges, so no shift pushes a label out of the frame
    grid[:, 3, 8] = 2
    per_instance = to_source_slices(grid, meta)
    geometry = {"grid_depth": 6, "source_slices": [list(p) for p in placed]}
    back = labelmaps.to_regular_grid(per_instance, geometry)
    assert np.array_equal(back[[0, 1, 3, 5]], grid[[0, 1, 3, 5]])
    assert np.array_equal(back[2], back[1]) and np.array_equal(back[4], back[3])


def test_a_persons_revision_keeps_the_instance_placement_only_while_it_fits():
    """After the series gained instances, the parent's placement (and reader warnings) no longer apply."""
    from types import SimpleNamespace

    from annotation.workflow import _inherited_geometry

    geometry = {"spacing_xyz": [1, 1, 2], "grid_depth": 4, "source_slices": [[0, 0, 0], [1, 0, 0], [3, 0, 0]],
                "instance_ids": [7, 8, 9], "warnings": ["1 missing slice(s)"]}
    parent = SimpleNamespace(geometry=geometry)
    assert _inherited_geometry(parent, np.zeros((3, 2, 2), np.uint8)) == geometry
    assert _inherited_geometry(parent, np.zeros((4, 2, 2), np.uint8)) == {"spacing_xyz": [1, 1, 2]}
    assert _inherited_geometry(None, np.zeros((4, 2, 2), np.uint8)) is None
    assert geometry["grid_depth"] == 4  # the parent's geometry is not changed


@pytest.mark.django_db
def test_revisions_are_numbered_append_only_and_never_deleted(project, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):  # no model proposal: a lineage of people's revisions
        result = ingest(project, [SourceFile("chest.png", xray_png())])
    series = Series.objects.get(pk=result.series[0].pk)
    instance = series.instances.get()
    labels = np.zeros((series.rows, series.columns), np.uint8)
    labels[10:30, 10:30], labels[10:30, 50:70] = 1, 2
    first = services.create_revision(series=series, instance=instance, labels=labels, source=RevisionSource.PERSON,
                                     status=RevisionStatus.DRAFT, spacing=(0.5, 0.5))
    labels[10:30, 30:35] = 1
    second = services.create_revision(series=series, instance=instance, labels=labels, source=RevisionSource.PERSON,
                                      status=RevisionStatus.DRAFT, spacing=(0.5, 0.5))
    assert (first.number, second.number, second.parent_id) == (1, 2, first.pk)
    assert first.right_size == 400 * 0.25 and second.right_size == 500 * 0.25 and second.size_unit == "mm2"
    assert np.array_equal(services.read_labels(first), np.where(labels == 1, 0, labels) | (
        np.pad(np.ones((20, 20), np.uint8), ((10, series.rows - 30), (10, series.columns - 30)))))
    first.note = "changed"
    with pytest.raises(RevisionImmutableError):
        first.save()
    with pytest.raises(RevisionImmutableError):
        first.delete()
    with pytest.raises(RevisionImmutableError):
        MaskRevision.objects.filter(pk=first.pk).delete()
    if connection.vendor == "postgresql":  # the database refuses it too (trigger), even past the ORM
        with pytest.raises(IntegrityError), transaction.atomic():
            MaskRevision.objects.filter(pk=first.pk).update(checksum="0" * 64)
    first.status = RevisionStatus.SUBMITTED
    first.save(update_fields=["status"])
    assert MaskRevision.objects.get(pk=first.pk).note == ""
    with pytest.raises(services.TargetMismatchError):
        services.create_revision(series=series, instance=instance, labels=labels[:-1], source=RevisionSource.PERSON,
                                 status=RevisionStatus.DRAFT)
    assert MaskRevision.objects.filter(target_key=first.target_key).count() == 2


@pytest.mark.django_db
def test_a_failed_revision_leaves_no_row_and_no_file(project, django_capture_on_commit_callbacks):
    from django.core.files.storage import default_storage

    from annotation.signals import revision_created

    with django_capture_on_commit_callbacks(execute=False):
        result = ingest(project, [SourceFile("chest.png", xray_png())])
    series = Series.objects.get(pk=result.series[0].pk)
    instance = series.instances.get()
    labels = np.zeros((series.rows, series.columns), np.uint8)
    labels[10:30, 10:30] = 1

    def fail(**kwargs):
        raise RuntimeError("listener failed after the file was written")

    revision_created.connect(fail, dispatch_uid="test-fail")
    try:
        with pytest.raises(RuntimeError, match="listener failed"):
            services.create_revision(series=series, instance=instance, labels=labels, source=RevisionSource.PERSON,
                                     status=RevisionStatus.DRAFT)
    finally:
        revision_created.disconnect(dispatch_uid="test-fail")
    assert not MaskRevision.objects.filter(series=series).exists()
    folder = f"masks/{series.project_id}"
    stored = default_storage.listdir(folder)[0] if default_storage.exists(folder) else []
    files = [f for d in stored for f in default_storage.listdir(f"{folder}/{d}")[1]]
    assert files == [], files
