"""REST API of retraining: champion history, manual promotion and roll-back (ML engineers). Views stay thin."""

from __future__ import annotations

import logging
from typing import Any

from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.models import Membership, Role
from accounts.permissions import has_role, project_ids_for
from imaging.models import Project
from modeling import training
from modeling.models import ModelVersion, TrainingRun

from . import datasets, jobs, promotion
from .models import ChampionChange
from .serializers import (ChampionChangeSerializer, PromoteSerializer, RollbackSerializer, StartTrainingSerializer,
                          TrainingRunSerializer)

logger = logging.getLogger(__name__)


def require_ml_engineer(user: Any) -> None:
    """Champions are global per modality: an ML engineer of any project (or a superuser) may change them."""
    if not (user.is_superuser or Membership.objects.filter(user=user, role=Role.ML_ENGINEER).exists()):
        raise PermissionDenied("only ML engineers may change a champion model")


class ChampionViewSet(viewsets.ReadOnlyModelViewSet):
    """Champion changes, newest first; ``promote`` and ``rollback`` swap the champion atomically."""

    queryset = ChampionChange.objects.select_related("previous", "champion", "actor")
    serializer_class = ChampionChangeSerializer
    permission_classes = [IsAuthenticated]
    filterset_fields = ["modality", "kind"]

    @action(detail=False, methods=["post"], serializer_class=PromoteSerializer)
    def promote(self, request: Request) -> Response:
        """Make a model version champion by hand (``model_version``, ``reason``)."""
        require_ml_engineer(request.user)
        body = PromoteSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        key = body.validated_data["model_version"]
        version = (ModelVersion.objects.filter(name=key).first()
                   or (ModelVersion.objects.filter(pk=int(key)).first() if key.isdigit() else None))
        if version is None:
            raise ValidationError({"model_version": f"no model version named {key!r}"})
        return self._swap(lambda: promotion.swap_champion(version, request.user, ChampionChange.Kind.MANUAL,
                                                           body.validated_data["reason"]))

    @action(detail=False, methods=["post"], serializer_class=RollbackSerializer)
    def rollback(self, request: Request) -> Response:
        """Give the champion role back to the previous champion of a ``modality``."""
        require_ml_engineer(request.user)
        body = RollbackSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        return self._swap(lambda: promotion.rollback(body.validated_data["modality"], request.user,
                                                     body.validated_data["reason"]))

    def _swap(self, swap: Any) -> Response:
        try:
            change = swap()
        except promotion.PromotionError as exc:
            raise ValidationError({"detail": str(exc)}) from exc
        return Response(ChampionChangeSerializer(change).data, status=status.HTTP_201_CREATED)


class TrainingRunViewSet(viewsets.ReadOnlyModelViewSet):
    """Training runs of the user's projects with live progress; ML engineers start and cancel them."""

    queryset = TrainingRun.objects.select_related("init_from")
    serializer_class = TrainingRunSerializer
    permission_classes = [IsAuthenticated]
    filterset_fields = ["project", "modality", "status"]

    def get_queryset(self) -> Any:
        return super().get_queryset().filter(project_id__in=project_ids_for(self.request.user))

    def create(self, request: Request) -> Response:
        """Snapshot the project's curated labels and queue a run on that dataset version."""
        body = StartTrainingSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        if not has_role(request.user, data["project"], {Role.ML_ENGINEER}):
            raise PermissionDenied("only the project's ML engineers may start training")
        project = Project.objects.get(pk=data["project"])
        try:
            dataset, _ = datasets.snapshot(project, data["modality"])
            run = jobs.start_training(project, dataset, from_scratch=data["from_scratch"], seed=data["seed"])
        except (datasets.DatasetError, training.TrainingError) as exc:
            raise ValidationError({"detail": str(exc)}) from exc
        return Response(TrainingRunSerializer(run).data, status=status.HTTP_202_ACCEPTED)

    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        """Stop a queued or running run."""
        run = self.get_object()
        if not has_role(request.user, run.project_id, {Role.ML_ENGINEER}):
            raise PermissionDenied("only the project's ML engineers may cancel training")
        try:
            run = training.request_cancel(run)
        except training.TrainingError as exc:
            raise ValidationError({"detail": str(exc)}) from exc
        return Response(TrainingRunSerializer(run).data)
