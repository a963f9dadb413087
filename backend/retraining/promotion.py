"""Champion swaps: gate decisions, manual promotion and roll-back, each one atomic swap with an audit record.

After a swap commits, the new champion proposes masks only for series nobody has edited
(:func:`propose_for_unedited`); on a target a person has edited a proposal would be stored as a
side proposal anyway (annotation stores model output there as ``side``), so people's work is safe
both ways.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef

from accounts import audit
from annotation.models import MaskRevision, RevisionSource
from imaging.models import Series
from modeling import services as modeling_services
from modeling.models import ModelStatus, ModelVersion

from .datasets import dicom_modalities
from .evaluations import evaluate_on_dataset, evaluate_on_reference
from .gate import DEFAULT_MARGIN, GateRule, decide
from .models import ChampionChange, DatasetVersion, PromotionDecision

logger = logging.getLogger(__name__)


class PromotionError(ValueError):
    """A promotion or roll-back that cannot be done (names the model and why)."""


def swap_champion(version: ModelVersion, actor: Any, kind: str, reason: str = "") -> ChampionChange:
    """Make ``version`` its modality's champion in one transaction, with a :class:`ChampionChange` and an audit entry.

    Raises:
        PromotionError: the version is already champion or is retired.
    """
    with transaction.atomic():
        version = ModelVersion.objects.select_for_update().get(pk=version.pk)
        if version.status == ModelStatus.CHAMPION:
            raise PromotionError(f"model {version.name} is already the {version.modality} champion")
        if version.status == ModelStatus.RETIRED:
            raise PromotionError(f"model {version.name} is retired; register it again as a candidate first")
        previous = ModelVersion.objects.filter(modality=version.modality, status=ModelStatus.CHAMPION).first()
        modeling_services.promote(version)
        change = ChampionChange.objects.create(modality=version.modality, previous=previous, champion=version,
                                               kind=kind, actor=actor if getattr(actor, "pk", None) else None,
                                               reason=reason)
        audit.record(actor, f"model.{kind}", version, reason=reason,
                     before={"champion": previous.name if previous else None}, after={"champion": version.name})
        transaction.on_commit(lambda: propose_for_unedited(version), robust=True)
    logger.info("%s champion: %s → %s (%s)", version.modality, previous.name if previous else None, version.name, kind)
    return change


def rollback(modality: str, actor: Any, reason: str = "") -> ChampionChange:
    """Give the champion role back to the model that held it before the last swap.

    Raises:
        PromotionError: no earlier champion is recorded for the modality.
    """
    last = ChampionChange.objects.filter(modality=modality).first()
    if last is None or last.previous is None:
        raise PromotionError(f"no earlier {modality} champion recorded: nothing to roll back to")
    return swap_champion(last.previous, actor, ChampionChange.Kind.ROLLBACK, reason or f"roll back from {last.champion.name}")


def propose_for_unedited(version: ModelVersion) -> int:
    """Queue proposals of ``version`` for every series of its modality that no person has edited; returns how many."""
    edited = MaskRevision.objects.filter(series=OuterRef("pk"), source=RevisionSource.PERSON)
    series = (Series.objects.filter(modality__in=dicom_modalities(version.modality))
              .annotate(edited=Exists(edited)).filter(edited=False).order_by("id"))
    count = 0
    for one in series:
        modeling_services.queue_proposals_for_series(one, version)
        count += 1
    logger.info("champion %s proposes for %d unedited series", version.name, count)
    return count


def judge(candidate: ModelVersion, dataset: DatasetVersion, rule: GateRule | None = None) -> PromotionDecision:
    """Score candidate and champion (project test split + reference set), apply the gate, swap when it passes.

    The decision is stored either way; a refused candidate stays a candidate with the reason.

    Raises:
        modeling.services.NoChampionError: the modality has no champion to compare with.
        GateError: the two models were scored on different cases.
    """
    champion = modeling_services.champion(candidate.modality)
    if champion.pk == candidate.pk:
        raise PromotionError(f"model {candidate.name} is already the champion")
    rule = rule or GateRule(margin=float(getattr(settings, "PLEURA_GATE_REFERENCE_MARGIN", DEFAULT_MARGIN)))
    project = (evaluate_on_dataset(candidate, dataset), evaluate_on_dataset(champion, dataset))
    reference = (evaluate_on_reference(candidate), evaluate_on_reference(champion))
    ref_scores = (reference[0].case_dice, reference[1].case_dice) if all(reference) else (None, None)
    verdict = decide(project[0].case_dice, project[1].case_dice, *ref_scores, rule=rule)
    with transaction.atomic():
        decision = PromotionDecision.objects.create(candidate=candidate, champion=champion, dataset_version=dataset,
                                                    promoted=verdict.promote, reason=verdict.reason, stats=verdict.stats)
        if verdict.promote:
            swap_champion(candidate, None, ChampionChange.Kind.GATE, verdict.reason)
    logger.info("gate on %s vs %s (%s): %s — %s", candidate.name, champion.name, dataset,
                "promoted" if verdict.promote else "kept as candidate", verdict.reason)
    return decision
