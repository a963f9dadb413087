"""Dataset versions: curated selection, content hash, frozen patient-level split, manifests ml reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from annotation.models import RevisionStatus
from imaging.models import Patient
from retraining import datasets
from retraining.models import DatasetItem, ImmutableError, Split, SplitAssignment
from retraining_helpers import curate_again, curated_dataset, curated_xray

pytestmark = pytest.mark.django_db


def test_seeded_rule_is_deterministic_and_follows_the_fractions():
    splits = [datasets.seeded_split(21, 0.2, 0.1, 1, "cxr", f"patient-{i}") for i in range(2000)]
    assert splits == [datasets.seeded_split(21, 0.2, 0.1, 1, "cxr", f"patient-{i}") for i in range(2000)]
    assert abs(splits.count("test") / 2000 - 0.2) < 0.03 and abs(splits.count("val") / 2000 - 0.1) < 0.03
    assert splits != [datasets.seeded_split(22, 0.2, 0.1, 1, "cxr", f"patient-{i}") for i in range(2000)]


def test_snapshot_selects_curated_revisions_and_is_content_hashed(project, settings):
    settings.PLEURA_RETRAIN_TEST_FRACTION, settings.PLEURA_RETRAIN_VAL_FRACTION = 0.3, 0.2
    first = curated_xray(project, 0)
    newer = curate_again(first, shift=2)  # the newest person revision of a target is the one used
    curated_xray(project, 1, status=RevisionStatus.REJECTED)  # a rejected image is not curated
    draftish = curated_xray(project, 2)
    curate_again(draftish, shift=1, status=RevisionStatus.REJECTED)  # rejected after submission: dropped
    curated_xray(project, 3)
    curated_xray(project, 9, status=RevisionStatus.ACCEPTED)  # accepted, not yet approved: not curated

    version, created = datasets.snapshot(project, "cxr")
    assert created and version.number == 1 and len(version.sha256) == 64
    items = list(DatasetItem.objects.filter(dataset_version=version))
    assert len(items) == 2 and newer.pk in {i.revision_id for i in items}
    assert sum(version.counts.values()) == 2
    again, created_again = datasets.snapshot(project, "cxr")
    assert (again.pk, created_again) == (version.pk, False)  # same content, same version

    curated_xray(project, 4)
    second, created = datasets.snapshot(project, "cxr")
    assert created and second.number == 2 and second.sha256 != version.sha256
    with pytest.raises(ImmutableError):
        second.counts = {}
        second.save()
    with pytest.raises(datasets.DatasetError, match="no curated ct label"):
        datasets.snapshot(project, "ct")


def test_test_split_is_frozen_once_assigned(project, settings):
    settings.PLEURA_RETRAIN_TEST_FRACTION, settings.PLEURA_RETRAIN_VAL_FRACTION = 0.4, 0.2
    first_patients = len(curated_dataset(project))  # until every split holds a patient (seeded per pseudonym)
    first, _ = datasets.snapshot(project, "cxr")
    before = dict(SplitAssignment.objects.values_list("patient_id", "split"))
    assert Split.TEST in before.values()
    # the rule changes (nothing would be in test any more) and new patients arrive: old ones keep their split
    settings.PLEURA_RETRAIN_TEST_FRACTION = 0.0
    for seed in range(first_patients, first_patients + 3):
        curated_xray(project, seed)
    second, created = datasets.snapshot(project, "cxr")
    assert created
    after = dict(SplitAssignment.objects.values_list("patient_id", "split"))
    assert {p: after[p] for p in before} == before
    assert all(after[p] != Split.TEST for p in set(after) - set(before))
    test_patients = {p for p, s in before.items() if s == Split.TEST}
    assert set(DatasetItem.objects.filter(dataset_version=second, split=Split.TEST)
               .values_list("patient_id", flat=True)) == test_patients
    # a patient's images share one split (patient-level)
    shared = Patient.objects.get(pk=next(iter(test_patients)))
    assert DatasetItem.objects.filter(dataset_version=second, patient=shared).exclude(split=Split.TEST).count() == 0


def test_manifest_is_read_by_ml_without_django(project, settings):
    settings.PLEURA_RETRAIN_TEST_FRACTION, settings.PLEURA_RETRAIN_VAL_FRACTION = 0.3, 0.3
    revisions = [curated_xray(project, seed) for seed in range(5)]
    version, _ = datasets.snapshot(project, "cxr")
    from ml.cxr.data import load_image, load_labels, read_manifest

    cases = read_manifest(Path(version.manifest))
    assert len(cases) == 5 and {c.split for c in cases} <= {"train", "val", "test"}
    by_case = {i.case: i for i in DatasetItem.objects.filter(dataset_version=version)}
    for case in cases:
        item = by_case[case.case]
        assert case.split == item.split
        labels = load_labels(case.label_path)
        from annotation.services import read_labels

        assert np.array_equal(labels, read_labels(item.revision))
        assert load_image(case.image_path).shape == labels.shape
    assert {r.pk for r in revisions} == {i.revision_id for i in by_case.values()}


def test_ct_dataset_is_exported_on_the_ct_grid_ml_reads(project, django_capture_on_commit_callbacks):
    from annotation import services as annotation_services
    from annotation.models import RevisionSource
    from imaging.models import Series
    from imaging.services import ingest
    from imaging.sources import SourceFile
    from ml.ct.data import read_manifest
    from ml.ct.io import read_ct, read_label
    from proposal_helpers import ct_series_files

    result = ingest(project, [SourceFile(name, data) for name, data in ct_series_files(depth=12, size=48)])
    series = Series.objects.get(pk=result.series[0].pk)
    labels = np.zeros((series.num_instances, series.rows, series.columns), np.uint8)
    labels[3:9, 10:30, 8:22], labels[3:9, 10:30, 26:40] = 1, 2
    revision = annotation_services.create_revision(series=series, instance=None, labels=labels,
                                                   source=RevisionSource.PERSON, status=RevisionStatus.APPROVED)
    version, _ = datasets.snapshot(project, "ct")
    (case,) = read_manifest(Path(version.manifest))
    volume, meta = read_ct(case.ct)
    exported = read_label(case.labels, meta)
    assert exported.shape == volume.shape and case.split in {"train", "val", "test"}
    assert {int(v) for v in np.unique(exported)} == {0, 1, 2}
    assert int((exported == 1).sum()) == int((labels == 1).sum()) and revision.pk == version.items.get().revision_id
