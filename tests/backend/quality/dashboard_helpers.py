"""A project with known outcomes for the dashboard tests: six 40×40 X-ray targets (target_factories), two
model versions, two annotators and a reviewer, built through the real workflow and review services."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.utils import timezone

from accounts.models import Membership, User
from annotation import workflow
from annotation.models import AnnotationTask, TaskAction
from annotation.review import services as review
from modeling.models import ModelVersion
from target_factories import make_target, proposal_labels, upload, with_extra_left


@dataclass
class KnownProject:
    tasks: list[AnnotationTask]
    ann1: Any
    ann2: Any
    reviewer: Any
    model_a: Any
    model_b: Any


def build(project: Any) -> KnownProject:
    """t1 ann1 accept 20 s → approved; t2 ann1 +10 px 90 s → returned → +15 px 45 s → approved;
    t3 ann2 reject (unreadable) 10 s, yesterday → confirmed; t4 ann2 +20 px 400 s → edited and approved by
    the reviewer; t5 (model B) ann2 accept 700 s → waiting for review; t6 (model B) untouched.
    Confidences 0.95, 0.5, 0.6, 0.9, 0.7, 0.9: low confidence (< 0.8) flags t2, t3 and t5."""
    users = {}
    for name, role in (("ann1", "annotator"), ("ann2", "annotator"), ("rev", "reviewer")):
        users[name] = User.objects.create_user(name)
        Membership.objects.create(user=users[name], project=project, role=role)
    model_a = ModelVersion.objects.create(name="cxr-a", modality="cxr", weights_file="a.onnx", sha256="a" * 64)
    model_b = ModelVersion.objects.create(name="cxr-b", modality="cxr", weights_file="b.onnx", sha256="b" * 64)
    made = [make_target(project, i, model, c) for i, (model, c) in enumerate(
        [(model_a, 0.95), (model_a, 0.5), (model_a, 0.6), (model_a, 0.9), (model_b, 0.7), (model_b, 0.9)], start=1)]
    (t1, p1), (t2, p2), (t3, p3), (t4, p4), (t5, p5), _ = made
    ann1, ann2, rev = users["ann1"], users["ann2"], users["rev"]

    a1 = workflow.accept(t1.pk, ann1, p1.pk, 20).revision
    review.approve(t1.pk, rev, a1.pk)
    s2 = workflow.submit(t2.pk, ann1, p2.pk, upload(with_extra_left(10)[None], 90)).revision
    review.return_to_annotator(t2.pk, rev, s2.pk, "more")
    s2b = workflow.submit(t2.pk, ann1, s2.pk, upload(with_extra_left(15)[None], 45)).revision
    review.approve(t2.pk, rev, s2b.pk)
    r3 = workflow.reject(t3.pk, ann2, p3.pk, "unreadable", "", 10).revision
    review.approve(t3.pk, rev, r3.pk)
    yesterday = timezone.now() - dt.timedelta(days=1)
    TaskAction.objects.filter(task=t3).update(created_at=yesterday)
    AnnotationTask.objects.filter(pk=t3.pk).update(created_at=yesterday)
    s4 = workflow.submit(t4.pk, ann2, p4.pk, upload(with_extra_left(20)[None], 400)).revision
    review.edit_and_approve(t4.pk, rev, s4.pk, upload(proposal_labels()[None]))
    workflow.accept(t5.pk, ann2, p5.pk, 700)
    return KnownProject([t for t, _ in made], ann1, ann2, rev, model_a, model_b)
