"""The retraining loop on real data, end to end through the platform's services (``manage.py demo_loop``).

A deliberately weak champion is trained from scratch on a small adult subset (COVID-QU-Ex);
the paediatric ``radiography_vp`` images play a new site. Round 0 annotates a pool of its patients
that is frozen as the test split; each later round annotates new patients (the reference mask plays
the annotator's edit: claim, submit, the same services the browser calls), snapshots a dataset
version, fine-tunes the champion on the ``train`` job, scores candidate and champion on the frozen
test split and applies the gate. Reads ``../shared/data/cxr``; never writes there.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from PIL import Image

from accounts.models import Membership, Role, User
from annotation import workflow
from annotation.review import services as review_services
from annotation.models import AnnotationTask, TaskStatus
from imaging.models import Project, Series
from imaging.services import ingest
from imaging.sources import SourceFile
from modeling.models import ModelVersion, TrainingRun

from . import datasets, evaluations, jobs, promotion, schedules
from .models import ChampionChange, PromotionDecision, RetrainingPolicy

logger = logging.getLogger(__name__)


class DemoError(RuntimeError):
    """The demo cannot run (missing data, a training run that failed); says what to fix."""


@dataclass
class RoundResult:
    """One round: the champion after it, its frozen-test Dice with 95 % CI, and the gate's verdict."""

    round: int
    labelled: int
    champion: str
    dice_mean: float
    dice_ci: list[float]
    candidate: str = ""
    promoted: bool | None = None
    reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _cases(root: Path, dataset: str, split: str) -> list[tuple[Path, Path]]:
    with (root / "manifest.csv").open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["dataset"] == dataset and r["split"] == split]
    return [(root / dataset / "images" / f"{r['case']}.png", root / dataset / "labels" / f"{r['case']}.png")
            for r in rows]


def annotate(project: Project, image: Path, labels: Path, annotator: User, reviewer: User) -> None:
    """Upload one image, submit its reference mask as the annotator's edit of the model proposal, and
    approve it as the reviewer (the same services the review page calls): the label is then curated."""
    result = ingest(project, [SourceFile(image.name, image.read_bytes())])
    series = Series.objects.get(pk=result.series[0].pk)
    instance = series.instances.get()
    task = AnnotationTask.objects.filter(target_key=f"instance:{instance.pk}").first()
    if task is None:
        raise DemoError(f"{image.name}: no proposal task was opened (is a champion registered?)")
    mask = np.asarray(Image.open(labels))
    mask = (mask[..., 0] if mask.ndim == 3 else mask).astype(np.uint8)
    workflow.claim(task.pk, annotator)
    latest = workflow.latest_revision(task)
    upload = workflow.MaskUpload(shape=(1, *mask.shape), data=mask.tobytes(), comment="demo: reference mask")
    workflow.submit(task.pk, annotator, latest.pk if latest else None, upload)
    task.refresh_from_db()
    if task.status == TaskStatus.IN_REVIEW:  # a project reviewing a fraction may have approved it already
        review_services.approve(task.pk, reviewer, workflow.latest_revision(task).pk)


def _train(project: Project, dataset: datasets.DatasetVersion, from_scratch: bool = False) -> ModelVersion:
    run = jobs.start_training(project, dataset, from_scratch=from_scratch)
    run.refresh_from_db()
    candidate = ModelVersion.objects.filter(training_run=run).first()
    if candidate is None:
        raise DemoError(f"training run {run.name} {run.status}: {run.error[-800:]}")
    return candidate


def run(rounds: int, per_round: int, test_pool: int, adult: int, overrides: dict[str, Any],
        say: Callable[[str], None] = logger.info) -> list[RoundResult]:
    """Run the loop; returns one :class:`RoundResult` per round (round 0: the weak champion).

    ``overrides`` is merged into every training run's config (``PLEURA_TRAIN_OVERRIDES``).
    """
    settings.PLEURA_TRAIN_OVERRIDES = overrides
    root = Path(settings.REPO_ROOT).parent / "shared" / "data" / "cxr"
    if not (root / "manifest.csv").is_file():
        raise DemoError(f"real data not found at {root}")
    rng = np.random.default_rng(0)
    adults = _cases(root, "covidqu", "train")
    adults = [adults[i] for i in rng.choice(len(adults), adult, replace=False)]
    peds = _cases(root, "radiography_vp", "train")
    peds = [peds[i] for i in rng.permutation(len(peds))[: test_pool + rounds * per_round]]
    stamp = TrainingRun.objects.count()
    annotator, _ = User.objects.get_or_create(username="demo-annotator")
    reviewer, _ = User.objects.get_or_create(username="demo-reviewer")
    site, start = (Project.objects.create(name=f"demo-loop {stamp} {kind}") for kind in ("paediatric", "adult"))
    for project in (site, start):
        Membership.objects.get_or_create(user=annotator, project=project, defaults={"role": Role.ANNOTATOR})
        Membership.objects.get_or_create(user=reviewer, project=project, defaults={"role": Role.REVIEWER})

    say(f"weak champion: {adult} adult images, from scratch")
    settings.PLEURA_RETRAIN_TEST_FRACTION, settings.PLEURA_RETRAIN_VAL_FRACTION = 0.1, 0.2
    for image, labels in adults:
        annotate(start, image, labels, annotator, reviewer)
    weak = _train(start, datasets.snapshot(start, "cxr")[0], from_scratch=True)
    if weak.status != "champion":
        promotion.swap_champion(weak, None, ChampionChange.Kind.MANUAL, "demo: deliberately weak start")

    say(f"round 0: {test_pool} paediatric patients frozen as the test split")
    settings.PLEURA_RETRAIN_TEST_FRACTION, settings.PLEURA_RETRAIN_VAL_FRACTION = 0.999999, 0.0
    for image, labels in peds[:test_pool]:
        annotate(site, image, labels, annotator, reviewer)
    dataset = datasets.snapshot(site, "cxr")[0]  # assigns (and freezes) the pool's split: test
    settings.PLEURA_RETRAIN_TEST_FRACTION, settings.PLEURA_RETRAIN_VAL_FRACTION = 0.0, 0.25
    RetrainingPolicy.objects.filter(project=site).update(min_new_labels=10 ** 6)  # rounds trigger the check
    results = []
    score = evaluations.evaluate_on_dataset(weak, dataset)
    results.append(RoundResult(0, test_pool, weak.name, score.summary["dice_mean"], score.summary.get("dice_ci95", [])))
    for number in range(1, rounds + 1):
        batch = peds[test_pool + (number - 1) * per_round: test_pool + number * per_round]
        for image, labels in batch:
            annotate(site, image, labels, annotator, reviewer)
        outcome = schedules.check_project(site.pk, "cxr", f"demo round {number}")  # the scheduled path
        dataset = datasets.snapshot(site, "cxr")[0]
        run_ = TrainingRun.objects.filter(project=site, dataset_sha256=dataset.sha256).first()
        candidate = ModelVersion.objects.filter(training_run=run_).first() if run_ else None
        if run_ is not None and candidate is None:
            raise DemoError(f"training run {run_.name} {run_.status}: {run_.error[-800:]}")
        decision = PromotionDecision.objects.filter(candidate=candidate).first() if candidate else None
        champion = ModelVersion.objects.get(modality="cxr", status="champion")
        score = evaluations.evaluate_on_dataset(champion, dataset)
        results.append(RoundResult(number, test_pool + number * per_round, champion.name, score.summary["dice_mean"],
                                   score.summary.get("dice_ci95", []), candidate.name if candidate else "",
                                   decision.promoted if decision else None,
                                   decision.reason if decision else outcome))
        say(f"round {number}: champion {champion.name} Dice {score.summary['dice_mean']:.4f} "
            f"{score.summary.get('dice_ci95')}; gate: {decision.reason if decision else 'no decision'}")
    return results
